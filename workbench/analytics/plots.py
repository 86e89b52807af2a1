"""PNG figures for the report (matplotlib, headless): pure functions from the report dict to PNG bytes.

``matplotlib.figure.Figure`` is used directly, never pyplot, so nothing depends on a display, a global
backend or pyplot's figure registry (safe in a server or a worker thread).

Colour scales: a metric that is constant over every pair and module (``report["constants"]``, e.g. the
A overlap of a chain's stages, 1 by construction) gets no panel, nor does a panel that would be one colour
(the single pair of two adapters: the table has its value); signed metrics (the ΔW cosine, an NLL
change) use a diverging map centred on 0; colour bars show as many digits as the range needs, never an
offset. Panels of one quantity (the per-stage loss curves) share their axis.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator

from workbench.analytics.constants import is_constant

LABELS = {
    "a_mean_sq_cos": "lora_A subspace: mean cos²", "b_mean_sq_cos": "lora_B subspace: mean cos²",
    "delta_cosine": "cosine of deltas", "abs_delta_cosine": "|cosine of deltas|",
    "interference": "interference |ΔW_col P_A(row)|/|ΔW_col|", "cross_energy": "linear-merge cross energy",
    "mask_jaccard": "mask Jaccard",
}
CURVES = ("a_mean_sq_cos", "b_mean_sq_cos", "delta_cosine", "interference")
BASELINES = {"a_mean_sq_cos": "a_random_baseline", "b_mean_sq_cos": "b_random_baseline",
             "interference": "interference_baseline"}
SIGNED = {"delta_cosine"}
CONSTANCY = {"abs_delta_cosine": "delta_cosine"}  # a grid metric -> the pair metric whose constancy it shares


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # constrained layout already fits; "tight" would draw twice
    return buf.getvalue()


def as_array(rows) -> np.ndarray:
    """A list of lists with None as a float array with NaN (drawn blank)."""
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float).reshape(len(rows), -1)


def varying_metrics(report: dict, metrics) -> list[str]:
    """The ``metrics`` that are not constant over the report's pairs and modules (the ones to draw)."""
    constant = report.get("constants") or {}
    return [m for m in metrics if CONSTANCY.get(m, m) not in constant]


def flat(rows) -> bool:
    """A panel of one colour: its defined values are all equal (e.g. the one pair of two adapters)."""
    values = [v for r in rows for v in r if v is not None]
    return len(set(values)) <= 1 or is_constant(values)


def tick_format(lo: float, hi: float) -> str:
    """A ``%g`` format with as many digits as the range ``lo..hi`` needs to tell its ticks apart."""
    scale, spread = max(abs(lo), abs(hi)), hi - lo
    extra = math.ceil(math.log10(scale / spread)) if spread > 0 and scale > 0 else 0
    return f"%.{3 + max(0, extra)}g"


def _norm(values: np.ndarray, signed: bool):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Normalize(0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if signed:
        lim = max(abs(lo), abs(hi)) or 1.0
        return TwoSlopeNorm(0.0, -lim, lim)
    return Normalize(lo, hi) if hi > lo else Normalize(lo - 0.5, hi + 0.5)


def heatmap(ax, values: np.ndarray, xlabels, ylabels, title: str, annotate: bool, *, signed: bool = False,
             norm=None, cmap: str | None = None, label: str = "", text=None) -> None:
    """Draw ``values`` (NaN blank) on ``ax`` with a colour bar.

    Args:
        signed: a diverging map centred on 0 (else viridis over the data range).
        norm, cmap: override the colour scale (e.g. one shared by several panels).
        label: the colour bar's label.
        text: ``(i, j) -> str`` for the annotation of a cell (default: the value, 3 digits).
    """
    norm = norm or _norm(values, signed)
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap or ("RdBu_r" if signed else "viridis"), norm=norm,
                   aspect="auto")
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter(tick_format(norm.vmin, norm.vmax)))
    if label:
        bar.set_label(label, fontsize=8)
    ax.set_xticks(range(len(xlabels)), [str(x) for x in xlabels], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(ylabels)), [str(y) for y in ylabels], fontsize=8)
    ax.set_title(title, fontsize=9)
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                shade = norm(v)
                # the ends of viridis (yellow) and of RdBu (pale middle) want dark text
                dark = abs(shade - 0.5) < 0.3 if signed else shade > 0.6
                ax.text(j, i, text(i, j) if text else f"{v:.3g}", ha="center", va="center", fontsize=7,
                        color="k" if dark else "w")


def _grid_of(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, n)
    return -(-n // cols), cols


def pair_heatmaps(report: dict) -> bytes | None:
    """Adapter x adapter heatmaps of every varying pair metric; None with fewer than two adapters."""
    mats = report["matrices"]
    names = mats["names"]
    metrics = [m for m in varying_metrics(report, [k for k in mats if k != "names"]) if not flat(mats[m])]
    if len(names) < 2 or not metrics:
        return None
    rows, cols = _grid_of(len(metrics))
    fig = Figure(layout="constrained", figsize=(4.6 * cols, 3.8 * rows))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        heatmap(ax, as_array(mats[metric]), names, names, LABELS.get(metric, metric), len(names) <= 8,
                 signed=metric in SIGNED)
    fig.suptitle("adapter x adapter means over modules; asymmetric ones: row = subspace / B owner, column = update / A owner",
                 fontsize=10)
    return to_png(fig)


def layer_projection_heatmap(report: dict) -> bytes | None:
    """Layer x projection heatmaps of the varying grid metrics (mean over pairs); None without pairs."""
    grid = report["grid"]
    metrics = [m for m in varying_metrics(report, [k for k in grid if k not in ("layers", "projections")])
               if not flat(grid[m])]
    if not grid.get("layers") or not metrics:
        return None
    layers, projs = grid["layers"], grid["projections"]
    rows, cols = _grid_of(len(metrics))
    fig = Figure(layout="constrained", figsize=(4.4 * cols, rows * max(3.0, 0.2 * len(layers) + 1.6)))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        heatmap(ax, as_array(grid[metric]), projs, layers, LABELS.get(metric, metric), False)
        ax.set_ylabel("layer" if k % cols == 0 else "")
    fig.suptitle("layer x projection, mean over adapter pairs", fontsize=10)
    return to_png(fig)


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
    """Per-layer curves of the varying metrics (one line per pair, dashed random baseline); None without pairs."""
    pairs = [p for p in report["pairs"] if p["summary"]["per_layer"]]
    metrics = varying_metrics(report, CURVES)
    if not pairs or not metrics:
        return None
    rows, cols = _grid_of(len(metrics), 2)
    fig = Figure(layout="constrained", figsize=(5 * cols, 3.5 * rows))
    for k, metric in enumerate(metrics):
        _curve(fig.add_subplot(rows, cols, k + 1), pairs, metric)
    fig.axes[0].legend(fontsize=7)
    return to_png(fig)


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
    return to_png(fig)


FIGURES = {"pair_heatmaps.png": pair_heatmaps, "layer_projection.png": layer_projection_heatmap,
           "layer_curves.png": layer_curves, "spectrum.png": spectrum_curves}


def render_all(report: dict) -> dict[str, bytes]:
    """Every figure that applies to this report: file name -> PNG bytes (the run figures first)."""
    from workbench.analytics.run_plots import RUN_FIGURES

    out = {}
    for name, draw in {**RUN_FIGURES, **FIGURES}.items():
        png = draw(report)
        if png is not None:
            out[name] = png
    return out
