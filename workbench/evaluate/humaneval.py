"""HumanEval scored as the official harnesses score it, in the workbench sandbox.

What is reproduced, and from where:

- the sample format and the results file of openai/human-eval (``human_eval/evaluation.py``): samples
  are JSON lines ``{"task_id", "completion"}``; the program is ``prompt + completion + "\\n" + test +
  "\\n" + "check(entry_point)"``; ``SAMPLES_results.jsonl`` repeats every sample, in order, with
  ``result`` (``passed``, ``timed out`` or ``failed: ...``) and ``passed``; pass@k for k in (1, 10, 100)
  where every problem has at least k samples; every problem must be attempted unless told otherwise;
- the unbiased pass@k estimator of Chen et al. 2021 (arXiv:2107.03374) in its numerically stable
  product form (:func:`workbench.evaluate.metrics.code.pass_at_k`);
- the decoding the LoRI scripts use (juzhengz/LoRI @ 9183468): ``scripts/codealpaca_*.sh`` pass
  ``--temperature 0.2 --n_samples 20`` to ``bigcode/main.py``, whose defaults give ``top_p`` 0.95,
  ``top_k`` 0 and sampling on (``bigcode/bigcode_eval/arguments.py`` lines 16-31) and ``max_length``
  512 for prompt **plus** generation (``bigcode/main.py`` lines 90-95, ``generation.py`` line 73); the
  stop words of ``bigcode/bigcode_eval/tasks/humaneval.py`` line 52 plus the tokenizer's EOS
  (``generation.py`` lines 78-79); the prompt is the problem's prompt stripped (lines 32, 64-69).

One addition, the reason this module exists rather than calling the harness: a program passes only if
its tests ran to the end. The harness ``exec``s the program in-process, so an early ``sys.exit(0)`` or
``raise SystemExit`` raises ``SystemExit`` (a failure) and ``os._exit(0)`` kills the worker (a
timeout). Our sandbox runs a real process, where those exits are status 0; so every program ends with
a line that prints a random per-run sentinel after ``check(...)``, and a run passes only with exit
status 0 **and** the sentinel in its output. Code written to cheat deliberately (reading its own source
for the sentinel) is not defended against; the sandbox's limits still hold (``SANDBOX.md``).

Deliberate deviations: the sandbox's wall-clock limit (10 s by default; the harness uses 3 s, pass
``limits`` to match it) and its output cap (a program printing more than 1 MiB fails; the harness
swallows output).
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from workbench.errors import ConfigError, WorkbenchError
from workbench.evaluate.sandbox import SandboxLimits, run_python

STOP_WORDS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
OFFICIAL_DECODING = {"do_sample": True, "temperature": 0.2, "top_p": 0.95, "n_samples": 20, "max_length": 512}
DEFAULT_KS = (1, 10, 100)
PROBLEM_FIELDS = ("task_id", "prompt", "entry_point", "test")


@dataclass(frozen=True)
class Outcome:
    """One program's verdict, in the harness's words (``passed``, ``timed out``, ``failed: ...``)."""

    passed: bool
    result: str


def new_sentinel() -> str:
    """A random marker printed after the tests (unguessable by a completion, fresh per run)."""
    return f"WB-TESTS-COMPLETED-{secrets.token_hex(16)}"


def check_program(code: str, problem: Mapping, sentinel: str) -> str:
    """The program for one candidate: ``code`` (prompt plus completion), the tests, the check call, and
    the line that prints ``sentinel`` once the check has returned."""
    return f"{code}\n{problem['test']}\ncheck({problem['entry_point']})\nprint({sentinel!r}, flush=True)\n"


def _verdict(res, sentinel: str) -> Outcome:
    if res.status == "timeout":
        return Outcome(False, "timed out")
    if res.status == "output_limit":
        return Outcome(False, "failed: output limit exceeded")
    if res.status != "passed":
        lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
        return Outcome(False, f"failed: {lines[-1].strip() if lines else f'exit status {res.returncode}'}")
    if sentinel not in res.stdout.splitlines():
        return Outcome(False, "failed: exited before the tests finished (status 0 without the completion marker)")
    return Outcome(True, "passed")


def run_checks(programs: list[str], sentinel: str, limits: SandboxLimits | None = None,
               workers: int | None = None) -> list[Outcome]:
    """Run programs from :func:`check_program` in the sandbox, a few at a time, in order.

    Args:
        programs: full programs, each ending with the ``sentinel`` line.
        sentinel: the marker they print after their tests.
        limits: sandbox limits (default :class:`SandboxLimits`).
        workers: concurrent programs (default: the CPU count, at most 8).
    """
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: _verdict(run_python(p, limits), sentinel), programs))


def _jsonl_rows(path: Path) -> list[tuple[str, dict]]:
    """``(file:line, record)`` for a ``.jsonl`` or ``.jsonl.gz`` file; any bad line is an error."""
    from workbench.data.readers import DataError, read_jsonl

    if not path.name.endswith(".gz"):
        return read_jsonl(path, "refuse")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        rows.append((f"{path}:{number}", record))
    return rows


def _fields(where: str, record: dict, fields: tuple[str, ...]) -> dict:
    from workbench.data.readers import DataError

    for field in fields:
        if not isinstance(record.get(field), str):
            raise DataError(f"{where}: field '{field}' missing or not a string")
    return record


def shipped_problems_path() -> Path:
    """The 164 HumanEval problems shipped with the workbench (``workbench/data/samples/code``)."""
    from workbench.data.task import SAMPLES_DIR

    return SAMPLES_DIR / "code" / "humaneval.jsonl"


def read_problems(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """HumanEval problems by ``task_id`` (``.jsonl`` or ``.jsonl.gz``; default: the shipped 164).

    Raises:
        DataError: missing file, a bad line, a missing field, a repeated task id, or no problems.
    """
    from workbench.data.readers import DataError

    path = Path(path) if path is not None else shipped_problems_path()
    problems: dict[str, dict] = {}
    for where, record in _jsonl_rows(path):
        _fields(where, record, PROBLEM_FIELDS)
        if record["task_id"] in problems:
            raise DataError(f"{where}: task_id '{record['task_id']}' appears twice")
        problems[record["task_id"]] = record
    if not problems:
        raise DataError(f"{path}: no problems")
    return problems


def read_samples(path: str | os.PathLike, problems: Mapping[str, dict]) -> list[dict]:
    """Samples ``{"task_id", "completion", ...}`` in file order, each naming a known problem.

    Raises:
        DataError: missing file, bad line, missing field, unknown task id, or no samples.
    """
    from workbench.data.readers import DataError

    samples = []
    for where, record in _jsonl_rows(Path(path)):
        _fields(where, record, ("task_id", "completion"))
        if record["task_id"] not in problems:
            raise DataError(f"{where}: task_id '{record['task_id']}' is not among the problems")
        samples.append(record)
    if not samples:
        raise DataError(f"{path}: no samples")
    return samples


def pass_at_ks(counts: list[tuple[int, int]], ks=DEFAULT_KS) -> dict[str, float]:
    """Mean pass@k over problems from ``(n, c)`` per problem, for each k that every problem allows."""
    from workbench.evaluate.metrics.code import mean_pass_at_k

    return {f"pass@{k}": mean_pass_at_k(counts, k) for k in ks if counts and all(n >= k for n, _ in counts)}


def score_samples(samples_path: str | os.PathLike, problems_path: str | os.PathLike | None = None,
                  ks=DEFAULT_KS, limits: SandboxLimits | None = None, workers: int | None = None,
                  ignore_incomplete: bool = False) -> dict:
    """Score a human-eval sample file and write ``<samples>_results.jsonl`` and ``<samples>_pass_at_k.json``.

    Args:
        samples_path: JSON lines ``{"task_id", "completion"}`` from any generator.
        problems_path: the problems (default: the shipped HumanEval).
        ks: the k of pass@k (kept where every problem has at least k samples).
        limits: sandbox limits.
        workers: concurrent programs.
        ignore_incomplete: allow problems without samples (the harness refuses them by default).

    Returns:
        ``{"pass_at_k": {...}, "problems": n attempted, "samples": n, "passed": n passed, "results": path,
        "summary": path}``.

    Raises:
        DataError: bad input files. WorkbenchError: problems without samples (unless ignored).
    """
    from workbench.io.atomic import atomic_write_json, atomic_write_text

    if any(not isinstance(k, int) or k < 1 for k in ks):
        raise ConfigError(f"k values must be positive integers, got {list(ks)}")
    problems = read_problems(problems_path)
    samples = read_samples(samples_path, problems)
    attempted = sorted({s["task_id"] for s in samples})
    if not ignore_incomplete and len(attempted) < len(problems):
        missing = sorted(set(problems) - set(attempted))
        raise WorkbenchError(f"{samples_path}: {len(missing)} of {len(problems)} problems have no samples "
                             f"(first: {missing[0]}); pass --ignore-incomplete to score the others")
    sentinel = new_sentinel()
    programs = [check_program(problems[s["task_id"]]["prompt"] + s["completion"], problems[s["task_id"]], sentinel)
                for s in samples]
    outcomes = run_checks(programs, sentinel, limits, workers)
    counts = {t: [0, 0] for t in attempted}
    for s, o in zip(samples, outcomes):
        counts[s["task_id"]][0] += 1
        counts[s["task_id"]][1] += int(o.passed)
    scores = pass_at_ks([tuple(c) for c in counts.values()], ks)
    results = f"{samples_path}_results.jsonl"
    atomic_write_text(results, "".join(json.dumps({**s, "result": o.result, "passed": o.passed}) + "\n"
                                       for s, o in zip(samples, outcomes)))
    summary = f"{samples_path}_pass_at_k.json"
    report = {"pass_at_k": scores, "problems": len(attempted), "samples": len(samples),
              "passed": sum(o.passed for o in outcomes), "problems_file": str(problems_path or shipped_problems_path()),
              "results": results, "summary": summary}
    atomic_write_json(summary, report)
    return report
