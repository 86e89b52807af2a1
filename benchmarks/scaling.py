"""How time and peak memory grow: with the number of adapters, the model shape and the chain length.

Operations, on random adapters (``workbench.testing.random_adapter``; no model is loaded):
  - ``calibrate``: the masks of a chain of N adapters, adapter k excluding the masks of the k before it
    (``workbench.masking.calibration.calibrate``, sparsity 0.95 so that 16 masks fit);
  - ``merge:<strategy>``: every strategy of the registry (``workbench.merges.MERGES``) over N adapters
    (density 0.5 where a strategy needs one; ``lori_disjoint`` gets adapters sharing A, as it requires);
  - ``analyse``: spectra and every pair's subspace and interference metrics
    (``workbench.analytics.pairs.analyse``), N(N-1)/2 pairs;
  - ``data_aware``: every (row, other) pair's energies on each task's input moments
    (``workbench.analytics.data_aware.data_aware``), one task per adapter, random Σ (shared in memory).
Shapes: ``tiny`` (the test model), ``smollm2-135m`` (30 layers, rank 32) and ``llama3-8b`` (rank 32) on
``--8b-layers`` of its 32 layers (default 1), whose time and memory are multiplied by 32 / layers: every
operation works module by module, so it is linear in layers (stated in the output).
Evaluation cost against chain length T: the cells are counted (T tasks after each of T stages, plus the
base row: T(T+1)), and one cell (a custom task, 4 prompts, 8 new tokens) is timed on the tiny model.

Peak memory: every shape runs in a fresh subprocess, and before each operation the kernel's peak-RSS mark
is reset (``/proc/self/clear_refs``, ``workbench.graph.memory.reset_peak_rss``); the peak reported is the
mark after the operation minus the RSS before it, so it counts torch's and Python's allocations alike and
is not inflated by earlier operations (tracemalloc does not see torch's C++ allocations).

Run: ``python benchmarks/scaling.py --out docs/performance.md`` (``--quick``: tiny shape, N = 2 and 4, T = 2).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {"tiny": dict(layers=2, hidden=64, intermediate=128, kv_dim=32, rank=4, full_layers=2),
          "smollm2-135m": dict(layers=30, hidden=576, intermediate=1536, kv_dim=192, rank=32, full_layers=30),
          "llama3-8b": dict(layers=1, hidden=4096, intermediate=14336, kv_dim=1024, rank=32, full_layers=32)}
NS = (2, 4, 8, 16)
CHAINS = (2, 4, 8)
BUDGET_S = 20.0  # an operation slower than this at N is not run at 2N (its growth is already measured)


def make_adapters(shape: dict, n: int, shared_a: bool = False) -> list:
    import torch

    from workbench.testing import llama_shapes, random_adapter

    dims = {k: shape[k] for k in ("layers", "hidden", "intermediate", "kv_dim")}
    r = shape["rank"]
    out = [random_adapter(llama_shapes(**dims), rank=r, alpha=2 * r, seed=i, name=f"task{i}") for i in range(n)]
    if shared_a:  # LoRI: one frozen random A for every task, and B on disjoint positions (entry i mod n)
        for i, a in enumerate(out):
            a.tensors.update({k: v for k, v in out[0].tensors.items() if ".lora_A." in k})
            for k, b in a.tensors.items():
                if ".lora_B." in k:
                    keep = (torch.arange(b.numel()).reshape(b.shape) % n) == i
                    a.tensors[k] = b * keep
    return out


def ops(shape: dict, n: int) -> dict:
    """Operation name -> a no-argument callable doing it over ``n`` adapters of ``shape``."""
    import torch

    from workbench.analytics.data_aware import data_aware
    from workbench.analytics.pairs import analyse
    from workbench.masking.calibration import calibrate
    from workbench.merges import MERGES, merge

    adapters = make_adapters(shape, n)
    shared = make_adapters(shape, n, shared_a=True)
    factors = {a.meta["name"]: a.factors() for a in adapters}

    def chain_masks():
        masks = []
        for a in adapters:
            masks.append(calibrate({k: v for k, v in a.tensors.items() if ".lora_B." in k}, 0.95, exclude=masks))

    g = torch.Generator().manual_seed(0)
    ins = {m: f.A.shape[1] for m, f in factors["task0"].items()}
    sigma = {}
    for m, d in ins.items():
        x = torch.randn(d, d, generator=g) / d ** 0.5
        sigma[m] = x @ x.T  # (in, in), positive semi-definite like a real second moment
    rows = {name: f"data{i}" for i, name in enumerate(factors)}
    moments = {task: sigma for task in rows.values()}  # one Σ in memory, N tasks' worth of work
    table = {"calibrate": chain_masks, "analyse": lambda: analyse(factors),
             "data_aware": lambda: data_aware(factors, rows, moments)}
    for s in MERGES.names():
        pool = shared if s == "lori_disjoint" else adapters
        kw = {"density": 0.5} if "density" in (MERGES.entry(s).params.model_fields if MERGES.entry(s).params else {}) else {}
        table[f"merge:{s}"] = (lambda s=s, pool=pool, kw=kw: merge(pool, s, **kw))
    return table


def measure(fn) -> tuple[float, float | None]:
    """``(seconds, peak MB above the RSS at the start)`` of one call."""
    from workbench.graph.memory import peak_rss_mb, release_memory, reset_peak_rss, rss_mb

    release_memory()
    reset = reset_peak_rss()
    start = rss_mb()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb() - start if reset and start is not None else None
    del result
    gc.collect()
    return seconds, peak


def worker(shape_name: str, ns: list[int], deadline: float = math.inf) -> list[dict]:
    """Every operation at every N for one shape (run in its own process by :func:`main`)."""
    import torch

    torch.set_num_threads(2)
    shape = SHAPES[shape_name]
    factor = shape["full_layers"] / shape["layers"]
    rows, slow = [], set()
    for n in ns:
        table = ops(shape, n)
        for op, fn in table.items():
            if op in slow or time.time() > deadline:
                why = f"over {BUDGET_S:.0f} s at N={n // 2}" if op in slow else "not run: the benchmark's time budget ran out"
                rows.append({"shape": shape_name, "n": n, "op": op, "skipped": why})
                continue
            try:
                seconds, peak = measure(fn)
            except Exception as exc:  # a strategy refusing random adapters: reported, not fatal
                rows.append({"shape": shape_name, "n": n, "op": op, "skipped": f"{type(exc).__name__}: {exc}"[:160]})
                continue
            if seconds > BUDGET_S:
                slow.add(op)
            rows.append({"shape": shape_name, "n": n, "op": op, "seconds": seconds * factor,
                         "peak_mb": None if peak is None else max(peak, 0.0) * factor,
                         "measured_layers": shape["layers"], "full_layers": shape["full_layers"]})
            print(f"  {shape_name} N={n} {op}: {seconds:.3f} s", file=sys.stderr, flush=True)
        del table
        gc.collect()
    return rows


def eval_cells(chains: list[int], workdir: Path) -> list[dict]:
    """Evaluation cost against chain length: T(T+1) cells, one cell timed on the tiny model."""
    import torch

    from workbench.data.tasks.custom import custom_task
    from workbench.evaluate.api import evaluate_task
    from workbench.evaluate.generate import GenerationConfig
    from workbench.graph.memory import peak_rss_mb, reset_peak_rss, rss_mb
    from workbench.models.tiny import tiny_llama

    torch.set_num_threads(2)
    model, tok = tiny_llama()
    path = workdir / "custom.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Say the number {i} twice.", "output": f"{i} {i}"}) + "\n"
                            for i in range(200)))
    task = custom_task("scale_custom", str(path))
    gen = GenerationConfig(max_new_tokens=8)
    evaluate_task(model, tok, task, limit=4, gen=gen)  # warm-up: first-call costs are not per cell
    reset = reset_peak_rss()
    start = rss_mb()
    t0 = time.perf_counter()
    evaluate_task(model, tok, task, limit=4, gen=gen)
    cell = time.perf_counter() - t0
    peak = peak_rss_mb() - start if reset else None
    return [{"shape": "tiny", "n": t, "op": "evaluate_chain", "cells": t * (t + 1), "cell_seconds": cell,
             "seconds": cell * t * (t + 1), "peak_mb": peak} for t in chains]


def fit(rows: list[dict]) -> dict:
    """Per (shape, op): the log-log slope of time in N and which of linear / quadratic fits better."""
    import numpy as np

    out = {}
    for key in sorted({(r["shape"], r["op"]) for r in rows if "seconds" in r}):
        pts = sorted((r["n"], r["seconds"]) for r in rows if (r["shape"], r["op"]) == key and "seconds" in r)
        if len(pts) < 2:
            continue
        n, t = np.array([p[0] for p in pts], float), np.array([max(p[1], 1e-6) for p in pts])
        slope = float(np.polyfit(np.log(n), np.log(t), 1)[0])
        resid = {}
        for deg, name in ((1, "linear"), (2, "quadratic")):
            if len(pts) > deg:
                c = np.polyfit(n, t, deg)
                resid[name] = float(np.sum((np.polyval(c, n) - t) ** 2))
        best = "quadratic" if slope > 1.5 else "linear" if slope > 0.5 else "flat"
        out[key] = {"slope": slope, "growth": best, "residuals": resid}
    return out


def run_shape(shape: str, ns: list[int], deadline: float, layers_8b: int) -> list[dict]:
    cmd = [sys.executable, __file__, "--worker", shape, "--ns", ",".join(map(str, ns)), "--deadline", str(deadline),
           "--8b-layers", str(layers_8b)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"scaling worker for {shape} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/performance.md", help="the Markdown file (plots beside it)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny shape, N = 2, 4; chain T = 2")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ns", help=argparse.SUPPRESS)
    ap.add_argument("--replot", help="rewrite the doc from this perf-scaling.json instead of measuring")
    ap.add_argument("--deadline", type=float, default=math.inf, help=argparse.SUPPRESS)
    ap.add_argument("--max-minutes", type=float, default=15.0,
                    help="time budget, shared equally by the shapes: operations not started within a shape's "
                         "share are listed as not run (default 15)")
    ap.add_argument("--8b-layers", dest="layers_8b", type=int, default=1, help="llama3-8b layers measured")
    args = ap.parse_args(argv)
    if args.replot:  # rewrite the doc and plots from a saved perf-scaling.json (no measuring)
        rows = json.loads(Path(args.replot).read_text())
        write_doc(Path(args.out), rows, fit(rows), quick=args.quick, wall=float("nan"), layers_8b=args.layers_8b)
        return 0
    if args.worker:
        SHAPES["llama3-8b"]["layers"] = args.layers_8b
        print(json.dumps(worker(args.worker, [int(x) for x in args.ns.split(",")], args.deadline)))
        return 0
    shapes = ["tiny"] if args.quick else list(SHAPES)
    ns = [2, 4] if args.quick else list(NS)
    t0 = time.perf_counter()
    deadline = time.time() + 60 * args.max_minutes
    rows = []
    for k, s in enumerate(shapes):  # each shape gets an equal share of what is left of the budget
        print(f"shape {s} ...", file=sys.stderr, flush=True)
        share = time.time() + (deadline - time.time()) / (len(shapes) - k)
        rows += run_shape(s, ns, share, args.layers_8b)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rows += eval_cells([2] if args.quick else list(CHAINS), Path(tmp))
    fits = fit(rows)
    write_doc(out, rows, fits, quick=args.quick, wall=time.perf_counter() - t0, layers_8b=args.layers_8b)
    for (shape, op), f in sorted(fits.items()):
        print(f"RESULT scaling shape={shape} op={op} slope={f['slope']:.2f} growth={f['growth']}")
    return 0 if all(math.isfinite(f["slope"]) for f in fits.values()) else 1


def _load() -> str:
    import os

    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def plot(out_dir: Path, rows: list[dict]) -> list[Path]:
    """docs/perf-time.png, docs/perf-memory.png (per shape, against N) and docs/perf-eval-chain.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    shapes = [s for s in SHAPES if any(r["shape"] == s and r["op"] != "evaluate_chain" for r in rows)]
    for metric, label, fname in (("seconds", "seconds", "perf-time.png"), ("peak_mb", "peak MB above start", "perf-memory.png")):
        fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
        for ax, shape in zip(axes[0], shapes):
            for op in sorted({r["op"] for r in rows if r["shape"] == shape and r["op"] != "evaluate_chain"}):
                pts = sorted((r["n"], r[metric]) for r in rows if r["shape"] == shape and r["op"] == op
                             and r.get(metric) is not None and r[metric] > 0)
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=op)
            ax.set(xscale="log", yscale="log", xlabel="adapters N", ylabel=label, title=shape)
            ax.set_xticks(NS, [str(n) for n in NS])
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=90)
        plt.close(fig)
        paths.append(out_dir / fname)
    ev = sorted((r["n"], r["seconds"]) for r in rows if r["op"] == "evaluate_chain")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(*zip(*ev), marker="o")
    ax.set(xlabel="chain length T", ylabel="evaluation seconds (T(T+1) cells)", title="evaluation vs chain (tiny)")
    fig.tight_layout()
    fig.savefig(out_dir / "perf-eval-chain.png", dpi=90)
    plt.close(fig)
    return paths + [out_dir / "perf-eval-chain.png"]


