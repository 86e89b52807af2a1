"""Adapter methods (one module each) on top of PEFT's LoRA layers, and the in-memory Adapter value."""
