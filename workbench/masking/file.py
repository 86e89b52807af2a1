"""Mask files: one safetensors file per mask, plus import of the official LoRI ``.pt`` masks.

Format ``workbench-mask/1`` (documented in masks/README.md): tensors keyed by the adapter's lora_B file
keys, bool, B's shape, True = trainable; string metadata ``format``, ``sparsity``, ``scope``,
``source_adapter_hash``, ``base_fingerprint``, ``excluded`` (JSON list of mask content hashes) and
``content_hash`` (checked on load, so a flipped bit is caught even without a manifest).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from workbench.errors import FileFormatError, WorkbenchError
from workbench.io.tensors import load_tensors, save_tensors
from workbench.keys import B_SUFFIX, PEFT_PREFIX
from workbench.masking.checks import check_mask_matches
from workbench.masking.mask import Mask

FORMAT = "workbench-mask/1"
# torch.load(weights_only=True) is the only pickle reader we allow; older releases had bypasses of its
# allow-list (e.g. CVE-2025-32434), so the version that pyproject.toml requires is also checked here.
MIN_TORCH = (2, 10)


def check_torch_version(version: str) -> None:
    """Refuse a torch older than :data:`MIN_TORCH` (its ``weights_only`` loader is not trusted).

    Raises:
        WorkbenchError: the version is older, or cannot be read.
    """
    parts = re.match(r"^(\d+)\.(\d+)", version)
    if parts is None or (int(parts.group(1)), int(parts.group(2))) < MIN_TORCH:
        raise WorkbenchError(f"torch {version} is too old: workbench needs torch >= "
                             f"{'.'.join(map(str, MIN_TORCH))} for safe .pt loading (pip install -U torch)")


check_torch_version(torch.__version__)
# Wrapper prefixes that FSDP, activation checkpointing, torch.compile and DDP insert in parameter names.
_WRAPPERS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def save_mask(path: str | os.PathLike, mask: Mask) -> str:
    """Write ``mask`` atomically as one safetensors file. Returns the file's SHA-256."""
    meta = mask.meta
    metadata = {
        "format": FORMAT,
        "sparsity": "" if meta.get("sparsity") is None else repr(float(meta["sparsity"])),
        "scope": str(meta.get("scope") or ""),
        "source_adapter_hash": str(meta.get("source_adapter_hash") or ""),
        "base_fingerprint": str(meta.get("base_fingerprint") or ""),
        "excluded": json.dumps(list(meta.get("excluded") or [])),
        "content_hash": mask.content_hash(),
    }
    return save_tensors(path, dict(mask.tensors), metadata)


def load_mask(path: str | os.PathLike, adapter=None) -> Mask:
    """Read a mask file with every check applied.

    Args:
        adapter: when given, the mask's keys and shapes must equal its lora_B tensors exactly.

    Raises:
        FileFormatError: missing, truncated or corrupt file; not a workbench mask; non-bool tensors; bad
            metadata; content hash that does not match the bits.
        MismatchError: keys (missing/unexpected listed) or shapes that differ from ``adapter``'s.
    """
    path = Path(path)
    tensors, md = load_tensors(path)
    if md.get("format") != FORMAT:
        raise FileFormatError(f"{path}: not a workbench mask file (format {md.get('format')!r}, expected {FORMAT!r})")
    for key in sorted(tensors):
        if tensors[key].dtype != torch.bool:
            raise FileFormatError(f"{path}: tensor '{key}' has dtype {tensors[key].dtype}; mask tensors must be bool")
    mask = Mask(tensors, _parse_meta(path, md))
    if md.get("content_hash") and md["content_hash"] != mask.content_hash():
        raise FileFormatError(f"{path}: mask bits do not match the recorded content hash (file corrupted or edited)")
    if adapter is not None:
        check_mask_matches(mask, adapter, str(path))
    return mask


