"""HumanEval as the official harness scores it: ``workbench score humaneval`` on human-eval sample files, the
sentinel that makes early exits fail, pass@k, and the official prompt style in the code evaluator."""

from __future__ import annotations

import json
import math
import time

import pytest

from workbench.cli import main
from workbench.data.readers import DataError
from workbench.errors import WorkbenchError
from workbench.evaluate.humaneval import (STOP_WORDS, check_program, new_sentinel, pass_at_ks, read_problems,
                                          run_checks, score_samples)
from workbench.evaluate.sandbox import SandboxLimits, run_python

FAST = SandboxLimits(timeout=3.0, cpu_seconds=3)


def write_samples(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_results(samples: str) -> list[dict]:
    with open(f"{samples}_results.jsonl") as f:
        return [json.loads(line) for line in f]


def test_every_shipped_canonical_solution_passes(tmp_path, capsys):
    problems = read_problems()
    assert len(problems) == 164
    samples = write_samples(tmp_path / "canonical.jsonl",
                            [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()])
    start = time.monotonic()
    assert main(["score", "humaneval", samples]) == 0
    seconds = time.monotonic() - start
    out = capsys.readouterr().out
    assert "164 of 164 samples passed" in out and "pass@1: 1.0000" in out
    results = read_results(samples)
    assert [r["task_id"] for r in results] == list(problems) and all(r["passed"] and r["result"] == "passed"
                                                                      for r in results)
    summary = json.loads((tmp_path / "canonical.jsonl_pass_at_k.json").read_text())
    assert summary["pass_at_k"] == {"pass@1": 1.0} and summary["problems"] == 164
    assert seconds < 60, f"164 programs took {seconds:.0f} s"


BAD = {
    "wrong_return": "    return 0\n",
    "syntax_error": "    return (\n",
    "infinite_loop": "    while True:\n        pass\n",
    "sys_exit": "    import sys\n    sys.exit(0)\n",
    "raise_systemexit": "    raise SystemExit\n",
    "os_exit": "    import os\n    os._exit(0)\n",
}
# Each exit trick runs at import time, before check(): the body calls it when the module runs the function.
EXIT_AT_IMPORT = {
    "sys_exit": "    pass\nimport sys\nsys.exit(0)\n",
    "raise_systemexit": "    pass\nraise SystemExit\n",
    "os_exit": "    pass\nimport os\nos._exit(0)\n",
}


@pytest.mark.parametrize("name", sorted(BAD) + [f"{k}@import" for k in sorted(EXIT_AT_IMPORT)])
def test_bad_completions_fail(tmp_path, name):
    completion = EXIT_AT_IMPORT[name.split("@")[0]] if "@" in name else BAD[name]
    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/2", "completion": completion}])
    report = score_samples(samples, ks=(1,), limits=FAST, ignore_incomplete=True)
    result = read_results(samples)[0]
    assert report["pass_at_k"] == {"pass@1": 0.0} and result["passed"] is False, result
    if name == "infinite_loop":
        assert result["result"] == "timed out"
    else:
        assert result["result"].startswith("failed: ")


def test_without_the_sentinel_the_sandbox_alone_passes_an_early_exit():
    """Why the sentinel exists: exit status 0 before the tests is a 'pass' for a plain process."""
    problem = read_problems()["HumanEval/2"]
    for completion in EXIT_AT_IMPORT.values():
        plain = problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"
        assert run_python(plain, FAST).passed
        sentinel = new_sentinel()
        assert run_checks([check_program(problem["prompt"] + completion, problem, sentinel)], sentinel, FAST) \
            [0].passed is False


def test_results_file_format_and_pass_at_k_over_several_samples(tmp_path):
    problems = read_problems()
    good = problems["HumanEval/0"]["canonical_solution"]
    rows = [{"task_id": "HumanEval/0", "completion": good if i < 3 else "    return None\n", "extra": i}
            for i in range(10)]
    samples = write_samples(tmp_path / "ten.jsonl", rows)
    report = score_samples(samples, ks=(1, 5, 10, 100), limits=FAST, ignore_incomplete=True)
    results = read_results(samples)
    assert [r["extra"] for r in results] == list(range(10))  # in order, every sample field kept
    assert [r["passed"] for r in results] == [True] * 3 + [False] * 7
    assert report["pass_at_k"]["pass@1"] == pytest.approx(0.3)
    assert report["pass_at_k"]["pass@5"] == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert report["pass_at_k"]["pass@10"] == 1.0 and "pass@100" not in report["pass_at_k"]


def test_pass_at_k_estimator_matches_the_binomial_form():
    counts = [(20, 0), (20, 1), (20, 7), (20, 20), (200, 3)]
    got = pass_at_ks(counts, ks=(1, 5, 10, 100))
    for k in (1, 5, 10):
        exact = sum(1 - math.comb(n - c, k) / math.comb(n, k) for n, c in counts) / len(counts)
        assert got[f"pass@{k}"] == pytest.approx(exact, abs=1e-12)
    assert "pass@100" not in got  # not every problem has 100 samples (as human-eval)
    assert pass_at_ks([(2000, 1)], ks=(1000,))["pass@1000"] == pytest.approx(0.5)  # no overflow


def test_incomplete_unknown_and_user_problems(tmp_path):
    samples = write_samples(tmp_path / "one.jsonl", [{"task_id": "HumanEval/0", "completion": "    return True\n"}])
    with pytest.raises(WorkbenchError, match="163 of 164 problems have no samples"):
        score_samples(samples)
    bad = write_samples(tmp_path / "bad.jsonl", [{"task_id": "HumanEval/0", "completion": ""},
                                                 {"task_id": "HumanEval/999", "completion": ""}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: task_id 'HumanEval/999'"):
        score_samples(bad)
    missing = write_samples(tmp_path / "missing.jsonl", [{"task_id": "HumanEval/0"}])
    with pytest.raises(DataError, match=r"missing.jsonl:1: field 'completion'"):
        score_samples(missing)
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"task_id": "t/0", "prompt": "def inc(x):\n", "entry_point": "inc",
                                "test": "def check(f):\n    assert f(1) == 2\n"}) + "\n")
    ok = write_samples(tmp_path / "ok.jsonl", [{"task_id": "t/0", "completion": "    return x + 1\n"}])
    assert main(["score", "humaneval", ok, "--problems", str(mine), "--timeout", "5"]) == 0
    assert read_results(ok)[0]["passed"] is True


