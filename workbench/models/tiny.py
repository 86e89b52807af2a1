"""A tiny random Llama with SmolLM2's tokenizer: keeps unit tests fast (seconds, not minutes)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from workbench.io.atomic import atomic_directory
from workbench.models.base import cache_dir, embedded_gguf


def embedded_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer extracted from the embedded GGUF once and cached (3.5 MB)."""
    target = cache_dir() / "tokenizers" / "smollm2"
    if not (target / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        gguf = embedded_gguf()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # "keep": another test process may have written the same tokenizer first; either copy is right.
        with atomic_directory(target, if_exists="keep") as tmp:
            tok.save_pretrained(tmp)
    return target


def tiny_llama_config(layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2, vocab: int = 49152):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1,
                       eos_token_id=2, pad_token_id=2)


def tiny_llama(seed: int = 0, **config_kw):
    """Build ``(model, tokenizer)``: a randomly initialised small Llama (seeded) and SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**config_kw)).eval()
    tok = AutoTokenizer.from_pretrained(str(embedded_tokenizer_dir()))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def save_tiny_llama(path: str | os.PathLike, seed: int = 0, **config_kw) -> Path:
    """Write a tiny random Llama as a transformers directory (for tests that load a base by path)."""
    model, tok = tiny_llama(seed=seed, **config_kw)
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
