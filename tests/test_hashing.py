"""The one hashing module: its formats are recorded on disk, so they are pinned here."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import workbench.hashing as hashing
from workbench.hashing import sha256_bytes, sha256_file, sha256_text, tensors_hash

SAMPLE = {
    "b.lora_B.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "a.lora_A.weight": torch.tensor([[1.5, -0.0]], dtype=torch.bfloat16),
    "m": torch.tensor([True, False, True]),
}
# tensors_hash(SAMPLE) as computed by workbench.adapters.init.tensors_hash before the hashes were merged:
# every a_hash / parent_hash already written by an adapter was made this way and must still verify.
RECORDED = "aa2e1ed865a23766c1ac9fa1b29647f744a2759fc0fe68726dbcd22d29fdc47e"


def test_tensors_hash_is_the_recorded_format():
    assert tensors_hash(SAMPLE) == RECORDED


def test_tensors_hash_layout_is_key_shape_dtype_then_bytes():
    h = hashlib.sha256()
    for key in sorted(SAMPLE):
        t = SAMPLE[key]
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    assert tensors_hash(SAMPLE) == h.hexdigest()


def test_tensors_hash_ignores_order_and_strides_but_not_content():
    reordered = dict(reversed(list(SAMPLE.items())))
    strided = {**SAMPLE, "b.lora_B.weight": SAMPLE["b.lora_B.weight"].t().contiguous().t()}
    assert not strided["b.lora_B.weight"].is_contiguous()
    assert tensors_hash(reordered) == tensors_hash(strided) == RECORDED
    changed = [
        {**SAMPLE, "m": torch.tensor([True, True, True])},  # one value
        {**SAMPLE, "b.lora_B.weight": SAMPLE["b.lora_B.weight"].reshape(3, 2)},  # same bytes, other shape
        {**SAMPLE, "b.lora_B.weight": SAMPLE["b.lora_B.weight"].to(torch.int32)},  # other dtype
        {("c" if k == "m" else k): v for k, v in SAMPLE.items()},  # other key
    ]
    assert len({tensors_hash(c) for c in changed} | {RECORDED}) == 5


def test_tensors_hash_takes_a_zero_dim_tensor():
    assert tensors_hash({"s": torch.tensor(2.0)}) != tensors_hash({"s": torch.tensor([2.0])})


def test_sha256_file_reads_in_chunks_and_equals_the_bytes_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "CHUNK", 7)
    data = bytes(range(256)) * 3
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    assert sha256_text("é") == hashlib.sha256("é".encode("utf-8")).hexdigest()


def test_an_adapters_recorded_weights_hash_is_the_file_hash_and_verifies(tmp_path):
    from workbench.errors import FileFormatError
    from workbench.io.adapter_dir import SIDECAR, WEIGHTS, read_adapter_dir
    from workbench.testing import random_adapter

    path = random_adapter(seed=3).save(tmp_path / "a")
    recorded = json.loads((path / SIDECAR).read_text())["files"][WEIGHTS]
    assert recorded == sha256_file(path / WEIGHTS)
    read_adapter_dir(path)  # verifies the recorded hash
    data = bytearray((path / WEIGHTS).read_bytes())
    data[-1] ^= 1
    (path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="SHA-256 does not match"):
        read_adapter_dir(path)
