"""Files that are read: property 6 (no pickle), 7 (every tensor file checked on load, one-line errors, CLI
exit 2), 8 (adapter and base must match), 9 (strict key accounting), 13 (A's seed recorded and verified)."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
import torch

from workbench.cli import main
from workbench.errors import FileFormatError, MismatchError, WorkbenchError

from .harness import (ROOT, bad_input, flip_byte, header_span, rewrite_header, tiny_adapter, tiny_base,
                      truncate)

PACKAGE = ROOT / "workbench"


# --- property 6: no pickle -------------------------------------------------------------------------

def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            yield node, f"{node.func.value.id}.{node.func.attr}"


def _pickle_uses(path: Path) -> list[str]:
    found = []
    for node, name in _calls(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        where = f"{path}:{node.lineno}"
        if name == "torch.load":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                found.append(f"{where}: torch.load without weights_only=True")
        elif name in ("torch.save", "pickle.dump", "pickle.dumps", "pickle.load", "pickle.loads",
                      "dill.dump", "cloudpickle.dump"):
            found.append(f"{where}: {name}")
    return found


# In-memory only, nothing written or read: --jobs checks that a stage call can be sent to its spawned worker
# (multiprocessing pickles it to send it) so that a stage that cannot be sent fails with a sentence.
IN_MEMORY = {"graph/executors.py: pickle.dumps"}


def test_package_never_pickles_and_loads_pt_only_with_weights_only():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50
    problems = [p for f in files for p in _pickle_uses(f)
                if not any(p.endswith(ok.split(": ")[1]) and ok.split(": ")[0] in p for ok in IN_MEMORY)]
    assert not problems, "\n".join(problems)


def test_the_scan_catches_what_it_must(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch, pickle\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
                   "torch.save(x, p)\npickle.dump(x, f)\ntorch.load(p, weights_only=True)\n")
    found = [line.split(": ", 1)[1] for line in _pickle_uses(bad)]
    assert found == ["torch.load without weights_only=True"] * 2 + ["torch.save", "pickle.dump"]


def test_torch_version_is_required_in_pyproject_and_at_import():
    import tomllib

    from workbench.masking.file import check_torch_version

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch>=2.10" in deps
    check_torch_version(torch.__version__)
    for old in ("2.9.1", "2.5.0+cpu", "1.13.1"):
        bad_input()
        with pytest.raises(WorkbenchError, match=rf"torch {re.escape(old)} is too old: workbench needs torch >= 2.10"):
            check_torch_version(old)


class _CreatesFile:
    """Unpickling this calls os.mkdir(target): what a crafted .pt would do to a trusting loader."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_crafted_pt_mask_is_refused_and_its_payload_never_runs(tmp_path):
    from workbench.masking.file import import_pt_to_file

    adapter_dir = tiny_adapter(0).save(tmp_path / "adapter")
    target, out = tmp_path / "payload_ran", tmp_path / "mask.safetensors"
    torch.save({"base_model.model.x.lora_B.default.weight": _CreatesFile(str(target))}, tmp_path / "evil.pt")
    bad_input()
    with pytest.raises(FileFormatError, match=r"evil\.pt: refused to load the \.pt mask"):
        import_pt_to_file(tmp_path / "evil.pt", adapter_dir, out)
    assert not target.exists() and not out.exists()


def test_training_writes_only_safetensors_and_json(tmp_path):
    from .harness import train_tiny

    train_tiny(tmp_path, steps=2)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} == {".safetensors", ".json"}
    for p in files:  # no pickle stream (0x80 proto) and no torch.save zip, whatever the name says
        head = p.read_bytes()[:4]
        assert head[:1] != b"\x80" and head != b"PK\x03\x04", p


# --- property 7: every tensor file checked on load ----------------------------------------------

def _weights(tmp_path: Path, sidecar: bool = True) -> Path:
    d = tiny_adapter(0).save(tmp_path / "adapter")
    if not sidecar:
        (d / "workbench.json").unlink()  # a plain PEFT adapter: only the structural checks apply
    return d / "adapter_model.safetensors"


