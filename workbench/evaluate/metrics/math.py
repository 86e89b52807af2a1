"""GSM8K exact match on the final number (Cobbe et al. 2021, arXiv:2110.14168).

Extraction follows the usual GSM8K practice (LLM-Adapters ``evaluate.py``, LoRI's math evaluation): drop
thousands separators, take the last number in the output, compare numerically. Two refinements, both
because instruction-tuned outputs write them: a ``#### <number>`` marker (the GSM8K training format) wins
over any later number, and a trailing sentence period is not a decimal point ("The answer is 18.").

``extraction="lori_official"`` (the default for records of a ``template="lori_official"`` task) is the
official LoRI rule instead, juzhengz/LoRI @ 9183468 ``src/eval_model.py`` lines 174-196 and 208-213:
on the decoded prompt plus response with commas removed, the first number after the first ``The final
answer is: `` if there is one, else the last number of the whole text (the pattern ``-?[0-9]+[.]?[0-9]*``; no number:
infinity), compared with ``==`` as floats against the same extraction of the target.
"""

from __future__ import annotations

import math
import re

from workbench.evaluate.metrics.registry import per_prompt, register_kind, select_records

# A number: a minus sign unless it joins two words ("5-3", "x-2"), then digits with well-formed thousands
# groups ("1,234"; "1,2,3" is three numbers), then decimals only when digits follow the dot ("18." is 18).
_NUMBER = r"(?:(?<!\w)-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?:(?<!\w)-)?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_MARKER_RE = re.compile(r"(?:####|\\boxed\{)\s*\$?\s*(" + _NUMBER + ")")
_OFFICIAL_NUMBER_RE = re.compile(r"-?\d+\.?\d*")  # src/eval_model.py line 176
EXTRACTIONS = ("workbench", "lori_official")
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


def extract_gsm8k_official(text: str) -> float:
    """The official LoRI GSM8K answer of a text (see the module docstring); ``inf`` when it has no number.

    Args:
        text: what the official code extracts from: the decoded prompt plus response for a model output,
            the target for the reference.
    """
    from workbench.data.lori_official import ANSWER_PROMPT

    text = text.replace(",", "")
    numbers = _OFFICIAL_NUMBER_RE.findall(text)
    if not numbers:
        return float("inf")
    segments = text.split(ANSWER_PROMPT)
    after = _OFFICIAL_NUMBER_RE.findall(segments[1]) if len(segments) > 1 else []
    return float(after[0] if after else numbers[-1])


def official_correct(model_input: str, output: str, answer: str) -> bool:
    """Whether the official rule scores ``output`` (after ``model_input``) right for the final ``answer``."""
    from workbench.data.lori_official import ANSWER_PROMPT

    return extract_gsm8k_official(model_input + output) == extract_gsm8k_official(ANSWER_PROMPT + str(answer))


@register_kind("math", primary="accuracy", max_new_tokens=320)
def evaluate_math(runner, task, limit: int | None, seed: int, extraction: str | None = None) -> dict:
    """GSM8K-style accuracy on the task's ``test`` split.

    Args:
        extraction: ``workbench`` or ``lori_official`` (module docstring); default ``lori_official`` for
            records preformatted with that template, else ``workbench``.
    """
    from workbench.evaluate.model_inputs import model_inputs

    records = select_records(task.eval_records("test"), limit, seed)
    runner, inputs = model_inputs(runner, records)
    outputs = runner.generate(inputs, seed=seed)
    extraction = extraction or ("lori_official" if records and records[0].get("template") == "lori_official"
                                else "workbench")
    if extraction == "lori_official":
        correct = [official_correct(i, o, r["answer"]) for i, o, r in zip(inputs, outputs, records)]
        extracted = [extract_gsm8k_official(i + o) for i, o in zip(inputs[:3], outputs[:3])]
    elif extraction == "workbench":
        correct = [numbers_equal(extract_number(o), r["answer"]) for r, o in zip(records, outputs)]
        extracted = [extract_number(o) for o in outputs[:3]]
    else:
        raise ValueError(f"math extraction must be one of {', '.join(EXTRACTIONS)}, got {extraction!r}")
    acc = sum(correct) / len(correct) if correct else float("nan")  # = exact_match(outputs, answers)
    samples = [{"answer": r["answer"], "extracted": e, "output": o}
               for r, e, o in zip(records[:3], extracted, outputs[:3])]
    return {"metrics": {"accuracy": acc},
            "details": {"test": {"n": len(records), "accuracy": acc}, "samples": samples, "extraction": extraction},
            "per_prompt": {"accuracy": per_prompt(records, correct)}}