def _parse_meta(path: Path, md: dict[str, str]) -> dict:
    try:
        sparsity = float(md["sparsity"]) if md.get("sparsity") else None
        excluded = json.loads(md.get("excluded") or "[]")
    except (ValueError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: bad mask metadata ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(excluded, list) or not all(isinstance(h, str) for h in excluded):
        raise FileFormatError(f"{path}: mask metadata 'excluded' must be a JSON list of hashes")
    return {"sparsity": sparsity, "scope": md.get("scope") or None,
            "source_adapter_hash": md.get("source_adapter_hash") or None,
            "base_fingerprint": md.get("base_fingerprint") or None, "excluded": excluded}


def official_key(name: str) -> str:
    """Map an official LoRI mask key (a PEFT parameter name) to our lora_B file key.

    ``base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight`` ->
    ``base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight``; FSDP/compile/DDP wrapper
    prefixes are dropped and a missing ``base_model.model.`` prefix is added.
    """
    for wrapper in _WRAPPERS:
        name = name.replace(wrapper, "")
    if name.startswith("module."):
        name = name[len("module."):]
    name = re.sub(r"\.lora_B\.[^.]+\.weight$", B_SUFFIX, name)  # drop PEFT's adapter name ("default")
    return name if name.startswith(PEFT_PREFIX) else PEFT_PREFIX + name


def import_lori_pt(path: str | os.PathLike, adapter, invert: bool = False) -> Mask:
    """Import an official LoRI ``.pt`` mask (a dict of parameter name -> 0/1 or bool tensor).

    Loaded with ``torch.load(weights_only=True)`` only: a pickle that would run code is refused.

    Args:
        adapter: the adapter the mask belongs to; keys and shapes must match its lora_B exactly.
        invert: for masks where True marks *frozen* entries (the lottery-ticket-adaptation convention).

    Returns:
        A Mask (meta ``scope`` = ``imported``, ``sparsity`` = measured 1 - density).

    Raises:
        FileFormatError: missing file, a refused or unreadable pickle, not a dict of tensors, values other
            than 0/1, two names mapping to one key.
        MismatchError: keys or shapes that differ from the adapter's lora_B.
    """
    path = Path(path)
    raw = _torch_load_safely(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in raw.items():
        key = official_key(str(name))
        if key in tensors:
            raise FileFormatError(f"{path}: two entries map to the key '{key}'")
        tensors[key] = _as_bool(path, str(name), value) ^ invert
    check_mask_matches(tensors, adapter, str(path))
    mask = Mask(tensors)
    return mask.with_meta(sparsity=1.0 - mask.density(), scope="imported", source_adapter_hash=None,
                          base_fingerprint=getattr(adapter, "fingerprint", None), excluded=[])


def _torch_load_safely(path: Path) -> dict:
    if not path.is_file():
        raise FileFormatError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for refused globals, RuntimeError/EOFError for corrupt files
        reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise FileFormatError(f"{path}: refused to load the .pt mask (weights_only=True allows only plain "
                              f"tensors and containers): {reason}") from None
    if not isinstance(obj, dict) or not obj:
        raise FileFormatError(f"{path}: expected a non-empty dict of parameter name -> mask tensor, got {type(obj).__name__}")
    return obj


def _as_bool(path: Path, name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise FileFormatError(f"{path}: entry '{name}' is a {type(value).__name__}, not a tensor")
    if value.dtype == torch.bool:
        return value.clone()
    if value.is_complex() or not ((value == 0) | (value == 1)).all():
        raise FileFormatError(f"{path}: entry '{name}' has values other than 0 and 1")
    return value != 0


def import_pt_to_file(pt_path, adapter_dir, out, invert: bool = False) -> Mask:
    """Load the adapter, import the official ``.pt`` mask for it and write it to ``out`` (never overwritten).

    Raises:
        WorkbenchError: ``out`` already exists (and everything :func:`import_lori_pt` raises).
    """
    from workbench.adapters.adapter import load_adapter

    out = Path(out)
    if out.exists():
        raise WorkbenchError(f"{out}: output already exists (choose another --out or remove it)")
    mask = import_lori_pt(pt_path, load_adapter(adapter_dir), invert=invert)
    save_mask(out, mask)
    return mask