def _corrupt(kind: str, path: Path) -> str:
    start, end = header_span(path)
    size = path.stat().st_size
    if kind == "empty":
        truncate(path, 0)
        return "truncated safetensors file (0 bytes, no header length)"
    if kind == "length field":
        truncate(path, 5)
        return "truncated safetensors file (5 bytes, no header length)"
    if kind == "header":
        truncate(path, (start + end) // 2)
        return "truncated or corrupt safetensors header"
    if kind == "data":
        truncate(path, (end + size) // 2)
        return "truncated safetensors data"
    if kind == "header json":
        flip_byte(path, start)
        return "corrupt safetensors header"
    if kind == "header dtype":
        key = next(k for k in json.loads(path.read_bytes()[start:end]) if k != "__metadata__")
        rewrite_header(path, lambda h: {**h, key: {**h[key], "dtype": "F16"}})
        return "corrupt safetensors file"
    raise AssertionError(kind)


STRUCTURAL = ["empty", "length field", "header", "data", "header json", "header dtype"]


@pytest.mark.parametrize("kind", STRUCTURAL)
def test_corrupt_tensor_file_gives_one_line_error_with_path_and_cli_exit_2(tmp_path, capsys, kind):
    weights = _weights(tmp_path, sidecar=False)
    expected = _corrupt(kind, weights)
    code = main(["inspect", str(weights.parent)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {weights}: {expected}"), line


@pytest.mark.parametrize("kind", STRUCTURAL + ["flipped data byte"])
def test_manifest_hash_catches_every_change_including_one_data_byte(tmp_path, capsys, kind):
    weights = _weights(tmp_path)
    if kind == "flipped data byte":
        flip_byte(weights, -2)  # a value still finite and well-formed: only the SHA-256 can see it
    else:
        _corrupt(kind, weights)
    assert main(["inspect", str(weights.parent)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {weights}: SHA-256 does not match the manifest (file changed or corrupted)"


def test_nan_written_by_someone_else_is_refused_on_load(tmp_path):
    from safetensors.torch import save_file

    from workbench.io.tensors import load_tensors

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.tensor([1.0, float("nan")]), "e": torch.ones(2)}, str(path))
    bad_input()
    with pytest.raises(WorkbenchError, match=rf"^{re.escape(str(path))}: tensor 'w' has NaN or infinite values$"):
        load_tensors(path)
    save_file({"w": torch.ones(2), "e": torch.ones(0)}, str(path))
    bad_input()
    with pytest.raises(FileFormatError, match="tensor 'e' has zero elements"):
        load_tensors(path)


def test_only_adalora_pruned_modules_may_be_empty(tmp_path):
    """AdaLoRA saves a module pruned to rank 0 as zero-row tensors: legal there, and only there."""
    from workbench.adapters.adapter import load_adapter
    from workbench.io.adapter_dir import write_adapter_dir

    pre = "base_model.model.model.layers.0.self_attn"
    tensors = {f"{pre}.q_proj.lora_A.weight": torch.ones(0, 4), f"{pre}.q_proj.lora_E.weight": torch.ones(0, 1),
               f"{pre}.v_proj.lora_A.weight": torch.ones(2, 4), f"{pre}.v_proj.lora_E.weight": torch.ones(2, 1)}
    pattern = {"model.layers.0.self_attn.q_proj.lora_E": [False, False],
               "model.layers.0.self_attn.v_proj.lora_E": [True, True]}
    ada = write_adapter_dir(tmp_path / "ada", tensors, {"peft_type": "ADALORA", "rank_pattern": pattern}, {})
    assert load_adapter(ada, peft_types=("ADALORA",)).tensors[f"{pre}.q_proj.lora_A.weight"].numel() == 0
    with pytest.raises(FileFormatError, match="not usable here"):
        load_adapter(ada)  # merges and analytics need LoRA factors
    pattern["model.layers.0.self_attn.q_proj.lora_E"] = [True, False]  # not pruned: empty means broken
    bad = write_adapter_dir(tmp_path / "bad", tensors, {"peft_type": "ADALORA", "rank_pattern": pattern}, {})
    with pytest.raises(FileFormatError, match="q_proj.lora_A.weight' has zero elements"):
        load_adapter(bad, peft_types=("ADALORA",))
    lora = write_adapter_dir(tmp_path / "lora", tensors, {"peft_type": "LORA"}, {})
    with pytest.raises(FileFormatError, match="has zero elements"):
        load_adapter(lora)


# --- property 8: adapter and base must match ---------------------------------------------------------

def _trained_on(base, tmp_path: Path) -> Path:
    from workbench.adapters.live import attach, extract
    from workbench.adapters.spec import AdapterSpec

    spec = AdapterSpec(method="lori_d", rank=4, alpha=8)
    return extract(attach(base, spec), spec).save(tmp_path / "trained")


@pytest.mark.parametrize("other", ["same shapes, other weights", "two added tokens", "larger vocabulary"])
def test_adapter_on_another_base_is_refused_naming_both_fingerprints(tmp_path, other):
    from workbench.adapters.live import load_onto
    from workbench.models.fingerprint import base_fingerprint

    path = _trained_on(tiny_base(0), tmp_path)
    recorded = json.loads((path / "workbench.json").read_text())["base_fingerprint"]
    base = tiny_base(1 if other.startswith("same") else 0)
    if other == "two added tokens":  # tokenizer.add_tokens + resize_token_embeddings, as users do
        base.resize_token_embeddings(base.config.vocab_size + 2)
    elif other == "larger vocabulary":
        base.resize_token_embeddings(base.config.vocab_size + 64)
    bad_input()
    now = base_fingerprint(base)
    with pytest.raises(MismatchError) as err:
        load_onto(base, path)
    assert str(err.value) == f"{path}: adapter was trained on base {recorded}, this base is {now}"
    assert recorded != now


# --- property 9: strict key accounting --------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Found missing adapter keys")
def test_missing_and_unexpected_adapter_keys_are_errors_listing_them(tmp_path):
    from workbench.adapters.adapter import Adapter, load_adapter
    from workbench.adapters.live import load_onto

    trained = _trained_on(tiny_base(0), tmp_path)
    full = load_adapter(trained)
    dropped = sorted(full.tensors)[0]
    missing = Adapter({k: v for k, v in full.tensors.items() if k != dropped}, full.config, dict(full.meta))
    missing.save(tmp_path / "missing")
    bad_input()
    with pytest.raises(MismatchError, match=rf"adapter keys do not match the model: missing \['{re.escape(dropped)}'\]"):
        load_onto(tiny_base(0), tmp_path / "missing")
    extra_key = dropped.replace("lora_", "lora_extra_")
    extra = Adapter({**full.tensors, extra_key: torch.ones(2)}, full.config, dict(full.meta))
    extra.save(tmp_path / "extra")
    bad_input()
    with pytest.raises(MismatchError, match=rf"unexpected \['{re.escape(extra_key)}'\]"):
        load_onto(tiny_base(0), tmp_path / "extra")


def test_load_tensors_lists_missing_and_unexpected_keys(tmp_path):
    from workbench.io.tensors import load_tensors, save_tensors

    path = tmp_path / "t.safetensors"
    save_tensors(path, {"a": torch.ones(1), "b": torch.ones(1), "z": torch.ones(1)})
    bad_input()
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(path))}: missing keys c, d; unexpected keys z$"):
        load_tensors(path, expected_keys=["a", "b", "c", "d"])


# --- property 13: A's seed recorded with a hash of A, regeneration checked ---------------------------

def test_a_seed_and_hash_are_recorded_and_regeneration_is_checked(tmp_path):
    from workbench.adapters.init import seeded_a
    from workbench.hashing import tensors_hash
    from workbench.adapters.live import attach, extract
    from workbench.adapters.spec import AdapterSpec
    from workbench.adapters.compact import export_compact, load_compact
    from workbench.io.tensors import read_metadata

    spec = AdapterSpec(method="lori_d", rank=4, alpha=8, a_seed=11)
    adapter = extract(attach(tiny_base(0), spec), spec)
    a = {k: v for k, v in adapter.tensors.items() if k.endswith("lora_A.weight")}
    regenerated = {k: seeded_a(11, k.removeprefix("base_model.model.").removesuffix(".lora_A.weight"), *v.shape)
                   for k, v in a.items()}
    assert adapter.meta["a_seed"] == 11 and adapter.meta["a_hash"] == tensors_hash(a) == tensors_hash(regenerated)
    adapter.save(tmp_path / "peft")
    export_compact(tmp_path / "peft", tmp_path / "compact")
    assert load_compact(tmp_path / "compact").tensors.keys() == adapter.tensors.keys()
    side = tmp_path / "compact" / "workbench.json"
    meta = json.loads(side.read_text())
    compact_meta = json.loads(read_metadata(tmp_path / "compact" / "compact.safetensors")["workbench_compact"])
    assert compact_meta["a_seed"] == 11
    meta["a_hash"] = tensors_hash({k: v + 1 for k, v in a.items()})  # A from another seed was recorded
    side.write_text(json.dumps(meta))
    bad_input()
    with pytest.raises(FileFormatError, match="regenerated A does not match the recorded a_hash"):
        load_compact(tmp_path / "compact")
