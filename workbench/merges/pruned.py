"""The shared body of the four prune-then-merge strategies (``magnitude_prune``, ``ties``, ``dare_linear``,
``dare_ties``): they differ only in how each tensor is pruned and whether signs are elected."""

from __future__ import annotations

from typing import Callable

import torch

from workbench.adapters.factors import ModuleFactors
from workbench.merges.linear import check_equal_ranks
from workbench.merges.primitives import (dense_deltas, merge_delta_space, merge_factor_space, ties_disjoint_mean,
                                         weighted_sum)
from workbench.merges.registry import MergeContext


def prune_then_merge(factors: list[ModuleFactors], weights: list[float], space: str, ctx: MergeContext,
                     strategy: str, prune: Callable[[torch.Tensor], torch.Tensor], consensus: str | None = None,
                     normalize: bool = False) -> ModuleFactors | torch.Tensor:
    """Prune every tensor, then sum (``consensus`` None) or elect signs and merge the agreeing entries.

    ``space='factor'``: PEFT's semantics, on the A's and then the B's (the order random pruning draws its
    masks in, as PEFT does). ``space='delta'``: mergekit's, on the dense updates, with ``normalize``
    dividing by the agreeing weights (TIES) or not (DARE-TIES, sums).

    Raises:
        MismatchError: unequal ranks in factor space (``strategy`` names the caller in the message).
    """
    if space == "factor":
        check_equal_ranks(factors, ctx, strategy)

        def combine(tensors, w):
            pruned = [prune(t) for t in tensors]
            return weighted_sum(pruned, w) if consensus is None else ties_disjoint_mean(pruned, w, consensus)

        return merge_factor_space(factors, weights, combine)
    deltas = [prune(d) for d in dense_deltas(factors)]
    return merge_delta_space(deltas, weights, consensus=consensus, normalize=normalize)
