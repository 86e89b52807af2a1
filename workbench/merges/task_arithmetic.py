"""``task_arithmetic``: the weighted sum of the adapters (Ilharco et al. 2023)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.merges.linear import check_equal_ranks
from workbench.merges.params import SpaceParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    import torch
    from workbench.adapters.factors import ModuleFactors


@register_merge("task_arithmetic", params=SpaceParams, reference="https://arxiv.org/abs/2212.04089")
def task_arithmetic(factors: list[ModuleFactors], weights: list[float], params: SpaceParams,
                    ctx: MergeContext) -> ModuleFactors | torch.Tensor:
    """Weighted sum of the adapters.

    ``space='factor'`` (default): PEFT's ``linear`` (sums of A's and of B's; a weight scales each factor by
    sqrt(w), with cross terms B_i A_j). ``space='delta'``: mergekit's task arithmetic, sum_i w_i dW_i,
    compressed back to ``rank`` by SVD (or added to the base with --into-base); ``svd`` gives the same
    compressed result without forming dense updates, much faster.

    Args:
        factors: one ModuleFactors per adapter (equal ranks in factor space).
        weights: one weight per adapter.
        params: ``space`` and ``rank``.
        ctx: the module and adapter names.

    Returns:
        ModuleFactors (factor space) or the dense merged update (out, in) (delta space).
    """
    from workbench.merges.primitives import dense_deltas, merge_delta_space, merge_factor_space, weighted_sum
    if params.space == "factor":
        check_equal_ranks(factors, ctx, "task_arithmetic")
        return merge_factor_space(factors, weights, weighted_sum)
    return merge_delta_space(dense_deltas(factors), weights, consensus=None, normalize=False)
