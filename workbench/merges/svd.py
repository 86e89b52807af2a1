"""``svd``: the weighted sum of the updates, compressed to rank k, computed in factor form."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.merges.params import RankParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    from workbench.adapters.factors import ModuleFactors


@register_merge("svd", params=RankParams, reference="https://huggingface.co/docs/peft/developer_guides/model_merging")
def svd(factors: list[ModuleFactors], weights: list[float], params: RankParams, ctx: MergeContext) -> ModuleFactors:
    """Best rank-k approximation of sum_i w_i s_i B_i A_i (PEFT's ``svd`` combination), never forming dW.

    The sum is Bc @ Ac with Bc = [w_1 s_1 B_1 | ...] (out, R) and Ac = [A_1; ...] (R, in); QR of Bc and of
    Ac^T and an SVD of the R x R core give the same truncated SVD as PEFT's dense one, at a cost linear in
    out and in. A weight multiplies that adapter's update, as in ``concat``.

    Args:
        factors: one ModuleFactors per adapter (any ranks).
        weights: one weight per adapter.
        params: ``rank`` k (default: the largest input rank of the module).
        ctx: unused.

    Returns:
        ModuleFactors of rank min(k, R) with scaling 1.
    """
    from workbench.merges.primitives import compress_factors, concat_factors
    stacked = concat_factors(factors, weights)  # A (R, in), B (out, R)
    rank = params.rank or max(f.rank for f in factors)
    return compress_factors(stacked.A, stacked.B, rank)
