"""Commonsense NLU accuracy per subtask (BoolQ, PIQA, SIQA, ARC-c/e, OBQA, WinoGrande, HellaSwag).

Two ways to pick the model's answer:

- ``generate`` (the paper's): LLM-Adapters' ``commonsense_evaluate.py`` ``extract_answer``, as used by
  LoRI: the first occurrence in the output of any valid label of the subtask (``true``/``false``,
  ``solution1``, ``answer3``, ``option2``, ``ending4``), case-sensitive; no label means wrong.
- ``loglik`` (for small models, whose free text rarely contains a label): score each option's
  log-probability as the continuation of the prompt plus the answer prefix the training data uses ("the
  correct answer is"), and pick the maximum (lm-evaluation-harness style multiple choice).
"""

from __future__ import annotations

import re

from workbench.evaluate.metrics.registry import per_prompt, register_kind, select_records
from workbench.evaluate.model_inputs import model_inputs

ANSWER_PREFIX = "the correct answer is"


def extract_label(text: str, labels: list[str]) -> str:
    """The first valid label occurring in ``text`` (leftmost; the longest on a tie), or "" when none does."""
    if not labels:
        return ""
    pattern = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    match = re.search(pattern, text.strip())
    return match.group(0) if match else ""


def accuracy(predictions: list[str], answers: list[str]) -> float:
    """Fraction of exact label matches (NaN for no items)."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
    return sum(p == a for p, a in zip(predictions, answers)) / len(answers) if answers else float("nan")


def pick_by_loglik(option_scores: list[list[float]], options: list[list[str]]) -> list[str]:
    """For each item, the option with the highest log-probability (the first on ties)."""
    return [opts[max(range(len(opts)), key=lambda i: scores[i])] for scores, opts in zip(option_scores, options)]


def _predict(runner, records: list[dict], mode: str, seed: int) -> tuple[list[str], list[str]]:
    # preformatted records (template lori_official) carry their exact prompt and BOS rule
    runner, prompts = model_inputs(runner, records)
    options = [list(r["options"]) for r in records]
    if mode == "loglik":
        contexts = [f"{p}{ANSWER_PREFIX}" for p in prompts]
        scores = runner.option_logprobs(contexts, [[f" {o}" for o in opts] for opts in options])
        return pick_by_loglik(scores, options), [""] * len(records)
    if mode != "generate":
        raise ValueError(f"nlu mode must be 'generate' or 'loglik', got '{mode}'")
    outputs = runner.generate(prompts, seed=seed)
    return [extract_label(o, opts) for o, opts in zip(outputs, options)], outputs


@register_kind("nlu", primary="accuracy", max_new_tokens=32)
def evaluate_nlu(runner, task, limit: int | None, seed: int, mode: str | None = None) -> dict:
    """Accuracy per subtask split and their unweighted mean (the paper's average).

    ``mode``: "generate" or "loglik"; default is the runner's ``nlu_mode`` (itself "generate").
    """
    mode = mode or getattr(runner, "nlu_mode", "generate")
    details, per_split, outcomes = {"mode": mode}, {}, {}
    for split in task.eval_splits():
        records = select_records(task.eval_records(split), limit, seed)
        predictions, outputs = _predict(runner, records, mode, seed)
        per_split[split] = accuracy(predictions, [r["answer"] for r in records])
        outcomes[f"accuracy/{split}"] = per_prompt(records, [p == r["answer"] for p, r in zip(predictions, records)])
        details[split] = {"n": len(records), "accuracy": per_split[split],
                          "samples": [{"answer": r["answer"], "predicted": p, "output": o}
                                      for r, p, o in zip(records[:2], predictions[:2], outputs[:2])]}
    metrics = {f"accuracy/{s}": v for s, v in per_split.items()}
    metrics["accuracy"] = sum(per_split.values()) / len(per_split) if per_split else float("nan")
    if len(outcomes) == 1:  # with several subtasks "accuracy" is a mean of rates, not one per-prompt mean
        outcomes["accuracy"] = next(iter(outcomes.values()))
    return {"metrics": metrics, "details": details, "per_prompt": outcomes}
