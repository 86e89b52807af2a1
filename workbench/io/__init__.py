"""The only layer that writes files: atomic writes, checked tensor loads, adapter dirs, mask files."""
