"""`--compare PROTOCOL:METHOD`: a method under another protocol in the same seed report, compared under one
judge, paired by prompt, and never on NLL (each protocol formats its prompts its own way)."""

from __future__ import annotations

import pytest

from workbench.errors import ConfigError
from workbench.stages.cross_protocol import align_judge, merge_parts, split_compare


def test_split_compare_makes_one_pipeline_per_protocol():
    parts = split_compare("safety->math", {"method": "lori_s", "compare": ["lora", "official:lori_s",
                                                                           "official:lori_d", "workbench:lori_d"]})
    assert [label for label, _ in parts] == ["", "official"]
    assert parts[0][1]["compare"] == ["lora", "lori_d"]  # the main protocol's own name is a plain compare
    assert (parts[1][1]["protocol"], parts[1][1]["method"], parts[1][1]["compare"]) == ("official", "lori_s", ["lori_d"])
    assert split_compare("safety->math", {"compare": ["lora"]}) == [("", {"compare": ["lora"]})]
    with pytest.raises(ConfigError, match="did you mean 'official'"):
        split_compare("safety->math", {"compare": ["oficial:lori_s"]})
    with pytest.raises(ConfigError, match="PROTOCOL:METHOD"):
        split_compare("safety->math", {"compare": ["official:"]})
    with pytest.raises(ConfigError, match="needs a chain"):
        split_compare("pipelines/merge-four.yaml", {"compare": ["official:lori_s"]})


def _rec(rate, judged, ids=("a", "b")):
    """A safety cell: `rate`/outcomes under its own judge, `judged` under qi2023_keyword."""
    return {"primary": "refusal_rate", "higher_is_better": True, "judge": "lori_official",
            "metrics": {"refusal_rate": sum(rate) / 2, "refusal_rate@qi2023_keyword": sum(judged) / 2, "nll": 1.0},
            "per_prompt": {"refusal_rate": {"ids": list(ids), "values": list(rate)},
                           "refusal_rate@qi2023_keyword": {"ids": list(ids), "values": list(judged)}}}


def test_align_judge_rereads_cells_under_the_main_judge():
    evals = {"e": {"safety": _rec([1, 1], [0, 1]), "math": {"primary": "nll", "metrics": {"nll": 2.0}}}}
    out = align_judge(evals, "qi2023_keyword")
    assert out["e"]["safety"]["metrics"]["refusal_rate"] == 0.5
    assert out["e"]["safety"]["per_prompt"]["refusal_rate"]["values"] == [0, 1]
    assert out["e"]["safety"]["judge"] == "qi2023_keyword" and out["e"]["math"] == evals["e"]["math"]
    assert evals["e"]["safety"]["metrics"]["refusal_rate"] == 1.0  # the input is not changed
    assert align_judge(evals, None) is evals


def _part(label, groups, evals, method=None):
    seeds = [0, 1]
    return {"label": label, "groups": groups, "points": {},
            "data": {s: {"evals": evals, "summaries": {g: {} for g in groups}} for s in seeds},
            "rename": {g: method for g in groups} if method else {}}


def test_merged_report_compares_across_protocols_on_the_primary_metric_only():
    from workbench.analytics.seed_report import build_seed_report

    main_rec = {**_rec([0, 0], [0, 0]), "judge": "qi2023_keyword"}
    shape = {"tasks": ["safety"], "stages": ["base_eval", "s_eval"], "learned_at": [1]}
    main = _part("", {"lori_s": shape}, {"base_eval": {"safety": main_rec}, "s_eval": {"safety": main_rec}})
    off = _part("official", {"chain-x-official": shape},
                {"base_eval": {"safety": _rec([1, 1], [1, 1])}, "s_eval": {"safety": _rec([1, 1], [1, 1])}},
                method="lori_s")
    data, groups, _ = merge_parts([main, off], [0, 1])
    assert list(groups) == ["lori_s", "official:lori_s"]
    assert groups["official:lori_s"]["stages"] == ["official/base_eval", "official/s_eval"]
    assert data[0]["evals"]["official/s_eval"]["safety"]["judge"] == "qi2023_keyword"
    report = build_seed_report([0, 1], data, groups)
    rows = report["comparisons"]
    # only the row after training, only the primary metric: not the base row, not NLL
    assert [(r["row"], r["which"], r["metric"]) for r in rows] == [(1, "primary", "refusal_rate")]
    assert rows[0]["mean_a"] == 0.0 and rows[0]["mean_b"] == 1.0 and rows[0]["n_seeds"] == 2


@pytest.mark.slow  # ~60 s: 2 seeds x (our chain + the official chain) on the tiny model
def test_seeds_run_with_a_method_under_the_official_protocol(tmp_path):
    import json

    from test_seeds import FAST

    from workbench.cli import main
    from workbench.models.tiny import save_tiny_llama

    tiny = save_tiny_llama(tmp_path / "model")
    out = tmp_path / "out"
    rc = main(["run", "safety->math", "--seeds", "0,1", "--compare", "official:lori_s", "--out", str(out), "--quiet",
               "--set", *FAST, f"base.model={tiny}"])
    assert rc == 0
    for part in (out, out / "official"):
        assert sorted(p.name for p in part.glob("seed-*")) == ["seed-0", "seed-1"]
        assert json.loads((part / "seed-1" / "manifest.json").read_text())["stages"]
    assert "protocol: official" in (out / "official" / "seed-0" / "pipeline.resolved.yaml").read_text()
    report = json.loads((out / "report" / "report.json").read_text())
    assert list(report["forgetting"]) == ["lori_s", "official:lori_s"]
    assert (out / "official" / "report" / "report.json").is_file()
    rows = report["comparisons"]
    assert rows and all(r["which"] == "primary" and r["row"] > 0 for r in rows)
    assert all(r["a"] == "lori_s" and r["b"] == "official:lori_s" for r in rows)


def test_a_task_scored_by_nll_alone_is_not_compared_across_protocols():
    from workbench.analytics.seed_report import build_seed_report

    nll_rec = {"primary": "nll", "higher_is_better": False, "metrics": {"nll": 1.0}, "per_prompt": {}}
    shape = {"tasks": ["math"], "stages": ["base_eval", "m_eval"], "learned_at": [1]}
    main = _part("", {"lori_s": shape, "lora": shape}, {"base_eval": {"math": nll_rec}, "m_eval": {"math": nll_rec}})
    main["groups"] = {"lori_s": shape, "lora": {**shape, "stages": ["base_eval", "l_eval"]}}
    for s in (0, 1):
        main["data"][s]["evals"] = {"base_eval": {"math": nll_rec}, "m_eval": {"math": nll_rec},
                                    "l_eval": {"math": {**nll_rec, "metrics": {"nll": 1.5 + s}}}}
    off = _part("official", {"x": shape}, {"base_eval": {"math": nll_rec}, "m_eval": {"math": nll_rec}},
                method="lori_s")
    data, groups, _ = merge_parts([main, off], [0, 1])
    rows = build_seed_report([0, 1], data, groups)["comparisons"]
    assert rows and all(r["b"] == "lora" and r["a"] == "lori_s" for r in rows)  # within the main protocol only
