"""Data-aware interference inside pipeline runs: the chain's analyze stage reads its tasks' inputs (and no
other stage's key changes), the report sets each pair's score beside the forgetting it caused and
attributes the first task's forgetting to modules, and a --seeds report pools the points over seeds."""

import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from workbench.analytics.data_aware_attribution import chain_pair, ks_for
from workbench.analytics.data_aware_forgetting import group_points, spearman, verdict
from workbench.graph.task import StageResult
from workbench.pipeline import expand_chain, load_pipeline

# ---- the chain and the keys ---------------------------------------------------------------------------


def test_chain_expansion_sets_data_to_the_chain_tasks():
    """The signal preset (the runs the correlation is measured on) turns the data-aware section on; the
    quick and default presets leave it off (~2 min of the real model on 2 CPU cores), `--set` turns it on."""
    analyze = expand_chain("safety->math->code", preset="signal")["stages"]["analyze"]
    assert analyze["data"] == ["safety", "math", "code"] and analyze["data_limit"] == 8  # bounded cost
    assert expand_chain("safety,math", compare=["lora"], preset="signal")["stages"]["analyze"]["data"] == [
        "safety", "math"]
    assert "data" not in expand_chain("safety->math->code")["stages"]["analyze"]
    pipe = load_pipeline("safety->math", ["stages.analyze.data=[safety,math]"])
    assert pipe.task("analyze").params["data"] == ["safety", "math"]


def _keys(pipe) -> dict:
    from workbench.stages.seeds import stage_keys

    return stage_keys(pipe)


def test_data_changes_the_analyze_key_only():
    with_data = load_pipeline("safety->math", ["stages.analyze.data=[safety,math]", "stages.analyze.data_limit=4"])
    without = load_pipeline("safety->math", ["stages.analyze.data=[]"])
    a, b = _keys(with_data), _keys(without)
    assert a.keys() == b.keys()
    assert [n for n in a if a[n] != b[n]] == ["analyze"]
    params = with_data.task("analyze").params
    assert params["data"] == ["safety", "math"] and params["data_limit"] == 4
    for t in with_data.tasks():  # nothing new in any other stage's resolved parameters
        if t.kind != "analyze":
            assert not {"data", "data_limit", "data_specs"} & set(t.params)
    # an analyze stage without data resolves as before (its key does not move for hand-written pipelines)
    assert not {"data", "data_limit", "data_specs"} & set(without.task("analyze").params)


def test_unknown_data_task_is_reported_at_its_line(tmp_path):
    from workbench.pipeline import PipelineError

    with pytest.raises(PipelineError, match="data"):
        load_pipeline("safety->math", ["stages.analyze.data=[safety, nosuchtask]"])


# ---- score vs forgetting: points and the rank correlation --------------------------------------------


def _data_aware(scores: dict) -> dict:
    return {"pairs": [{"inputs_of": i, "update": j, "energy_ratio": s, "overlap": 0.1} for (i, j), s in scores.items()]}


def test_points_pair_each_score_with_the_forgetting_its_stage_caused():
    """Row r's update j against task i learned at row l < r: the change of i from row r-1 to row r."""
    f = {"tasks": ["safety", "math", "code"], "learned_at": [1, 2, 3], "row_adapters": [None, "s", "m", "c"],
         "nll": [[3.0, 3.0, 3.0], [2.0, 3.1, 3.0], [2.5, 2.0, 3.2], [2.6, 2.4, 1.0]],
         "matrix": [[0.1, 0.0, 0.0], [0.9, 0.0, 0.0], [0.7, 0.5, 0.0], [0.6, 0.5, 0.3]],
         "higher_is_better": {"safety": True, "math": True, "code": True},
         "metric": {"safety": "refusal_rate", "math": "accuracy", "code": "pass@1"}}
    pts = group_points(_data_aware({("s", "m"): 2.0, ("s", "c"): 1.0, ("m", "c"): 3.0, ("m", "s"): 9.0}), f, "g")
    got = {(p["earlier"], p["update"]): (p["score"], p["nll_forgetting"], p["metric_forgetting"]) for p in pts}
    assert got.keys() == {("s", "m"), ("s", "c"), ("m", "c")}  # only later updates, never the base row
    assert got[("s", "m")] == pytest.approx((2.0, 0.5, 0.2))
    assert got[("s", "c")] == pytest.approx((1.0, 0.1, 0.1))
    assert got[("m", "c")] == pytest.approx((3.0, 0.4, 0.0))
    assert all(p["group"] == "g" for p in pts) and {p["metric"] for p in pts} == {"refusal_rate", "accuracy"}


