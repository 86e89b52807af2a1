"""A custom merge strategy in a few lines, used through the Python API.

Run: python examples/custom_merge.py  (random adapters on tiny shapes; about a second)

The strategy keeps, for every module, the weighted update of largest norm ("winner takes the module"):
it sees each adapter's factors and returns factors, so no dense matrix is formed.
"""

from __future__ import annotations

import torch

from workbench.merges import merge, register_merge
from workbench.testing import TINY, llama_shapes, random_adapter


@register_merge("largest_update")
def largest_update(factors, weights, params, ctx):
    """Per module, keep only the adapter whose weighted update w * s * B @ A has the largest Frobenius norm."""
    norms = [abs(w) * f.delta().norm() for f, w in zip(factors, weights)]
    best = int(torch.stack(norms).argmax())
    f = factors[best]
    return type(f)(f.A, f.B * weights[best], f.scaling)


def main() -> None:
    shapes = llama_shapes(**TINY)
    adapters = [random_adapter(shapes, rank=4, seed=s, b_scale=0.01 * (s + 1), name=f"task{s}") for s in range(3)]
    merged = merge(adapters, strategy="largest_update", weights=[1.0, 0.5, 0.35])
    winners = {}
    for module, f in merged.factors().items():
        deltas = [w * a.factors()[module].delta() for a, w in zip(adapters, [1.0, 0.5, 0.35])]
        winners[module] = min(range(3), key=lambda i: float((deltas[i] - f.delta()).norm()))
    print(f"merged {len(merged.modules())} modules with strategy '{merged.meta['strategy']}'")
    print("winning adapter per module:", sorted(set(winners.values())))

    # A plain callable works too, without registering: here, the mean of the dense updates (compressed to rank 4).
    def mean_delta(factors, weights, params, ctx):
        return sum(w * f.delta() for f, w in zip(factors, weights)) / len(factors)

    mean = merge(adapters, strategy=mean_delta, rank=4)
    print(f"mean_delta: rank {mean.config['r']}, sources {[s['name'] for s in mean.meta['sources']]}")


if __name__ == "__main__":
    main()
