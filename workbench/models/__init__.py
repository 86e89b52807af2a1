"""Base models: loading (hub id, local dir, GGUF, the embedded SmolLM2), fingerprints, tiny test models."""
