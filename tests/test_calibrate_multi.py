"""Calibration of several sparsities in one pass (one ranking, one cut per sparsity) and the official tie rule
of juzhengz/LoRI @ 9183468 ``src/extract_mask.py`` ``get_model_mask`` (lines 65-100)."""

from __future__ import annotations

import pytest
import torch

from workbench.cli import main
from workbench.errors import ConfigError, WorkbenchError
from workbench.masking.calibration import calibrate, calibrate_many, mask_file_name
from workbench.masking.file import load_mask
from workbench.testing import random_adapter

SPARSITIES = [0.5, 0.9, 0.99]


def b_tensors(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    adapter = random_adapter(seed=seed)
    b = {k: adapter.tensors[k] for k in adapter.b_keys()}
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # four magnitudes: every threshold falls inside a run of equal values
        b = {k: torch.randint(-4, 5, t.shape, generator=g).float() * 0.01 for k, t in b.items()}
    if kind == "zeros":  # 95% zeros, as a barely trained B
        b = {k: t * (torch.rand(t.shape, generator=g) > 0.95) for k, t in b.items()}
    return b


def assert_same(a, b):
    assert list(a.tensors) == list(b.tensors)
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key
    assert dict(a.meta) == dict(b.meta)


@pytest.mark.parametrize("tie_rule", ["exact", "official"])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("kind", ["random", "ties", "zeros"])
def test_each_mask_of_the_multi_call_equals_the_single_call(kind, scope, tie_rule):
    b = b_tensors(kind)
    many = calibrate_many(b, SPARSITIES, scope, tie_rule=tie_rule)
    for sparsity, mask in zip(SPARSITIES, many):
        assert_same(mask, calibrate(b, sparsity, scope, tie_rule=tie_rule))


@pytest.mark.parametrize("tie_rule", ["exact", "official"])
def test_multi_call_with_excluded_masks(tie_rule):
    b = b_tensors("ties", seed=1)
    earlier = calibrate(b_tensors("random", seed=2), 0.9)
    many = calibrate_many(b, [0.9, 0.95, 0.99], exclude=[earlier], tie_rule=tie_rule)
    for sparsity, mask in zip([0.9, 0.95, 0.99], many):
        assert_same(mask, calibrate(b, sparsity, exclude=[earlier], tie_rule=tie_rule))
        assert all(not (mask.tensors[k] & earlier.tensors[k]).any() for k in b)


def official_reference(b: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """extract_mask.py:67-89 as written there: one concatenated |B|, torch.topk, keep |B| >= threshold."""
    flat = torch.cat([b[k].abs().reshape(-1) for k in sorted(b)])
    k = int((1 - sparsity) * flat.numel())
    threshold = torch.topk(flat, k).values[-1]
    return {key: b[key].abs() >= threshold for key in b}


@pytest.mark.parametrize("kind", ["random", "ties", "zeros"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_official_rule_matches_the_reference(kind, sparsity):
    b = b_tensors(kind)
    mask = calibrate(b, sparsity, tie_rule="official")
    expected = official_reference(b, sparsity)
    assert all(torch.equal(mask.tensors[k], expected[k]) for k in b)
    assert mask.meta["tie_rule"] == "official"


def test_official_and_exact_rules_differ_where_they_should():
    """Hand-made: ten entries, magnitudes 3, 2, 2, 2, 1, 0, ... (the two rules' counts written out)."""
    b = {"m.lora_B.weight": torch.tensor([[3.0], [2.0], [-2.0], [2.0], [1.0], [0.0], [0.0], [0.0], [0.0], [0.0]])}
    col = lambda m: m.tensors["m.lora_B.weight"].reshape(-1).tolist()  # noqa: E731
    # sparsity 0.7: (1 - 0.7) * 10 = 3.0000000000000004; exact keeps 3 (ties by index), official all |B| >= 2
    assert col(calibrate(b, 0.7)) == [True, True, True] + [False] * 7
    assert col(calibrate(b, 0.7, tie_rule="official")) == [True] * 4 + [False] * 6
    # sparsity 0.8: (1 - 0.8) * 10 = 1.9999999999999996; exact rounds to 2, official floors to 1
    assert col(calibrate(b, 0.8)) == [True, True] + [False] * 8
    assert col(calibrate(b, 0.8, tie_rule="official")) == [True] + [False] * 9
    # sparsity 0.4: six kept (the first zero by index); the 6th largest is 0, so the official rule keeps all
    assert col(calibrate(b, 0.4)) == [True] * 6 + [False] * 4
    assert all(col(calibrate(b, 0.4, tie_rule="official")))
    assert "tie_rule" not in calibrate(b, 0.4).meta


def test_bad_inputs():
    b = b_tensors("random")
    with pytest.raises(ConfigError, match="distinct"):
        calibrate_many(b, [0.9, 0.9])
    with pytest.raises(ConfigError, match="tie rule"):
        calibrate(b, 0.9, tie_rule="loose")
    with pytest.raises(ConfigError, match="keeps no entry"):
        calibrate({"m.lora_B.weight": torch.ones(4, 1)}, 0.9, tie_rule="official")


def test_cli_out_dir_writes_one_mask_per_sparsity_equal_to_single_calls(tmp_path, capsys):
    random_adapter(seed=3).save(tmp_path / "a")
    argv = ["calibrate", str(tmp_path / "a"), "--sparsity", "0.5", "0.9", "0.99", "--out-dir", str(tmp_path / "d")]
    assert main(argv) == 0, capsys.readouterr().err
    for s in SPARSITIES:
        single = tmp_path / f"single-{s}.safetensors"
        assert main(["calibrate", str(tmp_path / "a"), "--sparsity", str(s), "--out", str(single)]) == 0
        multi, one = load_mask(tmp_path / "d" / mask_file_name(s)), load_mask(single)
        assert multi.content_hash() == one.content_hash() and multi.meta["sparsity"] == s
        assert all(torch.equal(multi.tensors[k], one.tensors[k]) for k in one.tensors)
    capsys.readouterr()
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err  # never overwritten
    assert main(["calibrate", str(tmp_path / "a"), "--sparsity", "0.5", "0.9", "--out", str(tmp_path / "x")]) == 2
    assert "use --out-dir" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "a"), "--sparsity", "0.9", "--tie-rule", "official",
                 "--out-dir", str(tmp_path / "o")]) == 0
    official, exact = load_mask(tmp_path / "o" / mask_file_name(0.9)), load_mask(tmp_path / "single-0.9.safetensors")
    assert official.kept() == int((1 - 0.9) * official.total()) == exact.kept() - 1  # floor vs round: 409 vs 410


def test_to_dir_refuses_before_writing_anything(tmp_path):
    from workbench.masking.calibration import calibrate_to_dir

    random_adapter(seed=4).save(tmp_path / "a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / mask_file_name(0.99)).write_text("x")
    with pytest.raises(WorkbenchError, match="already exists"):
        calibrate_to_dir(tmp_path / "a", tmp_path / "d", [0.5, 0.99])
    assert not (tmp_path / "d" / mask_file_name(0.5)).exists()
