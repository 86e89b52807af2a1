"""Benchmark: workbench merges vs PEFT's ``add_weighted_adapter`` on four Llama-3-8B-shaped rank-32 adapters.

Run: python benchmarks/merge.py [--layers 32] [--subset k_proj,v_proj] [--threads N]

Both sides get the same random factors (``workbench.testing.random_adapter``; 32 layers x 7 projections,
rank 32, fp32; 1.3 GB in all). PEFT's side is a skeleton ``nn.Module`` tree with the Llama module names whose
base weights are zero-stride views (no memory), so PEFT builds real LoRA layers of the right shapes.

* Factor-space strategies (cat/concat, linear, ties, dare_linear, dare_ties, magnitude_prune) are timed on the
  whole model on both sides.
* ``svd``: ours (factor form, no dense delta) is also timed on the whole model, printed alongside.
* PEFT's ``*_svd`` types build a dense (out, in) delta per module and run a full SVD (minutes per MLP module
  on two cores), so they, ``svd`` and our delta-space strategies are timed on a subset of layer 0's modules
  (``--subset``, default k_proj and v_proj, the smallest), on both sides, and the whole-model times are
  extrapolated by the modules' out x in: the ratio is the subset's. That understates PEFT's cost on the large
  MLP modules (a dense SVD grows faster than out x in, our factor-form svd slower), so the svd ratio is a
  lower bound. The output says which numbers are extrapolated.
  Our delta-space TIES/DARE follow mergekit's semantics, PEFT's its own; the work is the same kind.

Ends with one RESULT line per strategy and an overall one (geometric mean of the ratios; ratio = PEFT's time
over ours, higher is better).
"""

from __future__ import annotations

import argparse
import gc
import math
import time
import warnings

import torch
from torch import nn

from workbench.adapters.adapter import Adapter
from workbench.graph.memory import PeakRSS
from workbench.keys import file_key
from workbench.merges import merge
from workbench.testing import LLAMA3_8B, llama_shapes, random_adapter

RANK, N_ADAPTERS, DENSITY, SEED = 32, 4, 0.5, 7
WEIGHTS = [0.4, 0.3, 0.2, 0.1]
FACTOR = [("concat", "cat", {}), ("linear", "linear", {}), ("ties", "ties", {"density": DENSITY}),
          ("dare_linear", "dare_linear", {"density": DENSITY, "seed": SEED}),
          ("dare_ties", "dare_ties", {"density": DENSITY, "seed": SEED}),
          ("magnitude_prune", "magnitude_prune", {"density": DENSITY})]
DELTA = [("ties_delta", "ties", "ties_svd", {"density": DENSITY}),
         ("dare_linear_delta", "dare_linear", "dare_linear_svd", {"density": DENSITY, "seed": SEED}),
         ("dare_ties_delta", "dare_ties", "dare_ties_svd", {"density": DENSITY, "seed": SEED}),
         ("magnitude_prune_delta", "magnitude_prune", "magnitude_prune_svd", {"density": DENSITY})]


def zero_linear(out_f: int, in_f: int) -> nn.Linear:
    """An nn.Linear whose weight is a zero-stride view: the right shape for PEFT, no memory."""
    layer = nn.Linear(in_f, out_f, bias=False, device="meta")
    layer.weight = nn.Parameter(torch.zeros(()).expand(out_f, in_f), requires_grad=False)
    return layer


def skeleton(shapes: dict[str, tuple[int, int]]) -> nn.Module:
    """A module tree with the given dotted names (insertion order = Llama's order), Linear leaves."""
    root = nn.Module()
    for key, (out_f, in_f) in shapes.items():
        parent = root
        *path, leaf = key.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, zero_linear(out_f, in_f))
    return root


def peft_model(adapters: list[Adapter], shapes):
    """A PeftModel over the skeleton holding the adapters' own tensors (shared, not copied)."""
    from peft import LoraConfig, PeftModel

    targets = sorted({m.rsplit(".", 1)[-1] for m in shapes})
    cfg = lambda: LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=targets)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel(skeleton(shapes), cfg(), adapter_name="a0")
        for i in range(1, len(adapters)):
            pm.add_adapter(f"a{i}", cfg())
    root = pm.base_model.model
    for i, a in enumerate(adapters):
        for m in shapes:
            layer = root.get_submodule(m)
            layer.lora_A[f"a{i}"].weight.data = a.tensors[file_key(m, "A")]
            layer.lora_B[f"a{i}"].weight.data = a.tensors[file_key(m, "B")]
    return pm


def timed(fn, repeat: int = 1) -> float:
    """Best of ``repeat`` wall-clock runs (the machine may be shared)."""
    best = math.inf
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_peft(pm, n: int, combination: str, params: dict, repeat: int = 1) -> float:
    return min(_time_peft_once(pm, n, combination, params) for _ in range(repeat))