def test_spearman_of_a_perfect_monotone_relation_is_one():
    x = [0.1, 0.5, 0.7, 2.0, 3.0, 8.0]
    up = spearman(x, [math.log(v) + v ** 3 for v in x])
    down = spearman(x, [-v for v in x])
    assert up["rho"] == 1.0 and up["lo"] == 1.0 and up["hi"] == 1.0
    assert down["rho"] == -1.0
    # the exact permutation p: 2 of the 6! pairings are as extreme as a perfect order (it and its reverse)
    assert up["p"] == pytest.approx(2 / math.factorial(6))
    assert verdict(up, "NLL forgetting").endswith("forgot more.")


def test_spearman_agrees_with_scipy_and_its_interval_covers_it():
    rng = np.random.default_rng(5)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    y[3] = y[4]  # a tie: average ranks
    got = spearman(x, y)
    ref = spearmanr(x, y)
    assert got["rho"] == pytest.approx(ref.statistic, abs=1e-12)
    assert got["p"] == pytest.approx(ref.pvalue, abs=0.03)  # permutation vs t approximation
    assert got["lo"] < got["rho"] < got["hi"]


def test_three_points_are_not_enough_to_decide():
    """spearmanr's t approximation gives p = 0 for three ordered points; exactly it is 1/3."""
    c = spearman([1, 2, 3], [1, 2, 3])
    assert c["rho"] == 1.0 and c["p"] == pytest.approx(1 / 3)
    assert "undecided" in verdict(c, "NLL forgetting")
    assert spearman([1, 2], [1, 2])["rho"] is None
    assert "same at every point" in spearman([1, 2, 3], [0, 0, 0])["reason"]


# ---- attribution: which pair ------------------------------------------------------------------------


def test_chain_pair_is_the_first_task_against_the_last_update_of_the_first_chain():
    names = ["a1", "a2", "a3", "b1", "b2"]
    inc = {"a2": "a1", "a3": "a2", "b2": "b1"}
    assert chain_pair(names, inc, {"a1": "t1", "b1": "t1"}) == ("a1", "a2", "a3")
    assert chain_pair(names, {}, {"a1": "t1"}) is None
    assert ks_for(14) == [1, 4] and ks_for(210) == [11, 53] and ks_for(1) == [1]


# ---- over seeds ---------------------------------------------------------------------------------------


def _seed_points(seed: int) -> list[dict]:
    """Two methods, two pairs each: forgetting grows with the score in every seed."""
    out = []
    for g, base in (("lori_s", 0.0), ("lora", 1.0)):
        for k, (i, j) in enumerate((("s", "m"), ("m", "c"))):
            score = base + k + seed / 10
            out.append({"group": g, "earlier": i, "task": i, "update": j, "row": k + 2, "score": score,
                        "nll_forgetting": score ** 2, "metric_forgetting": 0.0, "metric": "acc"})
    return out


def test_seed_report_pools_every_method_seed_and_pair():
    from workbench.analytics.seed_report import build_seed_report
    from workbench.analytics.seed_tables import render_html, render_md

    seeds = [0, 1, 2]
    data = {s: {"evals": {}, "summaries": {}} for s in seeds}
    report = build_seed_report(seeds, data, {}, pipeline="p", score_points={s: _seed_points(s) for s in seeds})
    sf = report["score_forgetting"]
    assert len(sf["points"]) == 12 and {p["seed"] for p in sf["points"]} == {0, 1, 2}
    nll, primary = sf["correlations"]["nll"], sf["correlations"]["primary"]
    ref = spearmanr([p["score"] for p in sf["points"]], [p["nll_forgetting"] for p in sf["points"]]).statistic
    assert nll["rho"] == pytest.approx(ref) == pytest.approx(1.0) and nll["n"] == 12
    assert nll["lo"] == pytest.approx(1.0) and nll["p"] < 0.05
    assert primary["rho"] is None  # a metric that never moves
    md, page = render_md(report), render_html(report)
    for s in sf["sentences"]:
        assert s in md and s.replace("'", "&#x27;") in page
    assert "forgot more" in sf["sentences"][0] and "undecided" in sf["sentences"][1]
    assert "score_forgetting" not in build_seed_report(seeds, data, {}, pipeline="p")


