"""LoRI-S mask calibration, scopes, disjoint allocation, the Mask value and its checks."""

from __future__ import annotations

import re

import pytest
import torch

from workbench.errors import ConfigError, MismatchError, NonFiniteError
from workbench.keys import file_key
from workbench.masking import (Mask, calibrate, check_density, check_disjoint, check_mask_matches, density_by,
                               overlap, union)
from workbench.testing import random_adapter

SPARSITIES = [0.5, 0.9, 0.99]


def b_of(adapter) -> dict[str, torch.Tensor]:
    return {k: adapter.tensors[k] for k in adapter.b_keys()}


def make_b(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """B tensors of the tiny Llama adapter with a given value pattern."""
    b = b_of(random_adapter(seed=seed))
    g = torch.Generator().manual_seed(seed + 100)
    out = {}
    for key, t in b.items():
        if kind == "ties":  # only 4 distinct magnitudes, signs mixed: heavy ties at every threshold
            t = torch.randint(-4, 5, t.shape, generator=g).float() * 0.01
        elif kind == "zeros95":  # 95% exact zeros, as in a barely trained B
            t = t * (torch.rand(t.shape, generator=g) < 0.05)
        elif kind == "equal":
            t = torch.full(t.shape, 0.02)
        out[key] = t
    return out


def reference_keep(b: dict[str, torch.Tensor], sparsity: float, taken: dict | None = None) -> dict[str, torch.Tensor]:
    """Independent top-k: python sort on (-|value|, flat index) over sorted keys, skipping taken entries."""
    keys = sorted(b)
    values = torch.cat([b[k].reshape(-1).double().abs() for k in keys]).tolist()
    blocked = torch.cat([taken[k].reshape(-1) for k in keys]).tolist() if taken else [False] * len(values)
    k = int((1 - sparsity) * len(values) + 0.5)
    order = sorted((i for i in range(len(values)) if not blocked[i]), key=lambda i: (-values[i], i))
    flat = torch.zeros(len(values), dtype=torch.bool)
    flat[order[:k]] = True
    parts = torch.split(flat, [b[key].numel() for key in keys])
    return {key: p.reshape(b[key].shape) for key, p in zip(keys, parts)}


def assert_same(mask: Mask, expected: dict[str, torch.Tensor]) -> None:
    assert set(mask.tensors) == set(expected)
    for key in expected:
        assert torch.equal(mask.tensors[key], expected[key]), key


@pytest.mark.parametrize("kind", ["random", "ties", "zeros95", "equal"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_global_calibration_equals_reference_topk(kind, sparsity):
    b = make_b(kind)
    mask = calibrate(b, sparsity)
    n = sum(t.numel() for t in b.values())
    assert mask.kept() == int((1 - sparsity) * n + 0.5)
    assert_same(mask, reference_keep(b, sparsity))
    assert mask.meta["sparsity"] == sparsity and mask.meta["scope"] == "global" and mask.meta["excluded"] == []


def test_mostly_zero_b_does_not_keep_everything():
    # The official `|B| >= threshold` rule keeps every entry when the threshold is 0.
    b = make_b("zeros95")
    mask = calibrate(b, 0.9)
    assert abs(mask.density() - 0.1) < 1e-3
    nonzero = sum(int((t != 0).sum()) for t in b.values())
    kept_nonzero = sum(int(((t != 0) & mask.tensors[k]).sum()) for k, t in b.items())
    assert kept_nonzero == nonzero  # every non-zero entry outranks the zeros


def test_bf16_and_negative_zero_rank_by_magnitude():
    b = {"x.lora_B.weight": torch.tensor([[-0.0, 0.5], [-2.0, 0.0], [1.0, -0.5]], dtype=torch.bfloat16)}
    mask = calibrate(b, 0.5)
    assert mask.tensors["x.lora_B.weight"].tolist() == [[False, True], [True, False], [True, False]]


def module_label(key: str) -> str:
    return "attention" if ".self_attn." in key else "mlp"


GROUPERS = {
    "matrix": lambda key: key,
    "projection": lambda key: key.split(".")[-3],
    "layer": lambda key: re.search(r"layers\.(\d+)\.", key).group(1),
    "module": module_label,
}


@pytest.mark.parametrize("scope", sorted(GROUPERS))
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_scopes_calibrate_each_group_alone(scope, kind):
    b = make_b(kind, seed=3)
    mask = calibrate(b, 0.9, scope=scope)
    groups: dict[str, dict] = {}
    for key, t in b.items():
        groups.setdefault(GROUPERS[scope](key), {})[key] = t
    assert len(groups) > 1
    for members in groups.values():
        assert_same(Mask({k: mask.tensors[k] for k in members}), reference_keep(members, 0.9))


def test_global_scope_ranks_across_layers():
    b = make_b("random")
    big = sorted(b)[0]
    b[big] = b[big] * 1000  # one projection dominates: global keeps it whole, matrix scope does not
    assert bool(calibrate(b, 0.9).tensors[big].all())
    assert calibrate(b, 0.9, scope="matrix").tensors[big].float().mean() == pytest.approx(0.1, abs=0.01)


def test_disjoint_allocation_over_three_tasks():
    masks = []
    for seed in range(3):
        b = b_of(random_adapter(seed=seed))
        taken = union(masks).tensors if masks else None
        mask = calibrate(b, 0.9, exclude=masks)
        assert_same(mask, reference_keep(b, 0.9, taken))
        assert mask.meta["excluded"] == [m.content_hash() for m in masks]
        masks.append(mask)
    check_disjoint(masks, ["a", "b", "c"])
    for i in range(3):
        for j in range(i + 1, 3):
            assert overlap(masks[i], masks[j]).total == 0
    assert union(masks).density() == pytest.approx(sum(m.density() for m in masks), abs=1e-12)
    assert union(masks).kept() == sum(m.kept() for m in masks)


def test_exclusion_beyond_capacity_is_an_error():
    b = b_of(random_adapter(seed=0))
    first = calibrate(b, 0.4)  # 60% taken, 40% free, but 0.5 asks for 50%
    with pytest.raises(ConfigError, match=r"densities add up to more than 1"):
        calibrate(b, 0.5, exclude=[first])
    assert calibrate(b, 0.6, exclude=[first]).kept() == int(0.4 * first.total() + 0.5)


def test_excluded_mask_must_fit():
    b = b_of(random_adapter(seed=0))
    other = calibrate(b_of(random_adapter(seed=0, rank=2)), 0.9)
    with pytest.raises(MismatchError, match=r"excluded mask 1 .*shape"):
        calibrate(b, 0.9, exclude=[other])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_sparsity_outside_range_is_refused(bad):
    with pytest.raises(ConfigError, match=r"^sparsity: "):
        calibrate(make_b("random"), bad)


def test_unknown_scope_and_nonfinite_b():
    with pytest.raises(ConfigError, match=r"unknown mask scope 'globl'.*did you mean 'global'"):
        calibrate(make_b("random"), 0.9, scope="globl")
    b = make_b("random")
    b[sorted(b)[1]][0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=sorted(b)[1]):
        calibrate(b, 0.9)


def small_mask(bits, key="k.lora_B.weight", **meta) -> Mask:
    return Mask({key: torch.tensor(bits, dtype=torch.bool)}, meta)


def test_mask_is_an_immutable_value():
    m = small_mask([[True, False], [False, False]], sparsity=0.75)
    with pytest.raises(TypeError):
        m.tensors["other"] = torch.ones(1, dtype=torch.bool)
    with pytest.raises(TypeError):
        m.meta["sparsity"] = 0.1
    with pytest.raises(AttributeError):
        m.meta = {}
    assert (m.kept(), m.total(), m.density()) == (1, 4, 0.25)
    assert m.with_meta(scope="x").meta["scope"] == "x" and "scope" not in m.meta


def test_content_hash_tracks_bits_keys_and_shapes_not_meta():
    a = small_mask([[True, False], [False, False]])
    assert a.content_hash() == small_mask([[True, False], [False, False]], sparsity=0.5).content_hash()
    assert a.content_hash() != small_mask([[False, True], [False, False]]).content_hash()
    assert a.content_hash() != small_mask([[True, False, False, False]]).content_hash()
    assert a.content_hash() != small_mask([[True, False], [False, False]], key="j.lora_B.weight").content_hash()


def test_mask_rejects_non_bool():
    with pytest.raises(ConfigError, match="must be bool"):
        Mask({"k": torch.ones(2, 2)})


def test_union_overlap_and_density_by_on_known_masks():
    a = small_mask([[True, True], [False, False]])
    b = small_mask([[False, True], [True, False]])
    ov = overlap(a, b)
    assert (ov.total, ov.union, ov.per_key) == (1, 3, {"k.lora_B.weight": 1})
    assert ov.jaccard == pytest.approx(1 / 3)
    assert union([a, b]).tensors["k.lora_B.weight"].tolist() == [[True, True], [True, False]]
    q = file_key("model.layers.0.self_attn.q_proj", "B")
    d = file_key("model.layers.10.mlp.down_proj", "B")
    m = Mask({q: torch.tensor([True, False]), d: torch.tensor([True, True, True, False])})
    assert density_by(m, "layer") == {"0": 0.5, "10": 0.75}
    assert density_by(m, "projection") == {"down_proj": 0.75, "q_proj": 0.5}
    assert density_by(m, "module") == {"attention": 0.5, "mlp": 0.75}


def test_check_mask_matches_names_the_first_offending_key():
    adapter = random_adapter(seed=0)
    mask = calibrate(b_of(adapter), 0.9)
    check_mask_matches(mask, adapter, "m.safetensors")
    keys = adapter.b_keys()
    fewer = Mask({k: mask.tensors[k] for k in keys[1:]})
    with pytest.raises(MismatchError, match=rf"^m\.safetensors: .*missing keys {re.escape(keys[0])}$"):
        check_mask_matches(fewer, adapter, "m.safetensors")
    reshaped = {**mask.tensors, keys[2]: torch.zeros(3, 3, dtype=torch.bool)}
    with pytest.raises(MismatchError, match=rf"'{re.escape(keys[2])}' has shape \(3, 3\)"):
        check_mask_matches(reshaped, adapter, "m.safetensors")
    floats = {**mask.tensors, keys[0]: mask.tensors[keys[0]].float()}
    with pytest.raises(MismatchError, match="must be bool"):
        check_mask_matches(floats, adapter, "m.safetensors")


def test_check_disjoint_reports_first_key_and_count():
    b = b_of(random_adapter(seed=0))
    a, c = calibrate(b, 0.9), calibrate(b, 0.8)  # c contains all of a
    with pytest.raises(MismatchError, match=rf"'x' and 'y' overlap: {a.kept()} entries .*first at '"):
        check_disjoint([a, c], ["x", "y"])


def test_check_density():
    mask = calibrate(make_b("random"), 0.9, scope="matrix")
    check_density(mask, 0.9, "m")
    with pytest.raises(MismatchError, match=r"^m: mask density 0\.1"):
        check_density(mask, 0.8, "m")
