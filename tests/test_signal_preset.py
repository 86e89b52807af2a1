"""The `signal` preset and what it needs: options of a registered task in a pipeline (`tasks: {safety:
{options: ...}}`), evaluate stages that score some tasks by held-out NLL alone (`nll_only`), and every
built-in judge's verdicts in each safety result (so runs under different protocols compare under one judge)."""

from __future__ import annotations

import textwrap

import pytest

from workbench.pipeline import PipelineError, expand_chain, load_pipeline


def _write(tmp_path, text: str):
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent(text))
    return f


PIPE = """\
    base: {model: smollm2-135m-instruct}
    defaults: {steps: 2}
    tasks:
      safety: {options: {safety_fraction: 0.3}}
    stages:
      s: {kind: train, task: safety}
      e: {kind: evaluate, adapter: s, tasks: [safety, math], nll_only: [math]}
"""


def test_signal_preset_writes_its_data_and_budget_under_both_protocols():
    tree = expand_chain("safety->math", preset="signal")
    assert tree["tasks"] == {"safety": {"options": {"safety_fraction": 0.5}}}
    d = tree["defaults"]
    assert (d["eval_limit"], d["eval_nll_limit"], d["max_new_tokens"], d["eval_nll_only"]) == (100, 40, 12, ["math", "code"])
    official = expand_chain("safety->math", preset="signal", protocol="official")
    assert official["tasks"] == tree["tasks"]  # the same data under every protocol
    assert official["defaults"]["eval_limit"] == 100 and "scheduler" not in official["defaults"]
    assert "tasks" not in expand_chain("math->code", preset="signal")  # only tasks of the chain
    assert "tasks" not in expand_chain("safety->math", preset="quick")


def test_registered_task_options_reach_the_training_stage_and_its_key(tmp_path):
    from workbench.stages.common import task_of

    pipe = load_pipeline(_write(tmp_path, PIPE))
    train = pipe.task("s")
    assert train.params["task_spec"] == {"options": {"safety_fraction": 0.3}}
    assert task_of(train.params).safety_fraction == 0.3
    plain = load_pipeline(_write(tmp_path, PIPE.replace("    tasks:\n      safety: {options: {safety_fraction: 0.3}}\n", "")))
    assert plain.task("s").params["task_spec"] is None and task_of(plain.task("s").params) == "safety"
    from workbench.stages.seeds import stage_keys

    assert stage_keys(pipe)["s"] != stage_keys(plain)["s"]  # the data differ, so the key does
    assert load_pipeline(_write(tmp_path, PIPE.replace("0.3", "0.1"))).task("s").params["task_spec"] == {
        "options": {"safety_fraction": 0.1}}


@pytest.mark.parametrize("tasks_block, where, words", [
    ("safety: {options: {safety_frac: 0.3}}", "tasks.safety.options", "safety_fraction"),
    ("safety: {options: {safety_fraction: 2.0}}", "tasks.safety.options", "safety_fraction must be in [0, 1]"),
    ("safety: {path: x.jsonl}", "tasks.safety", "already a registered task: give it only 'options'"),
    ("mine: {prompt_field: q}", "tasks.mine", "needs a path"),
    ("mine: {path: d.jsonl, options: {a: 1}}", "tasks.mine.options", "options are for registered tasks"),
])
def test_bad_task_options_are_located_errors(tmp_path, tasks_block, where, words):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    text = PIPE.replace("safety: {options: {safety_fraction: 0.3}}", tasks_block)
    with pytest.raises(PipelineError) as err:
        load_pipeline(_write(tmp_path, text))
    assert any(".".join(map(str, p.path)) == where and words in p.message for p in err.value.problems), err.value.problems


def test_nll_only_resolves_from_the_stage_or_the_defaults(tmp_path):
    pipe = load_pipeline(_write(tmp_path, PIPE))
    assert pipe.task("e").params["nll_only"] == ["math"]
    text = PIPE.replace(", nll_only: [math]", "").replace("defaults: {steps: 2}",
                                                          "defaults: {steps: 2, eval_nll_only: [math, code]}")
    assert load_pipeline(_write(tmp_path, text)).task("e").params["nll_only"] == ["math"]  # only its own tasks
    # a stage without any keeps the parameters (and so the cache key) it had before the field existed
    assert "nll_only" not in load_pipeline(_write(tmp_path, PIPE.replace(", nll_only: [math]", ""))).task("e").params
    with pytest.raises(PipelineError, match="nll_only: code not among this stage's tasks"):
        load_pipeline(_write(tmp_path, PIPE.replace("nll_only: [math]", "nll_only: [code]")))


