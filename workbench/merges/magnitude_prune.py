"""``magnitude_prune``: keep the largest entries of each adapter, then sum (PEFT's ``magnitude_prune``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.merges.checks import check_not_sparse
from workbench.merges.params import PruneParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    import torch
    from workbench.adapters.factors import ModuleFactors


@register_merge("magnitude_prune", params=PruneParams,
                reference="https://huggingface.co/docs/peft/developer_guides/model_merging", check=check_not_sparse)
def magnitude_prune(factors: list[ModuleFactors], weights: list[float], params: PruneParams,
                    ctx: MergeContext) -> ModuleFactors | torch.Tensor:
    """Magnitude pruning to ``density`` per tensor, then a weighted sum (no sign election, no rescale).

    ``space='factor'`` (default): PEFT's ``magnitude_prune`` on the A's and on the B's (weights as in
    ``linear``). ``space='delta'``: the same on dense updates, sum_i w_i prune(dW_i) (mergekit's
    task arithmetic with magnitude sparsification).

    Args:
        factors: one ModuleFactors per adapter (equal ranks in factor space).
        weights: one weight per adapter.
        params: ``density``, ``space``, ``rank``.
        ctx: the module and adapter names.

    Returns:
        ModuleFactors (factor space) or the dense merged update (out, in) (delta space).
    """
    from workbench.merges.primitives import prune_magnitude
    from workbench.merges.pruned import prune_then_merge
    return prune_then_merge(factors, weights, params.space, ctx, "magnitude_prune",
                            lambda t: prune_magnitude(t, params.density))
