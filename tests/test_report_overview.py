"""The report's first screen and what it leaves out, on hand-built inputs with known answers: one paragraph
per task from the forgetting matrices, constant metrics as one sentence (detected from the data), colour
bars that tell their ticks apart, smoothed training curves, and clear errors for bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.ticker import MaxNLocator

from workbench.analytics import build_report
from workbench.analytics.constants import is_constant
from workbench.analytics.plots import tick_format
from workbench.analytics.training_curves import ema, span
from workbench.errors import ConfigError, FileFormatError
from workbench.testing import llama_shapes, random_adapter

SHAPES = llama_shapes(layers=2, hidden=64, intermediate=128, kv_dim=32)

# task a: NLL 2.0 -> 1.5 when learned (gain 0.5), 1.8 after b (forgets 0.3 = 60% of its gain)
FORGETTING = {"tasks": ["a", "b"], "stages": ["base_eval", "a_eval", "b_eval"],
              "matrix": [[0.0, 0.0], [0.5, 0.0], [0.25, 0.5]], "metric": {"a": "accuracy", "b": "pass@1"},
              "nll": [[2.0, 3.0], [1.5, 3.1], [1.8, 2.0]], "learned_at": [1, 2], "row_adapters": [None, "a", "b"],
              "nll_interval": [[[1.9, 2.1], [2.9, 3.1]], [[1.4, 1.6], [3.0, 3.2]], [[1.7, 1.9], [1.9, 2.1]]]}


def adapter(a_seed: int, b_seed: int, name: str, task: str | None = None):
    """A LoRI-style adapter: A from ``a_seed`` (frozen, shared by equal seeds), B from ``b_seed``."""
    out = random_adapter(SHAPES, rank=4, seed=a_seed, name=name)
    other = random_adapter(SHAPES, rank=4, seed=b_seed)
    for k in out.tensors:
        if k.endswith("lora_B.weight"):
            out.tensors[k] = other.tensors[k]
    if task:
        out.meta["task"] = task
    return out


def disjoint_masks(adapters, seed: int = 0):
    """Masks that split every lora_B into disjoint random thirds (one per adapter)."""
    g = torch.Generator().manual_seed(seed)
    owner = {k: torch.randint(0, len(adapters), t.shape, generator=g)
             for k, t in adapters[0].tensors.items() if k.endswith("lora_B.weight")}
    return [{k: o == i for k, o in owner.items()} for i in range(len(adapters))]


@pytest.fixture(scope="module")
def chain_like(tmp_path_factory):
    """Two stages of one chain: one A, disjoint masks, a forgetting matrix with NLL and training losses."""
    out = tmp_path_factory.mktemp("chain")
    ads = [adapter(1, 10, "a", "a"), adapter(1, 20, "b", "b")]
    losses = {"a": [2.0, 1.0, 3.0, 1.0, 2.0, 1.0, 3.0, 1.0, 2.0, 1.0], "b": {"trace": [{"loss": 3.0}, {"loss": 2.0}]}}
    report = build_report(ads, masks=disjoint_masks(ads), forgetting=FORGETTING, out_dir=out, training=losses)
    return out, report


def test_each_task_gets_a_paragraph_with_its_numbers(chain_like):
    _, report = chain_like
    a, b = report["overview"]["tasks"]
    assert a["paragraph"] == (
        "learned at stage a: held-out NLL fell 2.000 [1.900, 2.100] → 1.500 [1.400, 1.600] (-0.500); "
        "accuracy 0.000 → 0.500. It forgot most after b: held-out NLL 1.800 [1.700, 1.900] (+0.300 from its "
        "post-training value, 60% of what it learned). accuracy at the end: 0.250 (-0.250 since it was learned).")
    assert b["paragraph"].startswith("learned at stage b: held-out NLL fell 3.100 [3.000, 3.200] → 2.000 "
                                     "[1.900, 2.100] (-1.100); pass@1 0.000 → 0.500. No later stage")
    assert a["nll"]["worst_damage"] == pytest.approx(0.3) and a["nll"]["gain"] == pytest.approx(0.5)


def test_the_first_screen_holds_the_paragraphs_then_both_matrices_side_by_side(chain_like):
    out, _ = chain_like
    md = (out / "report.md").read_text()
    order = [md.index(s) for s in ("**a**: learned", "**b**: learned", "## Forgetting matrix (held-out NLL",
                                   "## Forgetting matrix (primary", "](forgetting.png)", "## Adapters")]
    assert order == sorted(order)
    assert "| a (a_eval) | 1.500 [1.400, 1.600] | 3.100 [3.000, 3.200] |" in md
    page = (out / "report.html").read_text()
    side = page[page.index('<div class="side">'):page.index("</div>")]
    assert 'id="table-forgetting_nll"' in side and 'id="table-forgetting"' in side


def test_constants_are_found_in_the_data_and_stated_once(chain_like, tmp_path):
    out, report = chain_like
    assert {m: c["value"] for m, c in report["constants"].items()} == {
        "a_mean_sq_cos": 1.0, "interference": 1.0, "cross_energy": 1.0, "mask_jaccard": 0.0}
    (sentence,) = [n for n in report["overview"]["notes"] if n.startswith("Not plotted or ranked")]
    assert "share one frozen A" in sentence and "the masks are disjoint" in sentence
    md = (out / "report.md").read_text()
    assert md.count(sentence) == 1 and "Modules that interfere most" not in md
    assert "pair_heatmaps.png" not in report["files"]["images"]  # one pair: every panel would be one colour
    # different A's (a merge): nothing is constant, every panel and the ranking are back
    other = build_report([adapter(1, 10, "x"), adapter(2, 20, "y"), adapter(3, 30, "z")], out_dir=tmp_path)
    assert other["constants"] == {} and "Modules that interfere most" in (tmp_path / "report.md").read_text()
    assert "pair_heatmaps.png" in other["files"]["images"]


def test_constancy_is_relative_and_needs_two_values():
    assert is_constant([1.0, 1.0 - 1e-12]) and is_constant([0.0, 0.0])
    assert not is_constant([1.0, 1.0 - 1e-6]) and not is_constant([1.0])


@pytest.mark.parametrize("lo,hi", [(0.115, 0.129), (1 - 1e-7, 1 + 1e-7), (-0.004, 0.006), (10.6, 10.8)])
def test_colour_bar_ticks_are_told_apart_without_an_offset(lo, hi):
    ticks = [t for t in MaxNLocator().tick_values(lo, hi) if lo <= t <= hi]
    labels = [tick_format(lo, hi) % t for t in ticks]
    assert len(set(labels)) == len(labels) >= 2
    assert all(len(label) <= 12 for label in labels)


def test_training_curves_are_a_debiased_ema_beside_the_held_out_change(chain_like):
    _, report = chain_like
    a, b = report["training"]
    assert span(10) == 2 and span(2) == 1 and span(10_000) == 50
    w = 0.5 ** np.arange(9, -1, -1)  # beta = 1 - 1/2: the last step weighs most
    assert a["smoothed"][-1] == pytest.approx(float(np.dot(w, a["loss"]) / w.sum()))
    assert ema([4.0, 2.0], 1) == [4.0, 2.0] and b["smoothed"] == [3.0, 2.0]
    assert (a["heldout_before"], a["heldout_after"]) == (2.0, 1.5) and (b["heldout_before"], b["heldout_after"]) == (3.1, 2.0)


def test_bad_forgetting_and_training_inputs_name_the_field(tmp_path):
    ads = [adapter(1, 10, "a"), adapter(1, 20, "b")]
    for bad, field in ((dict(FORGETTING, nll=[[1.0, 2.0]]), "'nll' has 1 rows"),
                       (dict(FORGETTING, nll_interval=[[[2.0, 1.0]] * 2] * 3), r"nll_interval\[0\]\[0\]"),
                       (dict(FORGETTING, learned_at=[1, 7]), r"learned_at\[1\]"),
                       (dict(FORGETTING, row_adapters=[None, "a"]), "'row_adapters'")):
        with pytest.raises(FileFormatError, match=field):
            build_report(ads, forgetting=bad, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown adapters \\['c'\\]"):
        build_report(ads, out_dir=tmp_path, training={"c": [1.0]})
    with pytest.raises(FileFormatError, match=r"training\['a'\]: step 2"):
        build_report(ads, out_dir=tmp_path, training={"a": [1.0, float("nan")]})
