"""The ``custom`` kind: a user's own instruction data, scored by held-out NLL only.

:func:`workbench.evaluate.api.evaluate_task` adds the held-out NLL for every task; a custom task has no
task-specific metric beyond it, so its evaluator returns none and its primary metric is ``nll``.
"""

from __future__ import annotations

from workbench.evaluate.metrics.registry import register_kind


@register_kind("custom", primary="nll", higher_is_better=False)
def evaluate_custom(runner, task, limit: int | None, seed: int) -> dict:
    """No generation: the held-out NLL (added by ``evaluate_task``) is the metric."""
    return {"metrics": {}, "details": {}}
