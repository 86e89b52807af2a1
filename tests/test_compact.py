"""Compact LoRI files: bit-exact round trip and size."""

import torch

from workbench.adapters.compact import dir_size, export_compact, export_peft
from workbench.adapters.init import seeded_a
from workbench.hashing import tensors_hash
from workbench.io.adapter_dir import WEIGHTS
from workbench.testing import llama_shapes, random_adapter


def _lori_s_adapter(sparsity=0.9):
    shapes = llama_shapes(layers=2, hidden=256, intermediate=512, kv_dim=64)
    ad = random_adapter(shapes, rank=16, seed=3)
    g = torch.Generator().manual_seed(0)
    for k in list(ad.tensors):
        module = k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        t = ad.tensors[k]
        if k.endswith("lora_A.weight"):
            ad.tensors[k] = seeded_a(7, module, *t.shape)
        else:
            ad.tensors[k] = torch.where(torch.rand(t.shape, generator=g) >= sparsity, t, torch.zeros(()))
    a = {k: v for k, v in ad.tensors.items() if k.endswith("lora_A.weight")}
    ad.meta.update(a_seed=7, a_hash=tensors_hash(a), method="lori_s")
    return ad


def test_compact_round_trip_is_bitwise_and_small(tmp_path):
    ad = _lori_s_adapter()
    ad.tensors[next(k for k in ad.tensors if k.endswith("lora_B.weight"))][0, 0] = -0.0
    ad.save(tmp_path / "peft")
    export_compact(tmp_path / "peft", tmp_path / "compact")
    export_peft(tmp_path / "compact", tmp_path / "back")
    assert (tmp_path / "peft" / WEIGHTS).read_bytes() == (tmp_path / "back" / WEIGHTS).read_bytes()
    ratio = dir_size(tmp_path / "peft" / WEIGHTS) / dir_size(tmp_path / "compact" / "compact.safetensors")
    print(f"compact size ratio {ratio:.1f}x")
    assert ratio >= 8


def test_plain_lora_a_is_stored_in_full(tmp_path):
    ad = random_adapter(rank=4, seed=1)
    ad.meta["a_seed"] = 0
    ad.save(tmp_path / "peft")
    export_compact(tmp_path / "peft", tmp_path / "compact")
    export_peft(tmp_path / "compact", tmp_path / "back")
    assert (tmp_path / "peft" / WEIGHTS).read_bytes() == (tmp_path / "back" / WEIGHTS).read_bytes()


def test_regenerated_a_is_checked_against_hash(tmp_path):
    import json

    import pytest

    from workbench.errors import FileFormatError

    ad = _lori_s_adapter()
    ad.save(tmp_path / "peft")
    export_compact(tmp_path / "peft", tmp_path / "compact")
    side = tmp_path / "compact" / "workbench.json"
    meta = json.loads(side.read_text())
    meta["a_hash"] = "0" * 64
    side.write_text(json.dumps(meta))
    with pytest.raises(FileFormatError, match="a_hash"):
        export_peft(tmp_path / "compact", tmp_path / "back")
