"""The run figures of a chain's report: the forgetting matrices (held-out NLL and the primary metric side
by side) and the per-stage training curves. Pure functions from the report dict to PNG bytes, drawn with
the helpers of :mod:`workbench.analytics.plots`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from workbench.analytics.constants import is_constant
from workbench.analytics.overview import row_label, signed
from workbench.analytics.plots import as_array, heatmap, to_png


def _row_labels(f: dict) -> list[str]:
    return [row_label(f, r, "base model") for r in range(len(f["stages"]))]


def _change_from_first(values: np.ndarray) -> np.ndarray:
    """Each column minus its first measured value (NaN where unmeasured)."""
    out = np.full_like(values, np.nan)
    for j in range(values.shape[1]):
        col = values[:, j]
        measured = np.flatnonzero(np.isfinite(col))
        if measured.size:
            out[:, j] = col - col[measured[0]]
    return out


def _box_learned(ax, f: dict) -> None:
    """Outline each task's cell on the row that trained it: forgetting is read from there downwards."""
    for j, r in enumerate(f.get("learned_at") or []):
        if r is not None:
            ax.add_patch(Rectangle((j - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="k", lw=1.6))


def _nll_panel(ax, f: dict, rows: list[str]) -> None:
    nll = as_array(f["nll"])
    change = _change_from_first(nll)
    heatmap(ax, change, f["tasks"], rows, "held-out NLL after each stage", len(rows) * len(f["tasks"]) <= 80,
            signed=True, label="change from the first row (red: worse)",
            text=lambda i, j: f"{nll[i, j]:.3f}\n{signed(change[i, j])}")
    _box_learned(ax, f)


def _primary_panel(ax, f: dict, rows: list[str]) -> None:
    values = as_array(f["matrix"])
    finite = values[np.isfinite(values)]
    # rates share one 0..1 scale, so a 0.3 reads the same in every column
    norm = Normalize(0.0, 1.0) if finite.min() >= 0 and finite.max() <= 1 else None
    metrics = f.get("metrics") or {}
    xlabels = [f"{t}\n{metrics[t]}" if t in metrics else t for t in f["tasks"]]
    hib = f.get("higher_is_better") or {}
    label = "score (higher is better)" if all(hib.get(t, True) for t in f["tasks"]) else "score"
    heatmap(ax, values, xlabels, rows, f"{f['metric']} after each stage", len(rows) * len(f["tasks"]) <= 80,
            norm=norm, label=label)
    _box_learned(ax, f)


def forgetting_heatmap(report: dict) -> bytes | None:
    """Stage x task heatmaps: held-out NLL (coloured by its change, annotated with value and change) beside
    the primary metric; a matrix that is one value everywhere gets no panel. None when neither applies."""
    f = report.get("forgetting")
    if not f or not f["tasks"] or not f["stages"]:
        return None
    panels = []
    if f.get("nll") and np.isfinite(as_array(f["nll"])).any():
        panels.append(_nll_panel)
    primary = [v for row in f["matrix"] for v in row if v is not None]
    if primary and not is_constant(primary, 0.0):
        panels.append(_primary_panel)
    if not panels:
        return None
    rows = _row_labels(f)
    fig = Figure(layout="constrained", figsize=(len(panels) * (1.3 * len(f["tasks"]) + 3.2), 0.55 * len(rows) + 2.2))
    for k, draw in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        draw(ax, f, rows)
        ax.set_xlabel("task", fontsize=8)
        ax.set_ylabel("after stage" if k == 0 else "", fontsize=8)
    return to_png(fig)


def _training_panel(ax, s: dict) -> None:
    steps = np.arange(1, len(s["loss"]) + 1)
    if s["span"] > 1:
        ax.plot(steps, s["loss"], color="0.75", lw=0.8, label="batch loss")
        ax.plot(steps, s["smoothed"], color="C0", lw=2, label=f"smoothed (EMA, span {s['span']})")
    else:  # too few steps to smooth
        ax.plot(steps, s["loss"], color="C0", lw=2, marker=".", label="batch loss (too few steps to smooth)")
    before, after = s["heldout_before"], s["heldout_after"]
    if before is not None and after is not None:
        ax.plot([0, len(steps)], [before, after], ":", color="C3", lw=1)
    if before is not None:
        ax.plot([0], [before], "o", color="C3", label="held-out NLL before / after")
    if after is not None:
        ax.plot([len(steps)], [after], "s", color="C3", label=None if before is not None else "held-out NLL after")
    title = f"{s['name']}" + (f" ({s['task']})" if s["task"] and s["task"] != s["name"] else "")
    if before is not None and after is not None:
        title += f": held-out {before:.3f} → {after:.3f}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def training_curves(report: dict) -> bytes | None:
    """One panel per training stage (shared loss axis): the batch loss, its smoothed curve, and the
    held-out NLL of the stage's task before (step 0) and after (last step). None without training data."""
    stages = report.get("training") or []
    if not stages:
        return None
    cols = min(3, len(stages))
    rows = -(-len(stages) // cols)
    fig = Figure(layout="constrained", figsize=(4.4 * cols, 3.1 * rows))
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax, s in zip(axes, stages):
        _training_panel(ax, s)
    for ax in axes[len(stages):]:
        ax.set_visible(False)
    axes[0].set_ylabel("loss / NLL per token", fontsize=8)
    axes[0].legend(fontsize=7)
    return to_png(fig)


RUN_FIGURES = {"forgetting.png": forgetting_heatmap, "training.png": training_curves}
