"""The one explicit training loop (accelerate), its batching and its checkpoints."""
