"""``dare_ties``: DARE's random drop and rescale, then TIES' sign election (Yu et al. 2024)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.merges.checks import check_not_sparse
from workbench.merges.params import RandomSignParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    import torch
    from workbench.adapters.factors import ModuleFactors


@register_merge("dare_ties", params=RandomSignParams, reference="https://arxiv.org/abs/2311.03099",
                check=check_not_sparse)
def dare_ties(factors: list[ModuleFactors], weights: list[float], params: RandomSignParams,
              ctx: MergeContext) -> ModuleFactors | torch.Tensor:
    """DARE-TIES: random drop with rescale, sign election, merge of the agreeing entries.

    ``space='factor'`` (default): PEFT's ``dare_ties`` on the A's, then the B's (weights as in ``linear``;
    agreeing entries averaged by count; masks equal PEFT's for the same ``seed``). ``space='delta'``:
    mergekit's ``dare_ties`` on the dense updates (sign elected on w_i dW_i, agreeing entries summed, not
    normalized).

    Args:
        factors: one ModuleFactors per adapter (equal ranks in factor space).
        weights: one weight per adapter.
        params: ``density``, ``seed``, ``majority_sign_method``, ``space``, ``rank``.
        ctx: the module, adapter names, and the shared seeded generator.

    Returns:
        ModuleFactors (factor space) or the dense merged update (out, in) (delta space).
    """
    from workbench.merges.primitives import prune_random
    from workbench.merges.pruned import prune_then_merge
    return prune_then_merge(factors, weights, params.space, ctx, "dare_ties",
                            lambda t: prune_random(t, params.density, ctx.generator), params.majority_sign_method)
