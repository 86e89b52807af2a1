"""Mask files (workbench-mask/1), the official LoRI .pt import, and the calibrate / masks CLI commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.cli import main
from workbench.errors import FileFormatError, MismatchError
from workbench.io.adapter_dir import SIDECAR, WEIGHTS, read_json
from workbench.io.tensors import save_tensors
from workbench.masking import calibrate_adapter, check_disjoint
from workbench.masking.file import import_lori_pt, load_mask, official_key, save_mask
from workbench.testing import random_adapter

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def adapter():
    return random_adapter(seed=0)


@pytest.fixture()
def mask(adapter):
    return calibrate_adapter(adapter, 0.9)


def test_save_load_roundtrip(tmp_path, adapter, mask):
    path = tmp_path / "m.safetensors"
    save_mask(path, mask.with_meta(base_fingerprint="fp1", excluded=["a" * 64]))
    loaded = load_mask(path, adapter=adapter)
    assert loaded == mask and loaded.content_hash() == mask.content_hash()
    assert dict(loaded.meta) == {"sparsity": 0.9, "scope": "global", "base_fingerprint": "fp1",
                                 "source_adapter_hash": mask.meta["source_adapter_hash"], "excluded": ["a" * 64]}


def test_load_against_an_adapter_of_other_shapes(tmp_path, mask):
    path = tmp_path / "m.safetensors"
    save_mask(path, mask)
    with pytest.raises(MismatchError, match=rf"^{re.escape(str(path))}: tensor '.*lora_B.weight' has shape"):
        load_mask(path, adapter=random_adapter(seed=0, rank=8))


def test_load_against_an_adapter_with_other_keys(tmp_path, mask):
    path = tmp_path / "m.safetensors"
    save_mask(path, mask)
    fewer = random_adapter({"model.layers.0.self_attn.q_proj": (64, 64), "model.layers.9.mlp.up_proj": (128, 64)})
    with pytest.raises(MismatchError) as err:
        load_mask(path, adapter=fewer)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert "missing keys base_model.model.model.layers.9.mlp.up_proj.lora_B.weight" in msg
    assert "unexpected keys base_model.model.model.layers.0.mlp.down_proj.lora_B.weight" in msg


def test_truncated_mask_file(tmp_path, mask):
    path = tmp_path / "m.safetensors"
    save_mask(path, mask)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(path))}: truncated"):
        load_mask(path)


def test_non_bool_mask_file(tmp_path, mask):
    path = tmp_path / "m.safetensors"
    save_tensors(path, {k: v.float() for k, v in mask.tensors.items()}, {"format": "workbench-mask/1"})
    with pytest.raises(FileFormatError, match=r"has dtype torch.float32; mask tensors must be bool"):
        load_mask(path)


def test_file_without_mask_format_is_refused(tmp_path, mask):
    path = tmp_path / "m.safetensors"
    save_tensors(path, dict(mask.tensors))
    with pytest.raises(FileFormatError, match="not a workbench mask file"):
        load_mask(path)


def test_flipped_bit_is_caught_by_content_hash(tmp_path, mask):
    path = tmp_path / "m.safetensors"
    save_mask(path, mask)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # bool tensors are stored one byte per entry: 0 <-> 1
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="content hash"):
        load_mask(path)


def official_names(adapter) -> dict[str, str]:
    """Our lora_B key -> the name LoRI's code saves (a PEFT parameter name with the adapter name)."""
    return {k: k.replace(".lora_B.weight", ".lora_B.default.weight") for k in adapter.b_keys()}


@pytest.mark.parametrize("as_float", [False, True])
def test_import_official_pt(tmp_path, adapter, mask, as_float):
    names = official_names(adapter)
    path = tmp_path / "lori_mask.pt"
    torch.save({names[k]: (v.float() if as_float else v) for k, v in mask.tensors.items()}, path)
    imported = import_lori_pt(path, adapter)
    assert imported == mask
    assert imported.meta["scope"] == "imported" and imported.meta["sparsity"] == pytest.approx(1 - mask.density())
    inverted = import_lori_pt(path, adapter, invert=True)
    assert inverted.kept() == mask.total() - mask.kept()


def test_official_key_mapping():
    ours = "base_model.model.model.layers.3.mlp.up_proj.lora_B.weight"
    assert official_key("base_model.model.model.layers.3.mlp.up_proj.lora_B.default.weight") == ours
    assert official_key("_fsdp_wrapped_module.base_model.model.model.layers.3._fsdp_wrapped_module.mlp.up_proj"
                        ".lora_B.default.weight") == ours
    assert official_key("model.layers.3.mlp.up_proj.lora_B.default.weight") == ours


def test_import_rejects_non_binary_values_and_wrong_keys(tmp_path, adapter, mask):
    names = official_names(adapter)
    path = tmp_path / "bad.pt"
    torch.save({names[k]: v.float() * 0.5 for k, v in mask.tensors.items()}, path)
    with pytest.raises(FileFormatError, match="values other than 0 and 1"):
        import_lori_pt(path, adapter)
    torch.save({names[k]: v for k, v in list(mask.tensors.items())[1:]}, path)
    with pytest.raises(MismatchError, match=rf"^{re.escape(str(path))}: .*missing keys"):
        import_lori_pt(path, adapter)


