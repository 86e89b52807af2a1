"""GSM8K exact match on the final number (Cobbe et al. 2021, arXiv:2110.14168).

Extraction follows the usual GSM8K practice (LLM-Adapters ``evaluate.py``, LoRI's math evaluation): drop
thousands separators, take the last number in the output, compare numerically. Two refinements, both
because instruction-tuned outputs write them: a ``#### <number>`` marker (the GSM8K training format) wins
over any later number, and a trailing sentence period is not a decimal point ("The answer is 18.").
"""

from __future__ import annotations

import math
import re

from workbench.evaluate.metrics.registry import register_kind, select_records

# A number: a minus sign unless it joins two words ("5-3", "x-2"), then digits with well-formed thousands
# groups ("1,234"; "1,2,3" is three numbers), then decimals only when digits follow the dot ("18." is 18).
_NUMBER = r"(?:(?<!\w)-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?:(?<!\w)-)?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_MARKER_RE = re.compile(r"(?:####|\\boxed\{)\s*\$?\s*(" + _NUMBER + ")")
TOLERANCE = 1e-4


def _to_float(token: str) -> float | None:
    token = token.replace(",", "").rstrip(".")
    try:
        return float(token)
    except ValueError:
        return None


def extract_number(text: str) -> float | None:
    """The final numeric answer in a model output, or None when it holds no number.

    Args:
        text: the generated text.

    Returns:
        The number after the first ``####`` marker (or ``\\boxed{``) if there is one, else the last number.
    """
    marked = _MARKER_RE.search(text)
    if marked:
        return _to_float(marked.group(1))
    for token in reversed(_NUMBER_RE.findall(text)):
        value = _to_float(token)
        if value is not None:
            return value
    return None


def numbers_equal(pred: float | None, answer: str | float) -> bool:
    """Numeric comparison with a small tolerance (18 == 18.0; "1,000" == 1000)."""
    if pred is None:
        return False
    gold = _to_float(str(answer)) if isinstance(answer, str) else float(answer)
    return gold is not None and math.isclose(pred, gold, rel_tol=0.0, abs_tol=TOLERANCE)


def exact_match(outputs: list[str], answers: list[str]) -> float:
    """Fraction of outputs whose extracted final number equals the reference answer."""
    if len(outputs) != len(answers):
        raise ValueError(f"{len(outputs)} outputs but {len(answers)} answers")
    if not outputs:
        return float("nan")
    return sum(numbers_equal(extract_number(o), a) for o, a in zip(outputs, answers)) / len(outputs)


@register_kind("math", primary="accuracy", max_new_tokens=320)
def evaluate_math(runner, task, limit: int | None, seed: int) -> dict:
    """GSM8K-style accuracy on the task's ``test`` split."""
    records = select_records(task.eval_records("test"), limit, seed)
    outputs = runner.generate([runner.format(r["prompt"], r.get("input", "")) for r in records], seed=seed)
    acc = exact_match(outputs, [r["answer"] for r in records])
    samples = [{"answer": r["answer"], "extracted": extract_number(o), "output": o}
               for r, o in zip(records[:3], outputs[:3])]
    return {"metrics": {"accuracy": acc}, "details": {"test": {"n": len(records), "accuracy": acc}, "samples": samples}}
