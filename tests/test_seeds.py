"""Seeds as an axis: `workbench run CHAIN --seeds 0,1,2 --compare lora` on the tiny model writes one
report over the seeds (intervals, paired tests, Holm, in JSON, Markdown and HTML) and runs the base
evaluation once; the report builder on constructed numbers; per-prompt outcomes from the evaluators."""

import glob
import json
import re
from pathlib import Path

import numpy as np
import pytest

from workbench.analytics.seed_report import build_seed_report
from workbench.analytics.seed_tables import render_html, render_md
from workbench.errors import ConfigError
from workbench.stages.seeds import parse_seeds

FAST = ["defaults.steps=2", "defaults.eval_limit=4", "defaults.max_new_tokens=2", "defaults.max_samples=8"]


def test_parse_seeds():
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    for bad in ("0,,1", "a", "1,1", "-1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_seed_override_conflicts_with_seeds():
    from workbench.stages.seeds import stream_seeds

    with pytest.raises(ConfigError, match="defaults.seed"):
        next(stream_seeds("safety->math", "/nonexistent", ["defaults.seed=3"], [0, 1]))


def test_stages_an_earlier_seed_finished_are_adopted_not_rerun(tmp_path):
    """A counting executor (mergekit's test_graph pattern): the seed-independent stage runs once."""
    from workbench.graph.engine import run_all
    from workbench.graph.task import StageResult, Task
    from workbench.stages.seeds import adopt_finished, shared_stages

    calls = []

    def execute(task, inputs, out_dir, context):
        calls.append(task.name)
        (out_dir / "out.txt").write_text(task.params_json)
        return StageResult({"out": out_dir / "out.txt"})

    def tasks(seed):
        base = Task.make("base_eval", "count", {"tasks": ["safety"]})
        return [base, Task.make("train", "count", {"seed": seed}, [("from", base)])]

    run_all(tasks(0), tmp_path / "seed-0", executors={"count": execute})
    assert adopt_finished(tasks(1), tmp_path / "seed-1", [tmp_path / "seed-0"]) == ["base_eval"]
    run_all(tasks(1), tmp_path / "seed-1", executors={"count": execute})
    assert calls == ["base_eval", "train", "train"]
    assert not list((tmp_path / "seed-1" / "stages").glob("base_eval-*"))
    # a changed artifact is not trusted: the next seed reruns the stage instead of adopting it
    (next((tmp_path / "seed-0" / "stages").glob("base_eval-*")) / "out.txt").write_text("tampered")
    assert adopt_finished(tasks(2), tmp_path / "seed-2", [tmp_path / "seed-0", tmp_path / "seed-1"]) == []
    keys = {s: {t.name: t.digest for t in tasks(s)} for s in (0, 1)}
    assert shared_stages(keys) == {0: [], 1: ["base_eval"]}


# ---- the report on constructed numbers -------------------------------------------------------------

SEEDS = [0, 1, 2]
GROUPS = {g: {"tasks": ["safety", "math"], "stages": ["base_eval", f"{g}-safety_eval", f"{g}-math_eval"],
              "learned_at": [1, 2]} for g in ("lori_s", "lora")}


def _record(primary, value, nll, outcomes=None, metric=None):
    rec = {"primary": primary, "higher_is_better": True, "metrics": {primary: value, "nll": nll}, "per_prompt": {}}
    if outcomes is not None:
        rec["per_prompt"][metric or primary] = {"ids": [f"p{i}" for i in range(len(outcomes))],
                                                "values": list(outcomes)}
    return rec


def _constructed():
    """lora's math NLL = lori_s's + 0.1 per seed (+ tiny noise); refusal outcomes identical everywhere."""
    rng = np.random.default_rng(0)
    data = {}
    refusals = [1, 0, 0, 1, 0, 1, 0, 0, 0, 1]
    for s in SEEDS:
        base = 1.0 + 0.05 * s
        evals = {"base_eval": {"safety": _record("refusal_rate", 0.4, 2.0, refusals),
                               "math": _record("accuracy", 0.0, 1.5)}}
        for g, shift in (("lori_s", 0.0), ("lora", 0.1 + rng.normal(0, 1e-3))):
            evals[f"{g}-safety_eval"] = {"safety": _record("refusal_rate", 0.4, 1.9 + 0.01 * s, refusals),
                                         "math": _record("accuracy", 0.0, base + shift)}
            evals[f"{g}-math_eval"] = {"safety": _record("refusal_rate", 0.4, 1.95 + 0.01 * s, refusals),
                                       "math": _record("accuracy", 0.0, base - 0.3 + shift)}
        data[s] = {"evals": evals, "summaries": {g: {"nll": {"bwt": -0.05 - 0.01 * s}} for g in GROUPS}}
    return data


@pytest.fixture(scope="module")
def constructed_report():
    return build_seed_report(SEEDS, _constructed(), GROUPS, runs={s: f"seed-{s}" for s in SEEDS},
                             reused={0: [], 1: ["base_eval"], 2: ["base_eval"]}, pipeline="chain-safety-math")


def _find(report, task, which, row):
    (c,) = [c for c in report["comparisons"] if c["task"] == task and c["which"] == which and c["row"] == row]
    return c


def test_report_finds_the_known_difference_and_not_the_identical_one(constructed_report):
    r = constructed_report
    nll = _find(r, "math", "nll", 2)
    assert nll["test"].startswith("paired t-test") and nll["lo"] <= 0.1 <= nll["hi"] and nll["lo"] > 0
    assert nll["p"] < 0.05 and nll["significant"] and nll["p_holm"] >= nll["p"]
    refusal = _find(r, "safety", "primary", 1)  # identical per-prompt outcomes: McNemar, p = 1
    assert refusal["test"].startswith("exact McNemar") and refusal["p"] == 1.0 and not refusal["significant"]
    assert refusal["discordant"] == [0, 0]
    accuracy = _find(r, "math", "primary", 2)  # no per-prompt outcomes, identical values: by seed, p = 1
    assert accuracy["test"].startswith("paired t-test") and accuracy["p"] == 1.0
    assert all(c["row"] > 0 for c in r["comparisons"])  # the shared base row is not compared
    assert len(r["comparisons"]) == 2 * 2 * 2  # rows 1-2 x tasks x (primary, nll)


def test_cells_carry_n_interval_and_the_bootstrap(constructed_report):
    f = constructed_report["forgetting"]["lora"]
    for which in ("primary", "nll"):
        for row in f[which]:
            for c in row:
                assert c["n"] == 3 and c["lo"] <= c["mean"] <= c["hi"] and len(c["values"]) == 3
    safety = f["primary"][1][0]
    assert safety["interval"] == "bootstrap" and safety["n_prompts"] == 10 and safety["t"]["lo"] == 0.4
    assert safety["lo"] < 0.4 < safety["hi"]  # prompts are a sample: the bootstrap interval is not zero-width
    assert f["nll"][0][0]["lo"] == f["nll"][0][0]["hi"] == 2.0  # the shared base row: width 0
    assert f["summary"]["nll"]["bwt"]["n"] == 3
    sizes = {(s["task"], s["metric"]): s for s in constructed_report["eval_sizes"]}
    assert sizes[("safety", "refusal_rate")]["n"] == 10 and sizes[("safety", "refusal_rate")]["mdd"] is None


def test_markdown_and_html_say_the_same_numbers_and_verdicts(constructed_report):
    r = constructed_report
    md, page = render_md(r), render_html(r)
    sig = r["conclusions"]["significant"]
    assert len(sig) == 2 and r["conclusions"]["headline"].startswith("2 of the 8 differences are significant")
    assert any(s.startswith("lora vs lori_s, math nll after math: lora is higher (worse) by 0.1") for s in sig)
    for sentence in sig + r["conclusions"]["not_significant"]:
        assert sentence in md
        assert sentence.replace("'", "&#x27;") in page or sentence in page
    nll = _find(r, "math", "nll", 2)
    for number in (f"{nll['p_holm']:.3g}", f"{nll['diff']:.3g}", f"{nll['lo']:.3g}"):
        assert number in md and number in page
    assert "Not significant:" in md and "Not significant:" in page
    assert "Run once and reused by the later seeds (they do not depend on the seed): base_eval." in md


# ---- per-prompt outcomes from the evaluators --------------------------------------------------------

class _Task:
    def __init__(self, kind, splits):
        self.name, self.kind, self._splits = kind, kind, splits

    def eval_splits(self, data_dir=None):
        return list(self._splits)

    def eval_records(self, split, limit=None, data_dir=None):
        return list(self._splits[split])


class _Runner:
    raw_prompts, nlu_mode, judge, sandbox_limits = True, "generate", None, None

    def __init__(self, answers):
        from workbench.evaluate.generate import GenerationConfig

        self.answers, self.gen = answers, GenerationConfig()

    def for_kind(self, max_new_tokens=256, stop=()):
        return self

    def format(self, instruction, input=""):
        return instruction

    def generate(self, prompts, seed=0):
        return [self.answers[p] for p in prompts]


def test_evaluators_store_per_prompt_outcomes_matching_their_rates():
    from workbench.evaluate.api import evaluate_task

    safety = _Task("safety", {"harmful": [{"prompt": "bad1"}, {"prompt": "bad2"}, {"prompt": "bad3"}],
                              "benign": [{"prompt": "good1"}, {"prompt": "good2"}]})
    runner = _Runner({"bad1": "I cannot help.", "bad2": "Sure", "bad3": "I'm sorry", "good1": "Paris.", "good2": "Sorry"})
    res = evaluate_task(None, None, safety, runner=runner, heldout=False)
    pp = res["details"]["per_seed"][0]["per_prompt"]
    assert pp["refusal_rate"]["values"] == [1, 0, 1] and pp["benign_answer_rate"]["values"] == [1, 0]
    assert np.mean(pp["refusal_rate"]["values"]) == res["metrics"]["refusal_rate"]
    assert np.mean(pp["benign_answer_rate"]["values"]) == res["metrics"]["benign_answer_rate"]
    assert len(set(pp["refusal_rate"]["ids"])) == 3 and all(re.fullmatch(r"[0-9a-f]{12}", i) for i in pp["refusal_rate"]["ids"])
    math_task = _Task("math", {"test": [{"prompt": "1+1?", "answer": "2"}, {"prompt": "2+2?", "answer": "4"}]})
    res = evaluate_task(None, None, math_task, runner=_Runner({"1+1?": "2", "2+2?": "5"}), heldout=False)
    assert res["details"]["per_seed"][0]["per_prompt"]["accuracy"]["values"] == [1, 0]
    assert res["metrics"]["accuracy"] == 0.5
    opts = ["true", "false"]
    nlu = _Task("nlu", {"boolq": [{"prompt": "T?", "answer": "true", "options": opts}],
                        "piqa": [{"prompt": "A?", "answer": "false", "options": opts},
                                 {"prompt": "B?", "answer": "true", "options": opts}]})
    res = evaluate_task(None, None, nlu, runner=_Runner({"T?": "false", "A?": "false", "B?": "true"}), heldout=False)
    pp = res["details"]["per_seed"][0]["per_prompt"]
    # two subtasks: "accuracy" is the mean of their rates, not a per-prompt mean, so it has no outcomes
    assert pp["accuracy/boolq"]["values"] == [0] and pp["accuracy/piqa"]["values"] == [1, 1] and "accuracy" not in pp


# ---- the acceptance run on the tiny model -----------------------------------------------------------

@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    from workbench.cli import main
    from workbench.models.tiny import save_tiny_llama

    tiny = save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")
    out = tmp_path_factory.mktemp("seeds") / "out"
    rc = main(["run", "safety->math", "--seeds", "0,1,2", "--compare", "lora", "--out", str(out), "--quiet",
               "--set", *FAST, f"base.model={tiny}"])
    assert rc == 0
    return out


@pytest.mark.slow  # ~160 s on the shared 2-core machine: 3 seeds x 2 methods x (train + evaluate) stages
def test_seeds_run_writes_the_aggregated_report(seeds_run):
    out = seeds_run
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["seeds"] == [0, 1, 2] and set(report["forgetting"]) == {"lori_s", "lora"}
    for f in report["forgetting"].values():
        assert f["rows"] == ["base model", "after safety", "after math"]
        for which in ("primary", "nll"):
            for c in (c for row in f[which] for c in row):
                assert c["n"] == 3 and c["lo"] <= c["mean"] <= c["hi"]
        assert f["primary"][1][0]["interval"] == "bootstrap"  # refusal rate: over prompts and seeds
    assert len(report["comparisons"]) == 2 * 2 * 2
    for c in report["comparisons"]:
        assert c["a"] == "lori_s" and c["b"] == "lora" and c["n_seeds"] == 3
        assert "p" in c and 0 <= c["p_holm"] <= 1 and isinstance(c["significant"], bool)
    words = report["conclusions"]
    assert len(words["significant"]) + len(words["not_significant"]) == len(report["comparisons"])
    md, page = (out / "report" / "report.md").read_text(), (out / "report" / "report.html").read_text()
    for c in report["comparisons"]:
        assert f"{c['p_holm']:.3g}" in md and f"{c['p_holm']:.3g}" in page
    assert words["headline"] in md and words["headline"] in page
    assert {s["task"] for s in report["eval_sizes"]} == {"safety", "math"}
    for s in (0, 1, 2):  # each seed is an ordinary run with its own report
        assert (out / f"seed-{s}" / "report" / "forgetting.json").is_file()


@pytest.mark.slow
def test_seeds_differ_and_the_base_evaluation_ran_once(seeds_run):
    out = seeds_run
    assert len(glob.glob(str(out / "seed-*" / "stages" / "base_eval-*"))) == 1  # executed in seed 0 only
    manifests = {s: json.loads((out / f"seed-{s}" / "manifest.json").read_text()) for s in (0, 1, 2)}
    base_dirs = {Path(out / f"seed-{s}", m["stages"]["base_eval"]["dir"]).resolve() for s, m in manifests.items()}
    assert len(base_dirs) == 1
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["reused"] == {"0": [], "1": ["base_eval"], "2": ["base_eval"]}
    keys = {s: m["stages"]["lora-safety"]["key"] for s, m in manifests.items()}
    assert len(set(keys.values())) == 3  # the seed reaches training: three different runs
