"""A chain's stages are analysed by what each added: delta_W_k - delta_W_{k-1}, exact, in factor form."""

from __future__ import annotations

import pytest
import torch

from workbench.adapters.factors import ModuleFactors
from workbench.analytics import build_report
from workbench.analytics.increments import increment
from workbench.errors import ConfigError
from workbench.graph.task import Task
from workbench.stages.analyze_stage import continued_pairs
from workbench.testing import llama_shapes, random_adapter

SHAPES = llama_shapes(layers=1, hidden=64, intermediate=128, kv_dim=16)


def _f(seed: int, scaling: float = 2.0, a: torch.Tensor | None = None) -> ModuleFactors:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(4, 32, generator=g) if a is None else a
    return ModuleFactors(a, torch.randn(24, 4, generator=g), scaling)


def test_shared_a_keeps_rank_and_is_zero_where_nothing_changed():
    prev = _f(0)
    b = prev.B.clone()
    b[:12] += 1.0  # the later stage touched only the first 12 rows (a disjoint mask)
    cur = ModuleFactors(prev.A, b, prev.scaling)
    inc = increment({"m": cur}, {"m": prev})["m"]
    assert inc.rank == 4 and torch.equal(inc.A, prev.A)
    assert torch.count_nonzero(inc.B[12:]) == 0
    torch.testing.assert_close(inc.delta(), cur.delta() - prev.delta())


@pytest.mark.parametrize("scaling", [2.0, 0.5])
def test_different_a_or_scaling_gives_exact_rank_2r_factors(scaling):
    prev, cur = _f(0), _f(1, scaling=scaling)
    inc = increment({"m": cur, "only_cur": cur}, {"m": prev})
    assert inc["m"].rank == 8 and inc["only_cur"] is cur
    torch.testing.assert_close(inc["m"].delta(), cur.delta() - prev.delta())


def _chain():
    """Three snapshots of one LoRI chain: shared A, each stage adds B entries in its own rows."""
    first = random_adapter(SHAPES, rank=4, seed=0, name="safety")
    snaps, cur = [first], first
    for k, name in ((1, "math"), (2, "code")):
        tensors = {key: t.clone() for key, t in cur.tensors.items()}
        for key, t in tensors.items():
            if key.endswith("lora_B.weight"):
                rows = t.shape[0] // 3
                t[k * rows:(k + 1) * rows] += 0.05 * (k + 1)
        cur = type(first)(tensors=tensors, config=cur.config, meta={**cur.meta, "name": name})
        snaps.append(cur)
    return snaps


def test_report_compares_increments_and_says_so(tmp_path):
    snaps = _chain()
    snapshots = build_report(snaps, out_dir=tmp_path / "s")
    incs = build_report(snaps, out_dir=tmp_path / "i", increments={"math": "safety", "code": "math"})
    info = {a["name"]: a.get("increment_of") for a in incs["adapters"]}
    assert info == {"safety": None, "math": "safety", "code": "math"}
    cos = lambda r: next(p for p in r["pairs"] if (p["a"], p["b"]) == ("math", "code"))["summary"]["means"]["delta_cosine"]  # noqa: E731
    # snapshots share every earlier stage's update, so they look alike; what each stage added does not
    assert cos(snapshots) > 0.5 and abs(cos(incs)) < cos(snapshots) / 2
    md = (tmp_path / "i" / "report.md").read_text()
    assert "math (what it added over safety)" in md
    assert "(the adapters share one frozen A" in md  # A overlap 1 is explained, not left to look like interference
    with pytest.raises(ConfigError, match="unknown adapters"):
        build_report(snaps, out_dir=tmp_path / "x", increments={"math": "nope"})


def test_analyze_stage_pairs_continue_stages_with_what_they_continued():
    safety = Task.make("safety", "train", {"task": "safety"})
    math = Task.make("math", "continue", {"task": "math"}, inputs=[("from", safety)])
    other = Task.make("other", "continue", {"task": "code"}, inputs=[("from", Task.make("x", "train", {}))])
    adapters = [("adapters.0", safety), ("adapters.1", math), ("adapters.2", other)]
    assert continued_pairs(Task.make("a", "analyze", {"compare": "increments"}, inputs=adapters)) == {"math": "safety"}
    assert continued_pairs(Task.make("a", "analyze", {"compare": "snapshots"}, inputs=adapters)) == {}
