"""Per-stage training curves for the report: the per-step batch loss, smoothed, next to the held-out NLL
of the stage's task before and after the stage.

One batch's loss says more about that batch than about training (a run of 16 steps can end on a hard
batch and look as if it got worse), so the report draws a smoothed curve and puts the held-out NLL of
the evaluate stages beside it as the measure of what the stage did. The smoothing is a debiased
exponential moving average (as TensorBoard's), written here because it is four lines and pandas is not a
dependency; its span grows with the run (a fifth of the steps, 1 to 50).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from workbench.errors import FileFormatError


def span(n_steps: int) -> int:
    """The EMA span for a run of ``n_steps``: a fifth of it, at least 1 (no smoothing), at most 50."""
    return max(1, min(50, n_steps // 5))


def ema(values: list[float], window: int) -> list[float]:
    """Debiased exponential moving average with ``beta = 1 - 1/window`` (window 1: the values as they are)."""
    beta, acc, out = 1.0 - 1.0 / window, 0.0, []
    for i, v in enumerate(values):
        acc = beta * acc + (1.0 - beta) * v
        out.append(acc / (1.0 - beta ** (i + 1)) if beta > 0 else v)
    return out


def read_losses(source, where: str) -> list[float]:
    """Per-step losses from a list of numbers, a train_summary dict (``trace``) or its JSON file.

    Raises:
        FileFormatError: unreadable file, no ``trace``, or a loss that is not a finite number.
    """
    if isinstance(source, (str, os.PathLike)):
        from workbench.io.adapter_dir import read_json

        where, source = str(source), read_json(Path(source))
    if isinstance(source, dict):
        if not isinstance(source.get("trace"), list):
            raise FileFormatError(f"{where}: field 'trace' must be the list of training steps")
        source = [t.get("loss") if isinstance(t, dict) else t for t in source["trace"]]
    if not isinstance(source, list):
        raise FileFormatError(f"{where}: expected per-step losses (a list), a train summary or its file")
    for i, v in enumerate(source):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise FileFormatError(f"{where}: step {i + 1}: loss must be a finite number, got {v!r}")
    return [float(v) for v in source]


def _heldout(forgetting: dict | None, adapter: str, task: str | None) -> tuple:
    """Held-out NLL of ``task`` on the row before and the row of the evaluation of ``adapter``."""
    if not forgetting or not forgetting.get("nll") or task not in forgetting["tasks"]:
        return None, None
    rows = forgetting.get("row_adapters") or []
    if adapter not in rows:
        return None, None
    r, j = rows.index(adapter), forgetting["tasks"].index(task)
    before = forgetting["nll"][r - 1][j] if r > 0 else None
    return before, forgetting["nll"][r][j]


def training_section(training: dict, tasks: dict[str, str | None], forgetting: dict | None) -> list[dict]:
    """The report's ``training`` list: one entry per stage that has per-step losses.

    Args:
        training: ``{adapter name: losses}`` (anything :func:`read_losses` reads).
        tasks: adapter name -> the task it was trained on (from its ``workbench.json``), or None.
        forgetting: the report's forgetting JSON; its ``row_adapters`` and ``nll`` give the held-out NLL
            before and after each stage.

    Raises:
        FileFormatError: unreadable losses.
    """
    out = []
    for name, source in training.items():
        losses = read_losses(source, f"training['{name}']")
        if not losses:
            continue
        k = span(len(losses))
        smooth = ema(losses, k)
        before, after = _heldout(forgetting, name, tasks.get(name))
        out.append({"name": name, "task": tasks.get(name), "loss": losses, "smoothed": smooth, "span": k,
                    "smoothed_first": smooth[0], "smoothed_last": smooth[-1],
                    "heldout_before": before, "heldout_after": after})
    return out
