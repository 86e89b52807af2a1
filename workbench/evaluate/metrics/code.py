"""HumanEval functional correctness: pass@k (Chen et al. 2021, arXiv:2107.03374).

Each completion is assembled into a program (prompt + completion + the task's tests + ``check(entry)``)
and run in :mod:`workbench.evaluate.sandbox`; it passes when the program exits 0 within the limits **and**
its tests ran to the end (a random sentinel printed after ``check(...)``, see
:mod:`workbench.evaluate.humaneval`: an early ``sys.exit(0)`` or ``os._exit(0)`` is a failure).
pass@k uses the paper's unbiased estimator over ``n`` samples with ``c`` correct.

Two prompt styles, chosen by the records: the workbench's (chat models: an instruction wrapper, code
taken from a fenced block) and, for a ``template="lori_official"`` task, the official harness's (the raw
prompt stripped, plain completion, the harness's stop words, ``workbench.evaluate.humaneval``).
"""

from __future__ import annotations

import dataclasses
import re

from workbench.evaluate.humaneval import STOP_WORDS, check_program, new_sentinel, run_checks
from workbench.evaluate.metrics.registry import per_prompt, register_kind, select_records
from workbench.evaluate.sandbox import SandboxLimits

OFFICIAL_KS = (1, 5, 10, 100)  # bigcode/bigcode_eval/tasks/humaneval.py line 50
_FENCE_RE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: 1 - C(n-c, k) / C(n, k), as a running product (no huge binomials).

    Raises:
        ValueError: ``k`` is not in 1..n, or ``c`` not in 0..n.
    """
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def mean_pass_at_k(counts: list[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given ``(n, c)`` per problem."""
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) if counts else float("nan")


def extract_code(response: str, entry_point: str) -> str:
    """The code in a response: the first fenced block that defines ``entry_point`` (else the first block),
    or the raw text when there is no fence (a plain continuation of the prompt)."""
    blocks = _FENCE_RE.findall(response)
    for block in blocks:
        if re.search(rf"def\s+{re.escape(entry_point)}\s*\(", block):
            return block
    return blocks[0] if blocks else response


def build_program(record: dict, response: str) -> str:
    """The HumanEval program for one response. A response that (re)defines the entry point follows the
    prompt, whose docstring-only function is then shadowed; otherwise it continues the prompt's body."""
    code = extract_code(response, record["entry_point"])
    defines = re.search(rf"def\s+{re.escape(record['entry_point'])}\s*\(", code)
    body = f"{record['prompt']}\n    pass\n\n{code}" if defines else record["prompt"] + code
    return f"{body}\n\n{record['test']}\n\ncheck({record['entry_point']})\n"


def run_programs(programs: list[str], limits: SandboxLimits | None = None, workers: int | None = None) -> list[bool]:
    """Run programs in the sandbox, a few at a time; True for each that exited 0 after its last line ran."""
    sentinel = new_sentinel()
    marked = [f"{p}\nprint({sentinel!r}, flush=True)\n" for p in programs]
    return [o.passed for o in run_checks(marked, sentinel, limits, workers)]


def _with_stop(runner, stop: tuple[str, ...]):
    """A copy of a dataclass runner whose generation also stops at ``stop`` (test doubles pass through)."""
    gen = getattr(runner, "gen", None)
    if not dataclasses.is_dataclass(runner) or gen is None:
        return runner
    return dataclasses.replace(runner, gen=dataclasses.replace(gen, stop=tuple(dict.fromkeys((*gen.stop, *stop)))))


def _official_passed(runner, records: list[dict], n_samples: int, seed: int) -> list[bool]:
    """The official harness's way: stripped prompt in, plain completion out, cut at its stop words."""
    from workbench.evaluate.model_inputs import model_inputs

    runner, inputs = model_inputs(runner, records)
    runner = _with_stop(runner, STOP_WORDS)
    outputs = runner.generate([p for p in inputs for _ in range(n_samples)], seed=seed)
    sentinel = new_sentinel()
    programs = [check_program(inputs[i // n_samples] + o, records[i // n_samples], sentinel)
                for i, o in enumerate(outputs)]
    return [o.passed for o in run_checks(programs, sentinel, getattr(runner, "sandbox_limits", None))]


@register_kind("code", primary="pass@1", max_new_tokens=384)
def evaluate_code(runner, task, limit: int | None, seed: int, n_samples: int = 1,
                  ks: tuple[int, ...] | None = None) -> dict:
    """pass@k on the ``test`` split with ``n_samples`` generations per problem (sampling when > 1).

    Args:
        n_samples: generations per problem (the official protocol: 20, with sampling on in the runner).
        ks: the k of pass@k, kept where k <= n_samples; default (1,), and bigcode's (1, 5, 10, 100) for
            records of a ``template="lori_official"`` task.
    """
    from workbench.data.prompts import CODE_INSTRUCTION

    records = select_records(task.eval_records("test"), limit, seed)
    official = bool(records) and records[0].get("template") == "lori_official"
    ks = tuple(ks) if ks is not None else OFFICIAL_KS if official else (1,)
    if official:
        passed = _official_passed(runner, records, n_samples, seed)
    else:
        prompts = [runner.format(CODE_INSTRUCTION, r["prompt"]) for r in records for _ in range(n_samples)]
        outputs = runner.generate(prompts, seed=seed)
        programs = [build_program(records[i // n_samples], o) for i, o in enumerate(outputs)]
        passed = run_programs(programs, getattr(runner, "sandbox_limits", None))
    counts = [(n_samples, sum(passed[i * n_samples:(i + 1) * n_samples])) for i in range(len(records))]
    metrics = {f"pass@{k}": mean_pass_at_k(counts, k) for k in ks if k <= n_samples}
    per_task = {r["task_id"]: c for r, (_, c) in zip(records, counts)}
    # one sample per problem: pass@1 is a mean of one 0/1 outcome per problem (more samples: not binary)
    outcomes = {"pass@1": per_prompt(records, [c for _, c in counts])} if n_samples == 1 and "pass@1" in metrics else {}
    return {"metrics": metrics, "details": {"test": {"n": len(records), "n_samples": n_samples, **metrics},
                                            "correct_per_task": per_task, "prompt_style": "lori_official" if official
                                            else "workbench", "stop_words": list(STOP_WORDS) if official else []},
            "per_prompt": outcomes}