def _time_peft_once(pm, n: int, combination: str, params: dict) -> float:
    def run():
        if "seed" in params:
            torch.manual_seed(params["seed"])
        pm.add_weighted_adapter([f"a{i}" for i in range(n)], WEIGHTS[:n], "merged", combination_type=combination,
                                density=params.get("density"), svd_rank=RANK if combination.endswith("svd") else None)

    seconds = timed(run)
    pm.delete_adapter("merged")
    return seconds


def restrict(adapter: Adapter, modules) -> Adapter:
    keys = {file_key(m, f) for m in modules for f in "AB"}
    return Adapter({k: v for k, v in adapter.tensors.items() if k in keys}, dict(adapter.config), dict(adapter.meta))


def row(name: str, ours: float, peer: float, note: str = "", mem=(None, None)) -> tuple:
    """One strategy's line; ``mem``: (ours, peer) peak MB above the start of each side's timing."""
    print(f"{name:24s} ours {ours:9.2f} s   peft {peer:9.2f} s   ratio {peer / ours:9.1f}x   "
          f"peak MB ours {_mb(mem[0])} peft {_mb(mem[1])} {note}", flush=True)
    return name, ours, peer, *mem


def _mb(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=LLAMA3_8B["layers"], help="layers of the model (default 32)")
    ap.add_argument("--subset", default="k_proj,v_proj", help="layer-0 projections timed for the dense side")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine OpenMP threads oversubscribe and "
                         "small kernels run 10-700x slower, on both sides)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = llama_shapes(**{**LLAMA3_8B, "layers": args.layers})
    t0 = time.perf_counter()
    adapters = [random_adapter(shapes, rank=RANK, alpha=2 * RANK, seed=i, name=f"task{i}") for i in range(N_ADAPTERS)]
    pm = peft_model(adapters, shapes)
    print(f"{N_ADAPTERS} adapters, {len(shapes)} modules ({args.layers} layers x 7), rank {RANK}, "
          f"torch threads {torch.get_num_threads()}; setup {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    print("-- factor-space strategies, whole model on both sides, best of 2")
    for ours_name, peft_name, params in FACTOR:
        with PeakRSS() as om:
            ours = timed(lambda: merge(adapters, ours_name, WEIGHTS, **params), repeat=2)
        with PeakRSS() as pmem:
            peer = time_peft(pm, N_ADAPTERS, peft_name, params, repeat=2)
        rows.append(row(ours_name, ours, peer, mem=(om.mb, pmem.mb)))
    rows += dense_side(adapters, shapes, args.subset.split(","), pm)
    report(rows)


def dense_side(adapters, shapes, projections, full_pm) -> list:
    """svd (ours whole model, factor form) and the delta-space strategies, PEFT on a layer-0 subset."""
    subset = [m for m in shapes if m.startswith("model.layers.0.") and m.rsplit(".", 1)[-1] in projections]
    scale = sum(o * i for o, i in shapes.values()) / sum(shapes[m][0] * shapes[m][1] for m in subset)
    sub_adapters = [restrict(a, subset) for a in adapters]
    sub_pm = peft_model(sub_adapters, {m: shapes[m] for m in subset})
    print(f"-- dense side: PEFT's *_svd and our delta-space merges timed on {len(subset)} modules "
          f"({', '.join(m.split('.', 3)[-1] for m in subset)} of layer 0), extrapolated x{scale:.0f} by out x in")
    del full_pm
    rows = []
    ours_full = timed(lambda: merge(adapters, "svd", WEIGHTS, rank=RANK))
    with PeakRSS() as om:
        ours_sub = timed(lambda: merge(sub_adapters, "svd", WEIGHTS, rank=RANK))
    with PeakRSS() as pmem:
        peft_sub = time_peft(sub_pm, N_ADAPTERS, "svd", {})
    rows.append(row("svd", ours_sub * scale, peft_sub * scale,
                    f"(both extrapolated, peaks of the subset; ours measured on the whole model: {ours_full:.2f} s)",
                    mem=(om.mb, pmem.mb)))
    for name, strategy, peft_name, params in DELTA:
        with PeakRSS() as om:
            ours = timed(lambda: merge(sub_adapters, strategy, WEIGHTS, space="delta", rank=RANK, **params))
        with PeakRSS() as pmem:
            peer = time_peft(sub_pm, N_ADAPTERS, peft_name, params)
        rows.append(row(f"{name} vs {peft_name}", ours * scale, peer * scale, "(times extrapolated, peaks of the subset)",
                        mem=(om.mb, pmem.mb)))
    return rows


def report(rows) -> None:
    for name, ours, peer, ours_mb, peer_mb in rows:
        print(f"RESULT merge_{name.split()[0]} ratio={peer / ours:.2f} ours={ours:.3f}s peer={peer:.3f}s "
              f"ours_peak_mb={_mb(ours_mb)} peer_peak_mb={_mb(peer_mb)}")
    ratios = [r[2] / r[1] for r in rows]
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    total_ours, total_peer = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"RESULT merge ratio={geo:.2f} ours={total_ours:.2f}s peer={total_peer:.2f}s min_ratio={min(ratios):.2f}")


if __name__ == "__main__":
    main()
