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
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import torch

from workbench.errors import FileFormatError, WorkbenchError
from workbench.io.atomic import atomic_write_json, fsync_dir
from workbench.io.tensors import load_tensors, save_tensors

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


def read_adapter_dir(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read ``(tensors, adapter_config, sidecar)``; sidecar is ``{}`` for plain PEFT adapters.

    Raises:
        FileFormatError: missing files, pickle-only weights, corrupt or tampered files.
    """
    path = resolve_adapter_dir(path)
    if not (path / WEIGHTS).is_file() and (path / "adapter_model.bin").is_file():
        raise FileFormatError(f"{path / 'adapter_model.bin'}: pickle weights are never loaded; convert the adapter to safetensors")
    config = read_json(path / CONFIG)
    sidecar = read_json(path / SIDECAR) if (path / SIDECAR).is_file() else {}
    sha = (sidecar.get("files") or {}).get(WEIGHTS)
    pruned = pruned_modules(config)
    tensors, _ = load_tensors(path / WEIGHTS, sha256=sha,
                              allow_empty=lambda key: key.split(".lora_")[0].removeprefix("base_model.model.") in pruned)
    return tensors, config, sidecar


def pruned_modules(config: dict) -> set[str]:
    """Modules whose whole rank AdaLoRA pruned away: their ``rank_pattern`` row is all False and PEFT saves
    their factors with zero rows. Only these may hold empty tensors (elsewhere one means a broken file)."""
    if config.get("peft_type") != "ADALORA":
        return set()
    return {key.removesuffix(".lora_E") for key, row in (config.get("rank_pattern") or {}).items()
            if isinstance(row, list) and not any(row)}


def write_adapter_dir(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: dict, sidecar: dict,
                      overwrite: bool = False) -> Path:
    """Write an adapter directory atomically: everything goes to a temp sibling that is renamed into place.

    Raises:
        WorkbenchError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise WorkbenchError(f"{path}: output already exists (choose another --out or remove it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".wbtmp-{path.name}.", dir=path.parent))
    try:
        sha = save_tensors(tmp / WEIGHTS, tensors)
        atomic_write_json(tmp / CONFIG, config)
        atomic_write_json(tmp / SIDECAR, {**sidecar, "files": {WEIGHTS: sha}})
        _swap_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _swap_into_place(tmp: Path, path: Path) -> None:
    old = None
    if path.exists():
        old = path.with_name(f".wbtmp-old-{path.name}-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
