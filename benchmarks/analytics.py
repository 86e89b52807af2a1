"""Factorised adapter analytics vs the dense computation, on Llama-3-8B-shaped adapters.

Four random rank-32 adapters over 32 layers x 7 projections (float32). Ours: every metric of every pair on
every module from the factors (QR of the r-column factors, then r x r work). Peer: the same metrics from
materialised delta_W (full SVDs, dense projector products, scipy.linalg.subspace_angles). A dense SVD of
one 4096 x 4096 delta takes tens of seconds on two cores, so the dense side runs on a subset of modules of
one pair (layer 0 q_proj and k_proj by default); both sides are timed on that same subset, and every number is
compared. The full factorised report (all 6 pairs x 224 modules, plus spectra and files) is timed too.

Run: ``python benchmarks/analytics.py [--dense-modules q_proj,k_proj] [--layers 32] [--out DIR]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from workbench.analytics.dense import dense_module_pair
from workbench.analytics.pairs import analyse
from workbench.analytics.report import adapter_info, write_report
from workbench.analytics.serialize import report_dict
from workbench.graph.memory import PeakRSS
from workbench.testing import LLAMA3_8B, llama_shapes, random_adapter

PREFIX = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def make_adapters(layers: int, rank: int) -> list:
    shapes = llama_shapes(**dict(LLAMA3_8B, layers=layers))
    return [random_adapter(shapes, rank=rank, alpha=2 * rank, seed=i, name=f"task{i}") for i in range(4)]


def ours_numbers(pair_mod, spec_a, spec_b) -> dict:
    """Our metrics in the dense reference's layout."""
    return {
        "a_cos": pair_mod.a_subspace.cosines, "b_cos": pair_mod.b_subspace.cosines,
        "delta_cosine": pair_mod.delta_cosine, "interference_ab": pair_mod.interference_ab,
        "interference_ba": pair_mod.interference_ba, "cross_energy_ab": pair_mod.cross_energy_ab,
        "cross_energy_ba": pair_mod.cross_energy_ba, "sv_a": spec_a.singular_values, "sv_b": spec_b.singular_values,
    }


def dense_numbers(d: dict) -> dict:
    """The dense reference's metrics under the same names."""
    return {"a_cos": d["a_subspace"]["cosines"], "b_cos": d["b_subspace"]["cosines"],
            "delta_cosine": d["delta_cosine"], "interference_ab": d["interference_ab"],
            "interference_ba": d["interference_ba"], "cross_energy_ab": d["cross_energy_ab"],
            "cross_energy_ba": d["cross_energy_ba"], "sv_a": d["singular_values_a"], "sv_b": d["singular_values_b"]}


def max_diff(ours: dict, dense: dict) -> float:
    """Largest absolute difference over every number (singular values relative to the largest)."""
    worst = 0.0
    for key, v in ours.items():
        a, b = np.asarray(v, dtype=float), np.asarray(dense[key], dtype=float)
        scale = float(np.abs(b).max()) if key.startswith("sv") else 1.0
        worst = max(worst, float(np.abs(a - b).max()) / scale)
    return worst


def run_subset(adapters, modules: list[str]) -> tuple[float, float, float, PeakRSS, PeakRSS]:
    """Time ours and dense on ``modules`` of the pair (task0, task1). Returns (ours_s, dense_s, max diff,
    ours' and dense's peak memory)."""
    fa, fb = adapters[0].factors(), adapters[1].factors()
    sub = {"task0": {m: fa[m] for m in modules}, "task1": {m: fb[m] for m in modules}}
    t = time.perf_counter()
    with PeakRSS() as ours_mem:
        res = analyse(sub)
    ours_s = time.perf_counter() - t
    worst, dense_s, dense_mem = 0.0, 0.0, PeakRSS()
    for m in modules:
        t = time.perf_counter()
        with PeakRSS() as mem:
            d = dense_module_pair(fa[m], fb[m])
        dt = time.perf_counter() - t
        dense_mem.mb = max(filter(None, (dense_mem.mb, mem.mb)), default=None)
        dense_s += dt
        ours = ours_numbers(res.pairs[0].modules[m], res.spectra["task0"][m], res.spectra["task1"][m])
        diff = max_diff(ours, dense_numbers(d))
        worst = max(worst, diff)
        print(f"  {m:40s} {tuple(fa[m].B.shape[:1]) + tuple(fa[m].A.shape[1:])}  dense {dt:7.2f} s   "
              f"max |ours - dense| {diff:.2e}")
    return ours_s, dense_s, worst, ours_mem, dense_mem


def _mb(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--dense-modules", default="q_proj,k_proj", help="layer-0 projections for the dense side")
    ap.add_argument("--out", default=None, help="where to write the full report (default: a temp dir)")
    args = ap.parse_args()
    t = time.perf_counter()
    adapters = make_adapters(args.layers, args.rank)
    n_mod = len(adapters[0].modules())
    print(f"4 adapters, {args.layers} layers x 7 projections = {n_mod} modules, rank {args.rank}, float32 "
          f"(generated in {time.perf_counter() - t:.1f} s)")

    factors = {a.name: a.factors() for a in adapters}
    t = time.perf_counter()
    with PeakRSS() as full_mem:
        full = analyse(factors)
    full_s = time.perf_counter() - t
    n_pairs = sum(len(p.modules) for p in full.pairs)
    print(f"ours, full analysis: {len(full.pairs)} pairs x {n_mod} modules = {n_pairs} module pairs + "
          f"{4 * n_mod} spectra in {full_s:.2f} s ({1e3 * full_s / n_pairs:.2f} ms per module pair), "
          f"peak {_mb(full_mem.mb)} MB above start")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        report = report_dict(full, {a.name: adapter_info(a) for a in adapters})
        write_report(report, Path(args.out or tmp))
        print(f"ours, aggregates + report files (json, md, html, 5 png) in {time.perf_counter() - t:.2f} s")

    modules = [f"model.layers.0.{PREFIX[p]}.{p}" for p in args.dense_modules.split(",")]
    print(f"dense peer on a subset: pair task0/task1, modules {', '.join(modules)} "
          "(full SVD of each delta, dense projector and cross products, scipy subspace_angles)")
    ours_s, dense_s, worst, ours_mem, dense_mem = run_subset(adapters, modules)
    ratio = dense_s / ours_s
    print(f"subset: ours {ours_s * 1e3:.1f} ms, dense {dense_s:.1f} s, ratio {ratio:.0f}x, "
          f"max abs difference {worst:.2e}; peak memory above start: ours {_mb(ours_mem.mb)} MB, dense {_mb(dense_mem.mb)} MB")
    per_pair = dense_s / len(modules)
    print(f"(estimate, not measured: dense at the subset's mean of {per_pair:.1f} s per module pair would need "
          f"~{per_pair * n_pairs / 3600:.1f} h for the full report's {n_pairs} module pairs; ours took {full_s:.1f} s)")
    if worst > 1e-6:
        print(f"MISMATCH: factorised and dense numbers differ by {worst:.2e}")
        return 1
    print(f"RESULT analytics ratio={ratio:.1f} ours={ours_s:.4f}s peer={dense_s:.2f}s "
          f"ours_peak_mb={_mb(ours_mem.mb)} peer_peak_mb={_mb(dense_mem.mb)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
