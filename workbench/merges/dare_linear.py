"""``dare_linear``: drop at random, rescale, then sum (Yu et al. 2024)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.merges.checks import check_not_sparse
from workbench.merges.params import RandomPruneParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    import torch
    from workbench.adapters.factors import ModuleFactors


@register_merge("dare_linear", params=RandomPruneParams, reference="https://arxiv.org/abs/2311.03099",
                check=check_not_sparse)
def dare_linear(factors: list[ModuleFactors], weights: list[float], params: RandomPruneParams,
                ctx: MergeContext) -> ModuleFactors | torch.Tensor:
    """DARE: keep each entry with probability ``density``, divide the kept ones by ``density``, sum.

    ``space='factor'`` (default): PEFT's ``dare_linear`` on the A's, then the B's (weights as in ``linear``);
    with the same ``seed`` the masks equal PEFT's after ``torch.manual_seed(seed)``. ``space='delta'``:
    mergekit's ``dare_linear`` on the dense updates, sum_i w_i DARE(dW_i).

    Args:
        factors: one ModuleFactors per adapter (equal ranks in factor space).
        weights: one weight per adapter.
        params: ``density``, ``seed``, ``space``, ``rank``.
        ctx: the module, adapter names, and the shared seeded generator.

    Returns:
        ModuleFactors (factor space) or the dense merged update (out, in) (delta space).
    """
    from workbench.merges.primitives import prune_random
    from workbench.merges.pruned import prune_then_merge
    return prune_then_merge(factors, weights, params.space, ctx, "dare_linear",
                            lambda t: prune_random(t, params.density, ctx.generator))
