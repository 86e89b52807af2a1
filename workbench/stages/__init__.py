"""One module per stage kind; the only layer that wires models, data, adapters and training together."""
