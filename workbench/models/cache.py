"""The base model loaded once per process: every later load of the same base is a deep copy of it.

**Off by default** (``WORKBENCH_BASE_CACHE_MB`` unset or ``0``): measured alone on the quick chain
(docs/performance.md), a stage's ``from_pretrained`` of SmolLM2-135M from the converted, memory-mapped
safetensors takes 0.2-0.3 s, the deep copy 0.3-0.9 s, and the cached original holds ~500 MB more. It pays
where a load is slow (a network file system, a converted or remote-code model): ``WORKBENCH_BASE_CACHE_MB=4096``
caches bases up to 4 GB.

A run loads its base in every stage (train, each evaluation, calibration with data). Stages change the model they get (PEFT wraps it in place, training flips
``requires_grad``, a merge writes into the weights), so the cached model is never handed out: each
caller gets its own ``copy.deepcopy`` (tied weights stay tied; deepcopy shares what the original shares).

The key is the resolved load (spec, source, extra arguments) plus the size and modification time of every
file in a local model directory, so a model rewritten on disk is loaded afresh. Quantized bases (nf4) are
not cached (bitsandbytes' packed parameters are not safely deep-copied), nor models above
``WORKBENCH_BASE_CACHE_MB`` (an 8B base would be held twice). One base is kept at a time, the most recent.

Written here because neither transformers nor accelerate keeps loaded models between calls.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable

DEFAULT_LIMIT_MB = 0  # off: see the module docstring
_entry: dict = {}  # {"key": ..., "model": the loaded original, "tokenizer": ...}


def limit_mb() -> float:
    """The largest base (parameter and buffer bytes, MB) kept in memory; 0 (the default) disables the cache."""
    raw = os.environ.get("WORKBENCH_BASE_CACHE_MB")
    if raw is None or raw.strip() == "":
        return DEFAULT_LIMIT_MB
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"WORKBENCH_BASE_CACHE_MB: '{raw}' is not a number of megabytes (0 turns the cache off)") from None


def _stamp(src: str) -> tuple:
    """What changes when a local model directory is rewritten: each file's name, size and mtime."""
    path = Path(src)
    if not path.is_dir():
        return ("hub", src)
    return tuple(sorted((f.name, s.st_size, s.st_mtime_ns) for f in path.iterdir() if f.is_file()
                        for s in (f.stat(),)))


def _megabytes(model) -> float:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def cached_load(key: tuple, src: str, load_model: Callable, load_tokenizer: Callable | None):
    """A fresh copy of the model (and tokenizer) that ``load_model()`` (``load_tokenizer()``) returns.

    Args:
        key: what identifies the load besides the files (spec, source, extra from_pretrained arguments).
        src: the model directory or hub id (local directories are stamped by their files).
        load_model: loads the model when it is not cached.
        load_tokenizer: loads the tokenizer (None: no tokenizer wanted).

    Returns:
        ``(model, tokenizer)``: objects the caller owns; the cached ones are never returned.
    """
    if limit_mb() <= 0:
        return load_model(), load_tokenizer() if load_tokenizer else None
    full = (key, _stamp(src))
    if _entry.get("key") != full:
        _entry.clear()
        model = load_model()
        if _megabytes(model) > limit_mb():
            return model, load_tokenizer() if load_tokenizer else None
        _entry.update(key=full, model=model, tokenizer=None)
    if load_tokenizer is not None and _entry["tokenizer"] is None:
        _entry["tokenizer"] = load_tokenizer()
    tok = copy.deepcopy(_entry["tokenizer"]) if load_tokenizer is not None else None
    return copy.deepcopy(_entry["model"]), tok


def clear() -> None:
    """Forget the cached base (tests; a caller that needs the memory back)."""
    _entry.clear()
