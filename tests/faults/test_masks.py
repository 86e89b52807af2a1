"""Property 11: masks are exact and disjoint. Every scope group keeps exactly
``round_half_up((1 - sparsity) * n)`` entries with a deterministic tie-break (|B| descending, then flat
index ascending over sorted keys), also for degenerate B; overlap where disjointness is required is an error
naming the first key and the count."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import MismatchError
from workbench.masking.calibration import calibrate, round_half_up
from workbench.masking.checks import check_disjoint

from .harness import bad_input

KEYS = ["m.layers.0.q.lora_B.weight", "m.layers.0.v.lora_B.weight", "m.layers.1.q.lora_B.weight"]
SHAPES = [(40, 4), (24, 4), (40, 4)]


def _b(kind: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for key, shape in zip(KEYS, SHAPES):
        if kind == "all equal":
            out[key] = torch.full(shape, 0.25)
        else:  # 95% exact zeros, the rest random (a fresh LoRI-S B after a few steps looks like this)
            t = torch.randn(shape, generator=g)
            out[key] = torch.where(torch.rand(shape, generator=g) < 0.95, torch.zeros(shape), t)
    return out


def _flat(mask) -> torch.Tensor:
    return torch.cat([mask.tensors[k].reshape(-1) for k in sorted(mask.tensors)])


@pytest.mark.parametrize("kind", ["all equal", "95% zeros"])
@pytest.mark.parametrize("sparsity", [0.9, 0.5, 0.37])
def test_kept_count_is_exact_and_ties_break_by_index(kind, sparsity):
    b = _b(kind)
    bad_input()
    mask = calibrate(b, sparsity)
    n = sum(t.numel() for t in b.values())
    k = round_half_up((1 - sparsity) * n)
    assert mask.kept() == k
    assert calibrate(b, sparsity).content_hash() == mask.content_hash()  # deterministic
    flat_b = torch.cat([b[key].reshape(-1) for key in sorted(b)]).abs()
    kept = _flat(mask)
    if kind == "all equal":
        assert kept[:k].all() and not kept[k:].any()  # every value ties: the lowest flat indices win
    else:
        nonzero = flat_b != 0
        assert int(nonzero.sum()) <= k and kept[nonzero].all()  # every non-zero outranks the zeros
        zeros_kept = torch.nonzero(kept & ~nonzero).reshape(-1)
        zeros_all = torch.nonzero(~nonzero).reshape(-1)
        assert torch.equal(zeros_kept, zeros_all[:len(zeros_kept)])  # tied zeros: lowest indices first


@pytest.mark.parametrize("kind", ["all equal", "95% zeros"])
def test_disjoint_allocation_stays_exact_on_degenerate_b(kind):
    b = _b(kind)
    first = calibrate(b, 0.8)
    second = calibrate(b, 0.8, exclude=[first])
    third = calibrate(b, 0.8, exclude=[first, second])
    n = sum(t.numel() for t in b.values())
    assert first.kept() == second.kept() == third.kept() == round_half_up(0.2 * n)
    check_disjoint([first, second, third], ["a", "b", "c"])


def test_overlap_is_an_error_with_first_key_and_count():
    b = _b("all equal")
    a, c = calibrate(b, 0.9), calibrate(b, 0.8)  # c contains every entry of a
    bad_input()
    with pytest.raises(MismatchError) as err:
        check_disjoint([a, c], ["safety", "math"])
    assert str(err.value) == (f"masks 'safety' and 'math' overlap: {a.kept()} entries trainable in both "
                              f"(first at '{KEYS[0]}')")
