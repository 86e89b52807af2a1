"""The registry of task kinds: one evaluator per kind (safety, math, code, nlu, custom).

An evaluator is ``fn(runner, task, limit, seed) -> {"metrics": {name: float}, "details": {...}}``, plus
``"per_prompt": {metric: {"ids", "values"}}`` for the metrics that are a mean of one 0/1 outcome per prompt
(:func:`per_prompt`; paired tests by prompt and bootstraps over prompts read them). It receives a runner (``workbench.evaluate.runner.Runner`` or any object with the same methods) and never
touches the model itself, so each metric file is testable with a fake runner.
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable

from workbench.registry import Registry

KINDS: Registry[Callable] = Registry("task kind")


def register_kind(kind: str, primary: str, higher_is_better: bool = True, max_new_tokens: int = 256,
                  stop: tuple[str, ...] = ()):
    """Register the evaluator of a task kind.

    Args:
        kind: the ``Task.kind`` it evaluates.
        primary: the metric name that stands for the task (a forgetting-matrix cell, a report column).
        higher_is_better: direction of ``primary``.
        max_new_tokens: the generation length used when the caller leaves it unset.
        stop: default stop strings for this kind.
    """
    return KINDS.register(kind, primary=primary, higher_is_better=higher_is_better,
                          max_new_tokens=max_new_tokens, stop=tuple(stop))


def select_records(records: list[dict], limit: int | None, seed: int) -> list[dict]:
    """All records, or a seeded random subset of ``limit`` of them (the spread over seeds when greedy).

    Raises:
        ValueError: ``limit`` is not positive.
    """
    if limit is None or limit >= len(records):
        return list(records)
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in sorted(order[:limit])]


def per_prompt(records: list[dict], outcomes) -> dict:
    """One metric's per-prompt outcomes: ``{"ids": [...], "values": [0 or 1, ...]}`` in record order.

    An id is the first 12 hex digits of the SHA-1 of the record's prompt and input, so two evaluations
    of the same records (other adapters, other training seeds) pair up by id whatever their order.
    """
    ids = [hashlib.sha1(f"{r.get('prompt', '')}\n\n{r.get('input', '')}".encode("utf-8")).hexdigest()[:12]
           for r in records]
    return {"ids": ids, "values": [int(bool(v)) for v in outcomes]}
