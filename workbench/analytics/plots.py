"""PNG figures for the report (matplotlib, headless): pure functions from the report dict to PNG bytes.

``matplotlib.figure.Figure`` is used directly, never pyplot, so nothing depends on a display, a global
backend or pyplot's figure registry (safe in a server or a worker thread).
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

LABELS = {
    "a_mean_sq_cos": "lora_A subspace: mean cos²", "b_mean_sq_cos": "lora_B subspace: mean cos²",
    "delta_cosine": "cosine of deltas", "abs_delta_cosine": "|cosine of deltas|",
    "interference": "interference |ΔW_col P_A(row)|/|ΔW_col|", "cross_energy": "linear-merge cross energy",
    "mask_jaccard": "mask Jaccard",
}
CURVES = ("a_mean_sq_cos", "b_mean_sq_cos", "delta_cosine", "interference")
BASELINES = {"a_mean_sq_cos": "a_random_baseline", "b_mean_sq_cos": "b_random_baseline",
             "interference": "interference_baseline"}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # constrained layout already fits; "tight" would draw twice
    return buf.getvalue()


def _array(rows) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float).reshape(len(rows), -1)


def _heatmap(ax, values: np.ndarray, xlabels, ylabels, title: str, annotate: bool) -> None:
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(xlabels)), [str(x) for x in xlabels], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(ylabels)), [str(y) for y in ylabels], fontsize=8)
    ax.set_title(title, fontsize=9)
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                bright = im.norm(v) > 0.6  # viridis turns yellow: dark text stays readable there
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color="k" if bright else "w")


def pair_heatmaps(report: dict) -> bytes | None:
    """Adapter x adapter heatmaps of every pair-matrix metric; None with fewer than two adapters."""
    mats = report["matrices"]
    names, metrics = mats["names"], [k for k in mats if k != "names"]
    if len(names) < 2:
        return None
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = Figure(layout="constrained", figsize=(4.6 * cols, 3.8 * rows))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        _heatmap(ax, _array(mats[metric]), names, names, LABELS.get(metric, metric), len(names) <= 8)
    fig.suptitle("adapter x adapter means over modules; asymmetric ones: row = subspace / B owner, column = update / A owner",
                 fontsize=10)
    return _png(fig)


def layer_projection_heatmap(report: dict) -> bytes | None:
    """Layer x projection heatmaps of the grid metrics (mean over pairs); None without pairs."""
    grid = report["grid"]
    metrics = [k for k in grid if k not in ("layers", "projections")]
    if not grid.get("layers"):
        return None
    layers, projs = grid["layers"], grid["projections"]
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = Figure(layout="constrained", figsize=(4.4 * cols, rows * max(3.0, 0.2 * len(layers) + 1.6)))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        _heatmap(ax, _array(grid[metric]), projs, layers, LABELS.get(metric, metric), False)
        ax.set_ylabel("layer" if k % cols == 0 else "")
    fig.suptitle("layer x projection, mean over adapter pairs", fontsize=10)
    return _png(fig)


def _curve(ax, pairs: list[dict], metric: str) -> None:
    for p in pairs:
        per_layer = p["summary"]["per_layer"]
        xs = sorted(int(k) for k in per_layer)
        ys = [per_layer[str(x)][metric] for x in xs]
        ax.plot(xs, [np.nan if y is None else y for y in ys], marker=".", label=f"{p['a']} / {p['b']}")
    base = BASELINES.get(metric)
    if base and pairs:
        per_layer = pairs[0]["summary"]["per_layer"]
        xs = sorted(int(k) for k in per_layer)
        ys = [per_layer[str(x)][base] for x in xs]
        ax.plot(xs, [np.nan if y is None else y for y in ys], "k--", lw=1, label="random baseline")
    ax.set_title(LABELS.get(metric, metric), fontsize=9)
    ax.set_xlabel("layer", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def layer_curves(report: dict) -> bytes | None:
    """Per-layer curves (one line per pair, dashed random baseline); None without pairs."""
    pairs = [p for p in report["pairs"] if p["summary"]["per_layer"]]
    if not pairs:
        return None
    fig = Figure(layout="constrained", figsize=(10, 7))
    for k, metric in enumerate(CURVES):
        _curve(fig.add_subplot(2, 2, k + 1), pairs, metric)
    fig.axes[0].legend(fontsize=7)
    return _png(fig)


def spectrum_curves(report: dict) -> bytes | None:
    """Mean effective rank of each adapter's deltas per layer; None when no module has a layer index."""
    fig = Figure(layout="constrained", figsize=(6, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for a in report["adapters"]:
        per_layer = a["summary"]["per_layer_effective_rank"]
        if per_layer:
            xs = sorted(int(k) for k in per_layer)
            ax.plot(xs, [np.nan if per_layer[str(x)] is None else per_layer[str(x)] for x in xs], marker=".", label=a["name"])
            drawn = True
    if not drawn:
        return None
    ax.set_title("effective rank of ΔW (Roy & Vetterli), mean over projections", fontsize=9)
    ax.set_xlabel("layer", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def forgetting_heatmap(report: dict) -> bytes | None:
    """Stage x task heatmap of the forgetting matrix; None when none was given."""
    f = report.get("forgetting")
    if not f or not f["tasks"] or not f["stages"]:
        return None
    fig = Figure(layout="constrained", figsize=(1.2 * len(f["tasks"]) + 3, 0.6 * len(f["stages"]) + 2))
    ax = fig.add_subplot(1, 1, 1)
    _heatmap(ax, _array(f["matrix"]), f["tasks"], f["stages"], f"{f['metric']} after each stage", True)
    ax.set_xlabel("task", fontsize=8)
    ax.set_ylabel("after stage", fontsize=8)
    return _png(fig)


FIGURES = {"pair_heatmaps.png": pair_heatmaps, "layer_projection.png": layer_projection_heatmap,
           "layer_curves.png": layer_curves, "spectrum.png": spectrum_curves, "forgetting.png": forgetting_heatmap}


def render_all(report: dict) -> dict[str, bytes]:
    """Every figure that applies to this report: file name -> PNG bytes."""
    out = {}
    for name, draw in FIGURES.items():
        png = draw(report)
        if png is not None:
            out[name] = png
    return out