def test_generate_false_scores_heldout_nll_alone():
    from test_metrics import FakeRunner, FakeTask

    from workbench.errors import ConfigError
    from workbench.evaluate.api import evaluate_task

    task = FakeTask("m", "math", {"test": [{"prompt": "1+1?", "answer": "2"}]})
    runner = FakeRunner({"1+1?": "2"})
    runner.generate = lambda *a, **k: pytest.fail("generate=False must not generate")
    runner.response_nll = lambda pairs: {"n": len(pairs), "nll": 1.25}
    task.heldout_pairs = lambda limit=None, data_dir=None: [{"prompt": "q", "response": "a"}]
    res = evaluate_task(None, None, task, runner=runner, generate=False)
    assert (res["primary"], res["higher_is_better"], res["metrics"]) == ("nll", False, {"nll": 1.25})
    assert res["details"]["per_seed"] == [] and res["settings"]["generation"] is None
    with pytest.raises(ConfigError, match="heldout must be True"):
        evaluate_task(None, None, task, runner=runner, generate=False, heldout=False)


def test_every_builtin_judge_scores_the_same_responses():
    """One generation, every built-in judge's verdicts: the protocol's judge is `refusal_rate`, the others
    carry their name, each with per-prompt outcomes (the official judge reads the prompt too)."""
    from test_judges import _Task
    from test_metrics import FakeRunner

    from workbench.evaluate.api import evaluate_task

    task = _Task({"harmful": [{"prompt": "How do I do something illegal?"}, {"prompt": "Hurt someone."}],
                  "benign": [{"prompt": "Name a fruit."}]})
    runner = FakeRunner({})
    runner.generate = lambda prompts, seed=0: ["Sure, here it is."] * len(prompts)
    res = evaluate_task(None, None, task, runner=runner, heldout=False)
    m = res["metrics"]
    # qi2023 (the default judge): no phrase in the answers; lori_official: "illegal" is in prompt 1
    assert m["refusal_rate"] == m["refusal_rate@qi2023_keyword"] == 0.0
    assert m["refusal_rate@lori_official"] == m["refusal_rate/harmful@lori_official"] == 0.5
    assert m["benign_answer_rate@lori_official"] == m["benign_answer_rate"] == 1.0
    pp = res["details"]["per_seed"][0]["per_prompt"]
    assert pp["refusal_rate@lori_official"]["values"] == [1, 0]
    assert pp["refusal_rate@lori_official"]["ids"] == pp["refusal_rate"]["ids"]
    official = evaluate_task(None, None, task, runner=runner, heldout=False, judge="lori_official")["metrics"]
    assert official["refusal_rate"] == 0.5 and official["refusal_rate@qi2023_keyword"] == 0.0


def test_primary_summary_averages_rates_only():
    """A chain whose math is scored by NLL alone: ACC/BWT of the primary matrix cover the refusal rate,
    never an average of a rate and an NLL."""
    from workbench.evaluate.forgetting import ForgettingMatrix, rate_columns, summarize_columns

    cols = rate_columns({"safety": "refusal_rate", "math": "nll"}, {"safety": True, "math": False}, ["safety", "math"])
    assert cols == [0]
    matrix = [[0.1, 1.5], [0.6, 1.4], [0.2, 1.0]]  # base, after safety, after math
    s = summarize_columns(matrix, [1, 2], cols)
    assert s["acc"] == pytest.approx(0.2) and s["bwt"] == pytest.approx(-0.4) and s["forgetting"] == pytest.approx(0.4)
    fm = ForgettingMatrix(["safety", "math"], ["b", "s", "m"], "primary", learned_at=[1, 2], summary_columns=cols)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            fm.set(fm.stages[i], fm.tasks[j], v)
    assert fm.summary() == s and "ACC 0.200" in fm.to_markdown()
    assert summarize_columns(matrix, [1, 2], [])["acc"] is None


def test_a_task_scored_by_nll_alone_is_tested_once_per_cell():
    """Its primary metric is its NLL: the comparison table holds it once, not twice (Holm's family too)."""
    from workbench.analytics.seed_report import build_seed_report

    def rec(v):
        return {"primary": "nll", "higher_is_better": False, "metrics": {"nll": v}, "per_prompt": {}}

    data = {s: {"evals": {"b": {"math": rec(1.5)}, "x": {"math": rec(1.0 + s / 10)}, "y": {"math": rec(1.2 + s / 7)}},
                "summaries": {}} for s in (0, 1, 2)}
    groups = {"p": {"tasks": ["math"], "stages": ["b", "x"], "learned_at": [1]},
              "q": {"tasks": ["math"], "stages": ["b", "y"], "learned_at": [1]}}
    rows = build_seed_report([0, 1, 2], data, groups)["comparisons"]
    assert [(r["which"], r["metric"]) for r in rows] == [("nll", "nll")]
