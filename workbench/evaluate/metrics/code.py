"""HumanEval functional correctness: pass@k (Chen et al. 2021, arXiv:2107.03374).

Each completion is assembled into a program (prompt + completion + the task's tests + ``check(entry)``)
and run in :mod:`workbench.evaluate.sandbox`; it passes when the program exits 0 within the limits.
pass@k uses the paper's unbiased estimator over ``n`` samples with ``c`` correct.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

from workbench.evaluate.metrics.registry import register_kind, select_records
from workbench.evaluate.sandbox import SandboxLimits, run_python

CODE_INSTRUCTION = "Complete the following Python function. Reply with the full function in a Python code block."
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
    """Run programs in the sandbox, a few at a time; True for each that passed."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r.passed for r in pool.map(lambda p: run_python(p, limits), programs)]


@register_kind("code", primary="pass@1", max_new_tokens=384)
def evaluate_code(runner, task, limit: int | None, seed: int, n_samples: int = 1, ks: tuple[int, ...] = (1,)) -> dict:
    """pass@k on the ``test`` split with ``n_samples`` generations per problem (sampling when > 1)."""
    records = select_records(task.eval_records("test"), limit, seed)
    prompts = [runner.format(CODE_INSTRUCTION, r["prompt"]) for r in records for _ in range(n_samples)]
    outputs = runner.generate(prompts, seed=seed)
    programs = [build_program(records[i // n_samples], o) for i, o in enumerate(outputs)]
    passed = run_programs(programs, getattr(runner, "sandbox_limits", None))
    counts = [(n_samples, sum(passed[i * n_samples:(i + 1) * n_samples])) for i in range(len(records))]
    metrics = {f"pass@{k}": mean_pass_at_k(counts, k) for k in ks if k <= n_samples}
    per_task = {r["task_id"]: c for r, (_, c) in zip(records, counts)}
    return {"metrics": metrics, "details": {"test": {"n": len(records), "n_samples": n_samples, **metrics},
                                            "correct_per_task": per_task}}
