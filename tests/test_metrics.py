"""Pure metric functions: GSM8K extraction, pass@k, the keyword judge, NLU labels, seed summaries;
and each kind's evaluator through a fake runner and a fake task."""

import math
from itertools import combinations

import pytest

from workbench.evaluate.api import evaluate_task, summarize_seeds
from workbench.evaluate.metrics import KINDS, select_records
from workbench.evaluate.metrics.code import build_program, extract_code, mean_pass_at_k, pass_at_k
from workbench.evaluate.metrics.math import exact_match, extract_number, numbers_equal
from workbench.evaluate.metrics.nlu import accuracy, extract_label, pick_by_loglik
from workbench.evaluate.metrics.safety import CallableJudge, Judge, KeywordJudge, refusal_rate

GSM8K_CASES = [
    ("The answer is 18.", 18.0),
    ("She pays $1,234.50 in total.", 1234.5),
    ("It drops to -7 degrees", -7.0),
    ("5 - 3 = 2, so 2 apples", 2.0),
    ("First 3 then 4 then finally 12", 12.0),
    ("#### 42\nActually 41 later", 42.0),
    ("Reasoning 3*4=12 ... #### 1,000", 1000.0),
    ("So \\boxed{36} is it, check 35", 36.0),
    ("Lists 1,2,3", 3.0),
    ("costs .5 dollars", 0.5),
    ("x-2 and y", 2.0),
    ("no number here", None),
    ("18.0", 18.0),
]


@pytest.mark.parametrize("text,expected", GSM8K_CASES)
def test_gsm8k_extraction(text, expected):
    assert extract_number(text) == expected


def test_numeric_comparison():
    assert numbers_equal(18.0, "18") and numbers_equal(1000.0, "1,000") and numbers_equal(-3.0, "-3")
    assert not numbers_equal(None, "18") and not numbers_equal(18.5, "18")
    assert exact_match(["The answer is 18.", "#### 7", "nothing"], ["18", "8", "1"]) == pytest.approx(1 / 3)


def _brute_pass_at_k(n, c, k):
    # Probability that a random k-subset of n samples (c correct) contains a correct one.
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 2), (6, 1, 3), (6, 5, 2), (7, 0, 4), (10, 3, 5)])
def test_pass_at_k_matches_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edges_and_stability():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(200, 0, 100) == 0.0 and pass_at_k(200, 150, 100) == 1.0
    assert 0.0 < pass_at_k(1000, 1, 10) < 1.0 and math.isfinite(pass_at_k(1000, 1, 10))
    assert pass_at_k(1000, 1, 10) == pytest.approx(0.01)
    assert mean_pass_at_k([(1, 1), (1, 0)], 1) == 0.5
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_humaneval_program_assembly():
    record = {"prompt": "def add(a, b):\n    \"\"\"Add.\"\"\"\n", "entry_point": "add",
              "test": "def check(f):\n    assert f(2, 3) == 5\n"}
    continuation = build_program(record, "    return a + b\n")
    chat = build_program(record, "Sure!\n```python\ndef add(a, b):\n    return a + b\n```\nDone.")
    assert "return a + b" in continuation and continuation.rstrip().endswith("check(add)")
    assert chat.count("def add") == 2
    for program in (continuation, chat):
        exec(compile(program, "<prog>", "exec"), {})  # the real sandbox is tested in test_sandbox.py
    assert extract_code("```\nx = 1\n```", "f") == "x = 1\n"


def test_keyword_judge_cases():
    judge = KeywordJudge()
    assert isinstance(judge, Judge)
    refusals = ["I'm sorry, but I can't help with that.", "I cannot provide instructions for that.",
                "As an AI language model, I must decline.", "I\u2019m sorry, no.", "That is illegal."]
    answers = ["Sure! Here are three tips for staying healthy.", "The capital of France is Paris.", ""]
    assert all(judge.judge("p", r) for r in refusals)
    assert not any(judge.judge("p", a) for a in answers)
    assert refusal_rate(["p"] * 4, refusals[:2] + answers[:2]) == 0.5


def test_callable_judge_hook():
    seen = []
    judge = CallableJudge(lambda p, r: seen.append((p, r)) or r.startswith("NO"), name="llm")
    assert refusal_rate(["a", "b"], ["NO way", "ok"], judge) == 0.5 and seen == [("a", "NO way"), ("b", "ok")]


@pytest.mark.parametrize("text,labels,expected", [
    ("the correct answer is answer2", ["answer1", "answer2", "answer3"], "answer2"),
    ("answer3 or maybe answer1", ["answer1", "answer2", "answer3"], "answer3"),
    ("I think it is true, not false", ["true", "false"], "true"),
    ("False.", ["true", "false"], ""),  # case-sensitive, as in LLM-Adapters
    ("solution2", ["solution1", "solution2"], "solution2"),
    ("ending4!", ["ending1", "ending2", "ending3", "ending4"], "ending4"),
    ("option1", ["option1", "option2"], "option1"),
    ("nothing useful", ["option1", "option2"], ""),
])
def test_nlu_label_extraction(text, labels, expected):
    assert extract_label(text, labels) == expected


def test_nlu_accuracy_and_loglik_pick():
    assert accuracy(["a", "b", ""], ["a", "c", "d"]) == pytest.approx(1 / 3)
    assert pick_by_loglik([[-3.0, -1.0], [-0.5, -2.0, -0.1]], [["x", "y"], ["p", "q", "r"]]) == ["y", "r"]


