"""Build an interference report for LoRI-style adapters with the Python API.

Three small adapters over a Llama-shaped stack: two share the frozen random A (same seed), one draws its
own. The report shows the A-subspace overlap at 1 for the shared seed and near the random baseline r/d
otherwise. Run: ``python examples/interference_report.py [--out DIR]`` (default: a new temporary directory).
"""

from __future__ import annotations

import argparse
import tempfile

from workbench.analytics import build_report
from workbench.testing import llama_shapes, random_adapter


def lori_like(a_seed: int, b_seed: int, name: str, shapes: dict, rank: int = 8):
    """A frozen random A from ``a_seed`` and a (stand-in for trained) B from ``b_seed``."""
    adapter = random_adapter(shapes, rank=rank, seed=a_seed, name=name)
    other = random_adapter(shapes, rank=rank, seed=b_seed)
    for key in adapter.b_keys():
        adapter.tensors[key] = other.tensors[key]
    return adapter


def main(out_dir: str) -> dict:
    shapes = llama_shapes(layers=2, hidden=256, intermediate=512, kv_dim=64)
    adapters = [lori_like(1, 10, "nlu", shapes), lori_like(2, 20, "math", shapes), lori_like(1, 30, "code", shapes)]
    report = build_report(adapters, out_dir=out_dir)
    for pair in report["pairs"]:
        m = pair["summary"]["means"]
        print(f"{pair['a']:>5} / {pair['b']:<5} A mean cos² {m['a_mean_sq_cos']:.4f} "
              f"(random {m['a_random_baseline']:.4f})  ΔW cosine {m['delta_cosine']:+.4f}")
    print(f"report: {out_dir}/report.html")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="report directory (default: a new temporary directory)")
    main(parser.parse_args().out or tempfile.mkdtemp(prefix="interference-"))