def _fmt(v, digits=3) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def dominant(rows: list[dict], shape: str, n: int) -> list[tuple[str, float]]:
    """Operations of ``shape`` at N=``n`` by time, largest first."""
    return sorted(((r["op"], r["seconds"]) for r in rows if r["shape"] == shape and r["n"] == n and "seconds" in r
                   and r["op"] != "evaluate_chain"), key=lambda x: -x[1])


def write_doc(out: Path, rows: list[dict], fits: dict, quick: bool, wall: float, layers_8b: int) -> None:
    """The scaling part of docs/performance.md (between markers, so hand-written parts survive a rerun)."""
    import platform

    pngs = plot(out.parent, rows)
    lines = [BEGIN, "## Scaling (`python benchmarks/scaling.py --out %s`%s)" % (out.as_posix(), " --quick" if quick else ""), "",
             f"Measured on {platform.machine()} with {_cpus()} CPUs, torch limited to 2 threads; load average "
             f"(1, 5, 15 min) at the end: {_load()} (the machine was shared with other jobs, so absolute "
             f"times are noisy; the slopes are the point). Whole benchmark: {wall:.0f} s.", "",
             f"llama3-8b rows: {layers_8b} of 32 layers measured, time and memory multiplied by {32 / layers_8b:g} "
             "(every operation works module by module, so cost is linear in layers). Peak memory: each shape in a "
             "fresh process, peak-RSS mark reset before each operation (/proc/self/clear_refs), peak minus the "
             "RSS at the start. Evaluation: T(T+1) cells counted (the base row and a row after each of T "
             "stages, T tasks each); one cell (a custom task, 4 prompts, 8 new tokens) timed on the tiny model.", "",
             *[f"![{p.stem}]({p.name})" for p in pngs], "",
             "### Fitted growth in the number of adapters N", "",
             "Log-log slope of time against N (1: linear, 2: quadratic), and the polynomial (degree 1 or 2) "
             "with the smaller least-squares residual.", "",
             "| shape | operation | slope | growth | better fit |", "|---|---|---|---|---|"]
    for (shape, op), f in sorted(fits.items()):
        res = f["residuals"]
        better = min(res, key=res.get) if res else "-"
        lines.append(f"| {shape} | {op} | {f['slope']:.2f} | {f['growth']} | {better} |")
    big = "llama3-8b" if any(r["shape"] == "llama3-8b" for r in rows) else "tiny"
    top_n = max(r["n"] for r in rows if r["shape"] == big and r["op"] != "evaluate_chain" and "seconds" in r)
    proj = sorted(((op, t * (max(NS) / top_n) ** max(fits.get((big, op), {}).get("slope", 1.0), 1.0))
                   for op, t in dominant(rows, big, top_n)), key=lambda x: -x[1])
    lines += ["", f"### What dominates at {big} and N={max(NS)}", "",
              f"Measured up to N={top_n} within the time budget; N={max(NS)} projected from N={top_n} with each "
              "operation's fitted slope (at least 1, i.e. at least linear):", ""]
    lines += [f"{i + 1}. {op}: ~{t:,.0f} s" for i, (op, t) in enumerate(proj[:5])]
    lines += ["", "### Table", "", "| shape | N | operation | seconds | peak MB above start |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (list(SHAPES).index(r["shape"]), r["op"], r["n"])):
        if "skipped" in r:
            lines.append(f"| {r['shape']} | {r['n']} | {r['op']} | skipped: {r['skipped']} | - |")
        else:
            extra = f" ({r['cells']} cells x {r['cell_seconds']:.3f} s)" if "cells" in r else ""
            lines.append(f"| {r['shape']} | {r['n']} | {r['op']} | {_fmt(r['seconds'])}{extra} | {_fmt(r.get('peak_mb'), 1)} |")
    lines.append(END)
    block = "\n".join(lines) + "\n"
    old = out.read_text() if out.is_file() else "# Performance\n\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END) + 1:]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    out.write_text(new)
    (out.parent / "perf-scaling.json").write_text(json.dumps(rows, indent=1))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


BEGIN, END = "<!-- scaling:begin (written by benchmarks/scaling.py) -->", "<!-- scaling:end -->"


if __name__ == "__main__":
    sys.exit(main())
