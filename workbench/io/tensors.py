"""Checked reading and atomic writing of safetensors files.

safetensors has no checksum and accepts NaN/inf, so every load here checks the header, keys, shapes,
dtypes and finiteness, and (when the caller has one) the SHA-256 recorded in a manifest. Every error
names the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from workbench.errors import FileFormatError, NonFiniteError
from workbench.hashing import sha256_bytes
from workbench.io.atomic import atomic_write_bytes

MAX_HEADER = 100 * 1024 * 1024


def check_finite(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    for key in sorted(tensors):  # the same key named whatever order the tensors came in
        t = tensors[key]
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise NonFiniteError(f"{where}: tensor '{key}' has NaN or infinite values")


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """Atomically write a safetensors file after checking every tensor is finite. Returns its SHA-256."""
    check_finite(tensors, str(path))
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = canonical_metadata(st_save(contiguous, metadata=dict(metadata or {})))
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def canonical_metadata(data: bytes) -> bytes:
    """The same safetensors file with its ``__metadata__`` entries in sorted key order.

    safetensors keeps metadata in a Rust ``HashMap``, whose order is randomised per process, so the same
    tensors and metadata gave different bytes in every process (a mask written under ``--jobs``, Ray or
    a rerun never matched a SHA-256 taken elsewhere). Sorted, the entries take exactly as many bytes, so
    the header is rewritten in place and no offset moves; the format is unchanged for every reader.
    """
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + n]
    meta = json.loads(header).get("__metadata__")  # a dict keeps the order the file has
    if not meta or len(meta) < 2:
        return data

    def text(entries: dict) -> bytes:  # serde_json's compact form
        return json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode()

    written, wanted = text(meta), text(dict(sorted(meta.items())))
    at = header.find(b'"__metadata__":' + written)
    if at < 0 or len(written) != len(wanted):  # an escaping this does not reproduce: leave the file as it is
        return data
    start = 8 + at + len(b'"__metadata__":')
    return data[:start] + wanted + data[start + len(written):]


def _check_header(path: Path, data: bytes) -> dict:
    if len(data) < 8:
        raise FileFormatError(f"{path}: truncated safetensors file ({len(data)} bytes, no header length)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise FileFormatError(f"{path}: truncated or corrupt safetensors header (declares {n} bytes, file has {len(data)})")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: corrupt safetensors header ({exc.__class__.__name__})") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != len(data):
        raise FileFormatError(f"{path}: truncated safetensors data (expected {8 + n + end} bytes, found {len(data)})")
    return header


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    data = _read(path)
    return dict(_check_header(path, data).get("__metadata__", {}) or {})


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise FileFormatError(f"{path}: file not found")
    return path.read_bytes()


def load_tensors(
    path: str | os.PathLike,
    expected_keys: Iterable[str] | None = None,
    sha256: str | None = None,
    allow_nonfinite: bool = False,
    allow_empty: Callable[[str], bool] = lambda key: False,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load and check a safetensors file. Returns ``(tensors, metadata)``.

    ``allow_empty(key)`` says which keys may legitimately have zero elements (AdaLoRA's pruned modules).

    Raises:
        FileFormatError: missing, truncated or corrupt file, wrong checksum, missing/unexpected keys,
            zero-element tensors.
        NonFiniteError: a floating tensor holds NaN or inf.
    """
    path = Path(path)
    data = _read(path)
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise FileFormatError(f"{path}: SHA-256 does not match the manifest (file changed or corrupted)")
    header = _check_header(path, data)
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError for bad dtypes/offsets
        raise FileFormatError(f"{path}: corrupt safetensors file ({exc})") from None
    for key in sorted(tensors):  # sorted: the file's order varies, and the error should name the same key
        if tensors[key].numel() == 0 and not allow_empty(key):
            raise FileFormatError(f"{path}: tensor '{key}' has zero elements")
    if expected_keys is not None:
        check_keys(path, set(tensors), set(expected_keys))
    if not allow_nonfinite:
        check_finite(tensors, str(path))
    return tensors, dict(header.get("__metadata__", {}) or {})


def check_keys(path, found: set[str], expected: set[str]) -> None:
    """Strict key accounting: missing and unexpected keys are both errors, listed."""
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if extra:
            parts.append(f"unexpected keys {_short(extra)}")
        raise FileFormatError(f"{path}: " + "; ".join(parts))


def _short(keys: list[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
