"""``dare_linear``: drop at random, rescale, then sum (Yu et al. 2024)."""

from __future__ import annotations

import torch

from workbench.adapters.factors import ModuleFactors
from workbench.merges.checks import check_not_sparse
from workbench.merges.linear import check_equal_ranks
from workbench.merges.params import RandomPruneParams
from workbench.merges.primitives import (dense_deltas, merge_delta_space, merge_factor_space, prune_random,
                                         weighted_sum)
from workbench.merges.registry import MergeContext, register_merge


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
    if params.space == "factor":
        check_equal_ranks(factors, ctx, "dare_linear")

        def combine(tensors, w):
            return weighted_sum([prune_random(t, params.density, ctx.generator) for t in tensors], w)

        return merge_factor_space(factors, weights, combine)
    deltas = [prune_random(d, params.density, ctx.generator) for d in dense_deltas(factors)]
    return merge_delta_space(deltas, weights, consensus=None, normalize=False)
