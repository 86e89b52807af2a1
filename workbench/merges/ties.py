"""``ties``: trim, elect sign, disjoint merge (Yadav et al. 2023)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.merges.checks import check_not_sparse
from workbench.merges.params import SignParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    import torch
    from workbench.adapters.factors import ModuleFactors


@register_merge("ties", params=SignParams, reference="https://arxiv.org/abs/2306.01708", check=check_not_sparse)
def ties(factors: list[ModuleFactors], weights: list[float], params: SignParams,
         ctx: MergeContext) -> ModuleFactors | torch.Tensor:
    """TIES: keep the ``density`` largest-magnitude entries, elect a sign per entry, average the agreeing ones.

    ``space='factor'`` (default): PEFT's ``ties`` on the A's and on the B's separately (weights as in
    ``linear``: sqrt(w s) on each factor; the sign is elected on the unweighted pruned factors and the mean
    divides by the number of agreeing adapters). ``space='delta'``: mergekit's ``ties`` on the dense
    updates: the sign is elected on w_i dW_i and the sum is divided by the summed weights of the agreeing
    entries, so a weight is a relative importance.

    Args:
        factors: one ModuleFactors per adapter (equal ranks in factor space).
        weights: one weight per adapter.
        params: ``density``, ``majority_sign_method``, ``space``, ``rank``.
        ctx: the module and adapter names.

    Returns:
        ModuleFactors (factor space) or the dense merged update (out, in) (delta space).
    """
    from workbench.merges.primitives import prune_magnitude
    from workbench.merges.pruned import prune_then_merge
    return prune_then_merge(factors, weights, params.space, ctx, "ties", lambda t: prune_magnitude(t, params.density),
                            params.majority_sign_method, normalize=True)