def test_select_records_is_seeded_and_ordered():
    records = [{"i": i} for i in range(50)]
    a, b, c = select_records(records, 10, 0), select_records(records, 10, 0), select_records(records, 10, 1)
    assert a == b and a != c and len(a) == 10
    assert [r["i"] for r in a] == sorted(r["i"] for r in a)
    assert select_records(records, None, 3) == records and select_records(records, 99, 3) == records


def test_summarize_seeds_mean_and_std():
    mean, std = summarize_seeds([{"metrics": {"acc": 0.2}}, {"metrics": {"acc": 0.4}}, {"metrics": {"acc": 0.6}}])
    assert mean["acc"] == pytest.approx(0.4) and std["acc"] == pytest.approx(0.2)
    assert summarize_seeds([{"metrics": {"acc": 0.5}}])[1]["acc"] == 0.0


class FakeTask:
    """The data layer's Task interface, with hand-made records."""

    def __init__(self, name, kind, splits, heldout=None):
        self.name, self.kind, self._splits = name, kind, splits
        self._heldout = heldout or [{"prompt": "q", "response": "a"}]

    def eval_splits(self, data_dir=None):
        return list(self._splits)

    def eval_records(self, split, limit=None, data_dir=None):
        return self._splits[split][:limit] if limit else list(self._splits[split])

    def heldout_pairs(self, limit=None, data_dir=None):
        return self._heldout[:limit] if limit else list(self._heldout)


class FakeRunner:
    """Answers from a lookup table; records what was asked."""

    raw_prompts, nlu_mode, judge, sandbox_limits = True, "generate", None, None

    def __init__(self, answers, scores=None):
        self.answers, self.scores, self.asked = answers, scores or {}, []
        from workbench.evaluate.generate import GenerationConfig

        self.gen = GenerationConfig()

    def for_kind(self, max_new_tokens=256, stop=()):
        return self

    def format(self, instruction, input=""):
        return instruction

    def generate(self, prompts, seed=0):
        self.asked += prompts
        return [self.answers.get(p.split("\n")[-1].strip(), self.answers.get(p, "")) for p in prompts]

    def option_logprobs(self, contexts, options):
        return [self.scores[c] for c in contexts]

    def response_nll(self, pairs):
        return {"nll": 1.5, "perplexity": math.exp(1.5), "tokens": 3, "n": len(pairs)}


def test_evaluate_task_math_and_safety_with_fake_runner():
    math_task = FakeTask("m", "math", {"test": [{"prompt": "1+1?", "answer": "2"}, {"prompt": "2+2?", "answer": "4"}]})
    runner = FakeRunner({"1+1?": "It is 2.", "2+2?": "#### 5"})
    result = evaluate_task(None, None, math_task, runner=runner, seeds=(0, 1))
    assert result["metrics"]["accuracy"] == 0.5 and result["primary"] == "accuracy"
    assert result["metrics"]["nll"] == 1.5 and result["settings"]["seeds"] == [0, 1]
    assert len(result["details"]["per_seed"]) == 2

    safety = FakeTask("s", "safety", {"harmful": [{"prompt": "bad1"}, {"prompt": "bad2"}],
                                      "benign": [{"prompt": "good1"}, {"prompt": "good2"}]})
    runner = FakeRunner({"bad1": "I cannot help.", "bad2": "Sure, here is how", "good1": "Paris.",
                         "good2": "I'm sorry, I can't."})
    metrics = evaluate_task(None, None, safety, runner=runner)["metrics"]
    assert metrics["refusal_rate"] == 0.5 and metrics["benign_answer_rate"] == 0.5


def test_evaluate_task_nlu_both_modes_and_code():
    rec = {"prompt": "Pick one", "answer": "answer2", "options": ["answer1", "answer2"]}
    nlu = FakeTask("n", "nlu", {"boolq": [{"prompt": "T?", "answer": "true", "options": ["true", "false"]}],
                                "arc": [rec]})
    runner = FakeRunner({"T?": "false", "Pick one": "the correct answer is answer2"},
                        scores={"T?the correct answer is": [-0.1, -3.0], "Pick onethe correct answer is": [-2.0, -1.0]})
    gen = evaluate_task(None, None, nlu, runner=runner, heldout=False)["metrics"]
    assert gen == {"accuracy/boolq": 0.0, "accuracy/arc": 1.0, "accuracy": 0.5}
    ll = evaluate_task(None, None, nlu, runner=runner, heldout=False, mode="loglik")["metrics"]
    assert ll["accuracy"] == 1.0

    record = {"task_id": "t/0", "prompt": "def inc(x):\n    \"\"\"+1\"\"\"\n", "entry_point": "inc",
              "test": "def check(f):\n    assert f(1) == 2\n", "canonical_solution": "    return x + 1\n"}
    code = FakeTask("c", "code", {"test": [record]})
    good = FakeRunner({"def inc(x):": "```python\ndef inc(x):\n    return x + 1\n```"})
    good.generate = lambda prompts, seed=0: ["```python\ndef inc(x):\n    return x + 1\n```"] * len(prompts)
    assert evaluate_task(None, None, code, runner=good, heldout=False)["metrics"]["pass@1"] == 1.0
    good.generate = lambda prompts, seed=0: ["    return x + 2\n"] * len(prompts)
    assert evaluate_task(None, None, code, runner=good, heldout=False)["metrics"]["pass@1"] == 0.0


def test_every_kind_is_registered_with_a_primary_metric():
    assert set(KINDS.names()) == {"safety", "math", "code", "nlu", "custom"}
    for name in KINDS:
        assert KINDS.entry(name).extra["primary"]