# -- the code evaluator ---------------------------------------------------------------------------------------
def test_code_evaluator_fails_early_exits_in_the_default_style():
    from test_metrics import FakeRunner, FakeTask

    from workbench.evaluate.api import evaluate_task

    record = {"task_id": "t/0", "prompt": "def inc(x):\n    \"\"\"+1\"\"\"\n", "entry_point": "inc",
              "test": "def check(f):\n    assert f(1) == 2\n", "canonical_solution": "    return x + 1\n"}
    runner = FakeRunner({})
    runner.generate = lambda prompts, seed=0: ["    return x + 2\nimport sys\nsys.exit(0)\n"] * len(prompts)
    assert evaluate_task(None, None, FakeTask("c", "code", {"test": [record]}), runner=runner,
                         heldout=False)["metrics"]["pass@1"] == 0.0


def test_code_evaluator_official_style_sends_the_stripped_prompt_and_scores_pass_at_k():
    from test_metrics import FakeRunner, FakeTask

    from workbench.data import get_task
    from workbench.evaluate.api import evaluate_task

    task = get_task("code", template="lori_official")
    records = task.eval_records("test")[:2]
    sent = []

    def generate(prompts, seed=0):  # 4 samples per problem, the first one right
        sent.extend(prompts)
        return [("\n" + records[i // 4]["canonical_solution"]) if i % 4 == 0 else "\n    return None\n"
                for i in range(len(prompts))]

    runner = FakeRunner({})
    runner.generate = generate
    result = evaluate_task(None, None, FakeTask("c", "code", {"test": records}), runner=runner, heldout=False,
                           n_samples=4)
    assert sent == [r["prompt"].strip() for r in records for _ in range(4)]
    assert result["metrics"]["pass@1"] == pytest.approx(0.25)
    assert set(result["metrics"]) == {"pass@1"}  # bigcode's k = 1, 5, 10, 100, kept where k <= 4 samples
    assert result["details"]["per_seed"][0]["details"]["prompt_style"] == "lori_official"


def test_official_decoding_settings_reach_generation(tiny_model, tiny_tokenizer):
    from workbench.evaluate.generate import GenerationConfig, generate
    from workbench.stages.evaluate_stage import kind_options, sampling

    params = {"temperature": 0.2, "top_p": 0.95, "samples_per_prompt": 20, "stop": list(STOP_WORDS),
              "max_length": 512, "judge": "lori_official"}
    cfg = GenerationConfig(max_new_tokens=512, **sampling(params))
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.max_length) == (True, 0.2, 0.95, 512)
    assert cfg.stop == STOP_WORDS and sampling({}) == {}
    assert kind_options("code", params) == {"n_samples": 20}
    assert kind_options("safety", params) == {"judge": "lori_official"}
    assert kind_options("math", params) == {}
    prompt = "def add(a, b):"
    n_prompt = len(tiny_tokenizer(prompt)["input_ids"])
    capped = generate(tiny_model, tiny_tokenizer, [prompt],
                      GenerationConfig(max_new_tokens=40, max_length=n_prompt + 3))
    assert capped == generate(tiny_model, tiny_tokenizer, [prompt], GenerationConfig(max_new_tokens=3))  # greedy
    full = generate(tiny_model, tiny_tokenizer, [prompt], GenerationConfig(max_new_tokens=40, max_length=n_prompt))
    assert full == [""]


def test_official_stop_words_reach_the_runner():
    """bigcode/bigcode_eval/tasks/humaneval.py:52; the runner of a lori_official code task stops at them
    and keeps the tokenizer's BOS (the harness tokenizes with the tokenizer's defaults)."""
    from dataclasses import dataclass

    from test_metrics import FakeTask

    from workbench.data import get_task
    from workbench.evaluate.api import evaluate_task
    from workbench.evaluate.runner import Runner

    assert STOP_WORDS == ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
    seen = {}

    @dataclass
    class Recording(Runner):
        def generate(self, prompts, seed=0):
            seen.update(stop=self.gen.stop, add_bos=self.gen.add_bos, prompts=list(prompts))
            return ["\n    return None\n"] * len(prompts)

    records = get_task("code", template="lori_official").eval_records("test")[:1]
    result = evaluate_task(None, None, FakeTask("c", "code", {"test": records}), runner=Recording(None, None),
                           heldout=False)
    assert set(STOP_WORDS) <= set(seen["stop"]) and seen["add_bos"] is True
    assert seen["prompts"] == [records[0]["prompt"].strip()] and result["metrics"]["pass@1"] == 0.0