def test_seeds_collect_the_points_of_each_seeds_analyze_stage():
    from workbench.stages.seeds import _score_points

    pipe = load_pipeline("safety->math")
    pts = _seed_points(0)
    assert _score_points(pipe, {"analyze": StageResult(metrics={"score_forgetting": pts})}) == pts
    assert _score_points(pipe, {"analyze": StageResult(metrics={})}) == []


# ---- the analyze stage on a tiny chain --------------------------------------------------------------

FAST = ["defaults.steps=2", "defaults.eval_limit=2", "defaults.max_new_tokens=2", "defaults.max_samples=8",
        "stages.analyze.data_limit=4"]


@pytest.mark.slow  # ~25 s on the shared 2-core machine: three train + evaluate stages, then the analysis
def test_analyze_stage_with_data_writes_the_section_the_points_and_the_attribution(tmp_path, monkeypatch):
    from workbench.models.tiny import save_tiny_llama
    from workbench.stages.run import run

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    tiny = save_tiny_llama(tmp_path / "tiny")
    data = ["stages.analyze.data=[safety,math,code]", "stages.analyze.data_limit=8"]
    results = run("safety->math->code", tmp_path / "out", [*FAST, f"base.model={tiny}", *data], progress=False)
    out = results["analyze"].artifacts["report"]
    report = json.loads((out / "report.json").read_text())
    d = report["data_aware"]
    assert d["rows"] == {"safety": "safety", "math": "math", "code": "code"}
    assert all(t["n_sequences"] == 4 for t in d["tasks"].values())
    # three (earlier, later) pairs of a three-task chain, each beside the NLL change its stage caused
    f = json.loads((out / "forgetting.json").read_text())
    pts = d["score_forgetting"]["points"]
    assert {(p["earlier"], p["update"]) for p in pts} == {("safety", "math"), ("safety", "code"), ("math", "code")}
    col = f["tasks"].index("safety")
    sm = next(p for p in pts if p["update"] == "math")
    assert sm["nll_forgetting"] == pytest.approx(f["nll"][2][col] - f["nll"][1][col])
    assert results["analyze"].metrics["score_forgetting"] == pts  # what a --seeds run pools
    a = d["attribution"]
    assert (a["inputs_of"], a["before"], a["after"], a["n_pairs"]) == ("safety", "math", "code", 4)
    assert [r["k"] for r in a["rows"]] == ks_for(a["n_modules"])
    for r in a["rows"]:
        assert len(r["top_modules"]) == r["k"] and len(r["nll_random"]) == a["n_random"]
        assert math.isfinite(r["nll_top"])
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert a["sentence"] in md and "Data-aware score vs measured forgetting" in md
    assert 'id="data_aware_attribution"' in page and 'id="data_aware_forgetting"' in page


def test_custom_data_tasks_come_from_the_pipelines_task_specs(tmp_path):
    """A custom task is not in the registry: the stage builds it from the pipeline's `tasks:`, as evaluate."""
    from workbench.pipeline import load_tree
    from workbench.pipeline.yaml_load import Located
    from workbench.stages.analyze_stage import _data_args

    (tmp_path / "data.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    tree = {**expand_chain("my.task->math", preset="signal"),
            "tasks": {"my.task": {"path": str(tmp_path / "data.jsonl")}}}
    analyze = load_tree(Located(tree, {(): "chain"}, origin="chain"), tmp_path).task("analyze")
    args = _data_args(analyze.params, {})
    custom, math_task = args["data"]
    assert custom.name == "my.task" and not isinstance(custom, str) and math_task == "math"
    assert args["attribute"] is True and args["data_limit"] == 8
    assert _data_args({"data": []}, {}) == {}
