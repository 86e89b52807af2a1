"""Give memory back to the OS between stages.

Each stage loads its own copy of the base model. When it ends, Python frees the tensors, but glibc keeps
the freed pages in its arenas: measured on SmolLM2-135M, a process that loaded the model, ran a batch and
dropped everything still held 1.8 GB resident, and 0.4 GB after ``malloc_trim(0)``. Without the trim, a
long pipeline's resident memory only grows and each stage's measured peak includes its predecessors'
leftovers. Nothing in the Python or torch APIs does this, hence these few lines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (musl, macOS, Windows: nothing to do there)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """Collect garbage and return freed heap pages to the OS. Returns whether a trim was possible."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
