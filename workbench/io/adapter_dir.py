"""Adapter directories in PEFT's format, plus the workbench sidecar.

Layout: ``adapter_config.json`` and ``adapter_model.safetensors`` (exactly what
``peft.PeftModel.from_pretrained`` reads) and ``workbench.json`` (method, task, seeds, base
fingerprint, mask hash, parent, SHA-256 of the weights file). The sidecar is written last: a directory
without it (or whose weights no longer match its hash) is not a finished workbench adapter. Plain PEFT
adapters (no sidecar) are read as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping

import torch

from workbench.errors import FileFormatError
from workbench.io.atomic import atomic_directory, atomic_write_json
from workbench.io.tensors import load_tensors, save_tensors
from workbench.keys import owning_module

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
SIDECAR = "workbench.json"


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileFormatError(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise FileFormatError(f"{path}: expected a JSON object")
    return obj


def resolve_adapter_dir(path: str | os.PathLike) -> Path:
    """An adapter directory, or a training output directory holding one under ``adapter/``."""
    path = Path(path)
    if not path.is_dir():
        raise FileFormatError(f"{path}: adapter directory not found")
    if not (path / CONFIG).is_file() and (path / "adapter" / CONFIG).is_file():
        return path / "adapter"
    return path


def read_adapter_dir(path: str | os.PathLike, empty_modules: Callable[[dict, dict], set[str]] | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read ``(tensors, adapter_config, sidecar)``; sidecar is ``{}`` for plain PEFT adapters.

    Args:
        path: the adapter directory (or a training output directory holding ``adapter/``).
        empty_modules: ``(config, sidecar) -> module keys`` whose tensors may have zero elements; the
            caller asks the adapter's method (AdaLoRA saves a module pruned to rank 0 that way). Anywhere
            else an empty tensor means a broken file.

    Raises:
        FileFormatError: missing files, pickle-only weights, corrupt or tampered files.
    """
    path = resolve_adapter_dir(path)
    if not (path / WEIGHTS).is_file() and (path / "adapter_model.bin").is_file():
        raise FileFormatError(f"{path / 'adapter_model.bin'}: pickle weights are never loaded; convert the adapter to safetensors")
    config = read_json(path / CONFIG)
    sidecar = read_json(path / SIDECAR) if (path / SIDECAR).is_file() else {}
    sha = (sidecar.get("files") or {}).get(WEIGHTS)
    may_be_empty = empty_modules(config, sidecar) if empty_modules is not None else set()
    tensors, _ = load_tensors(path / WEIGHTS, sha256=sha,
                              allow_empty=lambda key: owning_module(key) in may_be_empty)
    return tensors, config, sidecar


def write_adapter_dir(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: dict, sidecar: dict,
                      overwrite: bool = False) -> Path:
    """Write an adapter directory atomically (:func:`~workbench.io.atomic.atomic_directory`), sidecar last.

    Raises:
        WorkbenchError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    with atomic_directory(path, if_exists="replace" if overwrite else "error") as tmp:
        sha = save_tensors(tmp / WEIGHTS, tensors)
        atomic_write_json(tmp / CONFIG, config)
        atomic_write_json(tmp / SIDECAR, {**sidecar, "files": {WEIGHTS: sha}})
    return path
