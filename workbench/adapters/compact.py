"""Compact LoRI files: A as its generator seed + shape, B as its non-zero values + a bit-packed pattern.

A LoRI A is a pure function of (seed, module key, shape) (workbench/adapters/init.py), so it is stored as
nothing but that, and regenerated bit for bit on load (checked against the recorded ``a_hash``). A LoRI-S
B at 90% sparsity is 10% values + 1 bit per entry. An A that does not match its seed (plain LoRA) is stored
in full, so any adapter round-trips. Layout: ``adapter_config.json``, ``workbench.json`` and
``compact.safetensors`` whose metadata ``workbench_compact`` describes each module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from workbench.adapters.adapter import Adapter, load_adapter
from workbench.adapters.init import seeded_a
from workbench.errors import FileFormatError, WorkbenchError
from workbench.hashing import tensors_hash
from workbench.io.adapter_dir import CONFIG, SIDECAR, read_json
from workbench.io.atomic import atomic_write_json
from workbench.io.tensors import load_tensors, save_tensors
from workbench.keys import file_key

COMPACT = "compact.safetensors"
FORMAT = "workbench-compact/1"


def _pack_bits(nonzero: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(nonzero.reshape(-1).numpy().astype(np.uint8)))


def _unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed.numpy(), count=numel).astype(bool))


def _bit_nonzero(b: torch.Tensor) -> torch.Tensor:
    # Compare bit patterns, not values: -0.0 must survive the round trip.
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[b.element_size()]
    return b.contiguous().view(ints) != 0


def compact_tensors(adapter: Adapter) -> tuple[dict[str, torch.Tensor], dict]:
    """Encode an adapter's tensors. Returns ``(tensors, description)``."""
    seed = adapter.meta.get("a_seed")
    tensors, modules = {}, {}
    for m in adapter.modules():
        a, b = adapter.tensors[file_key(m, "A")], adapter.tensors[file_key(m, "B")]
        seeded = seed is not None and a.dtype == torch.float32 and torch.equal(a, seeded_a(seed, m, *a.shape))
        if not seeded:
            tensors[f"A::{m}"] = a
        nz = _bit_nonzero(b)
        tensors[f"Bbits::{m}"] = _pack_bits(nz)
        if nz.any():
            tensors[f"Bval::{m}"] = b.reshape(-1)[nz.reshape(-1)]
        modules[m] = {"a": "seed" if seeded else "stored", "a_shape": list(a.shape), "b_shape": list(b.shape),
                      "dtype": str(b.dtype).removeprefix("torch.")}
    for k, v in adapter.tensors.items():
        if not k.endswith((".lora_A.weight", ".lora_B.weight")):
            tensors[f"raw::{k}"] = v
    return tensors, {"format": FORMAT, "a_seed": seed, "modules": modules}


def export_compact(adapter_dir, out_dir) -> Path:
    """Write the compact form of an adapter directory. Returns ``out_dir``."""
    adapter = load_adapter(adapter_dir)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise WorkbenchError(f"{out_dir}: output already exists")
    tensors, desc = compact_tensors(adapter)
    save_tensors(out_dir / COMPACT, tensors, metadata={"workbench_compact": json.dumps(desc)})
    atomic_write_json(out_dir / CONFIG, adapter.config)
    atomic_write_json(out_dir / SIDECAR, {k: v for k, v in adapter.meta.items() if k != "files"})
    return out_dir


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def decode_compact(tensors: dict[str, torch.Tensor], desc: dict, where: Path) -> dict[str, torch.Tensor]:
    """Inverse of :func:`compact_tensors` (bit for bit)."""
    out = {}
    for m, d in desc["modules"].items():
        out[file_key(m, "A")] = tensors[f"A::{m}"] if d["a"] == "stored" else seeded_a(desc["a_seed"], m, *d["a_shape"])
        numel = d["b_shape"][0] * d["b_shape"][1]
        nz = _unpack_bits(tensors[f"Bbits::{m}"], numel)
        b = torch.zeros(numel, dtype=_dtype(d["dtype"]))
        if nz.any():
            vals = tensors.get(f"Bval::{m}")
            if vals is None or vals.numel() != int(nz.sum()):
                raise FileFormatError(f"{where}: module {m}: value count does not match its bit pattern")
            b[nz] = vals
        out[file_key(m, "B")] = b.reshape(d["b_shape"])
    out.update({k[len("raw::"):]: v for k, v in tensors.items() if k.startswith("raw::")})
    return out


def load_compact(compact_dir) -> Adapter:
    """Read a compact directory back into an :class:`Adapter`, checking A against its recorded hash."""
    compact_dir = Path(compact_dir)
    tensors, meta = load_tensors(compact_dir / COMPACT)
    try:
        desc = json.loads(meta["workbench_compact"])
    except (KeyError, json.JSONDecodeError):
        raise FileFormatError(f"{compact_dir / COMPACT}: not a workbench compact file (no description)") from None
    decoded = decode_compact(tensors, desc, compact_dir / COMPACT)
    sidecar = read_json(compact_dir / SIDECAR) if (compact_dir / SIDECAR).is_file() else {}
    expected = sidecar.get("a_hash")
    got = tensors_hash({k: v for k, v in decoded.items() if k.endswith(".lora_A.weight")})
    if expected and got != expected:
        raise FileFormatError(f"{compact_dir}: regenerated A does not match the recorded a_hash (seed or torch RNG changed)")
    return Adapter(tensors=decoded, config=read_json(compact_dir / CONFIG), meta=sidecar, path=None)


def export_peft(compact_dir, out_dir) -> Path:
    """Convert a compact directory back to a PEFT adapter directory."""
    return load_compact(compact_dir).save(out_dir)


def dir_size(path) -> int:
    """Bytes in a file, or in all files under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