class MakesDirectory:
    """Unpickling this object runs ``os.mkdir(target)``: the shape of a malicious checkpoint."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_malicious_pickle_is_refused(tmp_path, adapter):
    probe, target = tmp_path / "probe_created", tmp_path / "pwned"
    torch.save({"x": MakesDirectory(str(probe))}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)  # the payload really runs when trusted
    assert probe.exists()
    path = tmp_path / "evil.pt"
    torch.save({"x": MakesDirectory(str(target))}, path)
    with pytest.raises(FileFormatError) as err:
        import_lori_pt(path, adapter)
    assert not target.exists()
    assert str(err.value).startswith(f"{path}: refused to load") and "\n" not in str(err.value)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), err


def test_cli_calibrate_chain_and_show(tmp_path, capsys, adapter):
    adapter.save(tmp_path / "ad")
    m1, m2 = tmp_path / "t1.safetensors", tmp_path / "t2.safetensors"
    code, out, _ = run_cli(capsys, "calibrate", tmp_path / "ad", "--sparsity", "0.9", "--out", m1)
    assert code == 0 and "kept 410 of 4096" in out
    loaded = load_mask(m1, adapter=adapter)
    assert loaded == calibrate_adapter(adapter, 0.9)
    assert loaded.meta["source_adapter_hash"] == read_json(tmp_path / "ad" / SIDECAR)["files"][WEIGHTS]
    code, _, _ = run_cli(capsys, "calibrate", tmp_path / "ad", "--sparsity", "0.9", "--exclude", m1, "--out", m2)
    assert code == 0
    second = load_mask(m2)
    check_disjoint([loaded, second], ["t1", "t2"])
    assert second.meta["excluded"] == [loaded.content_hash()]
    code, out, _ = run_cli(capsys, "masks", "show", m1, "--vs", m2)
    assert code == 0
    assert "density 10.0098%" in out and "q_proj" in out and "down_proj" in out
    assert "shared entries, Jaccard 0.0000" in out


def test_cli_import_official_pt(tmp_path, capsys, adapter, mask):
    adapter.save(tmp_path / "ad")
    names = official_names(adapter)
    torch.save({names[k]: v.float() for k, v in mask.tensors.items()}, tmp_path / "lori.pt")
    out = tmp_path / "m.safetensors"
    code, stdout, _ = run_cli(capsys, "masks", "import", tmp_path / "lori.pt", "--adapter", tmp_path / "ad", "--out", out)
    assert code == 0 and f"kept {mask.kept()} of" in stdout
    assert load_mask(out, adapter=adapter) == mask
    code, _, err = run_cli(capsys, "masks", "import", tmp_path / "lori.pt", "--adapter", tmp_path / "ad", "--out", out)
    assert_one_line_error(code, err, "already exists")


def test_cli_refusals(tmp_path, capsys, adapter):
    adapter.save(tmp_path / "ad")
    out = tmp_path / "m.safetensors"
    out.write_text("keep me")
    code, _, err = run_cli(capsys, "calibrate", tmp_path / "ad", "--sparsity", "0.9", "--out", out)
    assert_one_line_error(code, err, r"already exists")
    assert out.read_text() == "keep me"
    code, _, err = run_cli(capsys, "calibrate", tmp_path / "ad", "--sparsity", "1", "--out", tmp_path / "n")
    assert_one_line_error(code, err, r"^error: sparsity: must be in \[0, 1\)")
    other = tmp_path / "other.safetensors"
    save_mask(other, calibrate_adapter(random_adapter(seed=0, rank=2), 0.9))
    code, _, err = run_cli(capsys, "calibrate", tmp_path / "ad", "--sparsity", "0.9", "--exclude", other,
                           "--out", tmp_path / "n")
    assert_one_line_error(code, err, rf"{re.escape(str(other))}: tensor .* has shape")
    code, _, err = run_cli(capsys, "masks", "show", tmp_path / "missing.safetensors")
    assert_one_line_error(code, err, r"file not found")
    assert not (tmp_path / "n").exists()


def test_cli_subprocess_error_is_one_line(tmp_path, adapter):
    adapter.save(tmp_path / "ad")
    exe = REPO / ".venv" / "bin" / "workbench"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench.cli"]
    proc = subprocess.run([*command, "calibrate", str(tmp_path / "ad"), "--sparsity", "1.5", "--out",
                           str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, r"^error: sparsity: ")
    assert not (tmp_path / "m").exists()


def test_tensor_files_are_the_same_bytes_in_every_process(tmp_path):
    """safetensors keeps metadata in a per-process randomised hash map: without the canonical order a mask
    written by a --jobs or Ray worker never matched the same mask written by the engine."""
    import subprocess
    import sys

    from safetensors import safe_open

    script = ("import sys, torch; from workbench.io.tensors import save_tensors; "
              "meta = {f'k{i}': f'v{i} \\u00e9\\n\"' for i in range(8)}; "
              "print(save_tensors(sys.argv[1], {'b': torch.ones(3), 'a': torch.zeros(2, dtype=torch.bool)}, meta))")
    hashes = {subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{i}.safetensors")], check=True,
                             capture_output=True, text=True).stdout.strip() for i in range(4)}
    assert len(hashes) == 1
    data = (tmp_path / "0.safetensors").read_bytes()
    assert b'"k0":"v0' in data and data.index(b'"k0"') < data.index(b'"k7"')  # sorted, not reordered
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:  # still a plain safetensors file
        assert f.metadata() == {f"k{i}": f"v{i} \u00e9\n\"" for i in range(8)}
        assert f.get_tensor("b").tolist() == [1.0, 1.0, 1.0]
