"""Content hashes: the one definition of how bytes, text, files and tensors are hashed.

These hashes are recorded on disk (an adapter's ``files`` SHA-256 in workbench.json, its ``a_hash`` and
``parent_hash``, a stage's artifact hashes in manifest.json) and feed cache keys, so each format is
written once, here, and never changes silently: a change would make every recorded hash fail to verify.

Torch-free at import (``workbench validate`` and the run store import this module); :func:`tensors_hash`
imports torch when it is called. Built on :mod:`hashlib`; no library offers a tensor-set hash with a
stable, documented byte layout, hence :func:`tensors_hash`.
"""

from __future__ import annotations

import hashlib
import os
from typing import Mapping

CHUNK = 1 << 20  # read files in 1 MiB pieces: a 16 GB base never sits in memory at once


def sha256_bytes(data: bytes | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (equal to ``sha256_bytes(open(path).read())``).

    Args:
        path: the file.

    Returns:
        64 hex characters.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def tensors_hash(tensors: Mapping) -> str:
    """SHA-256 of a set of named tensors, independent of device, strides and insertion order.

    Layout, per key in sorted order: ``f"{key}:{tuple(shape)}:{dtype};"`` (UTF-8) then the tensor's raw
    bytes in row-major order. This is the layout adapters record as ``a_hash`` and ``parent_hash``.

    Args:
        tensors: name -> ``torch.Tensor`` (any dtype, bool and bfloat16 included).

    Returns:
        64 hex characters.
    """
    import torch

    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        # reshape(-1) first: a 0-d tensor cannot be viewed as bytes. The buffer protocol avoids a copy.
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()
