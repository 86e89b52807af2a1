"""``linear``: PEFT's ``linear`` combination: a weighted sum of the A's and, separately, of the B's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.errors import ConfigError
from workbench.merges.params import NoParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    from workbench.adapters.factors import ModuleFactors


def check_equal_ranks(factors: list[ModuleFactors], ctx: MergeContext, strategy: str) -> None:
    """Factor-space sums need one rank per module across adapters.

    Raises:
        ConfigError: names the module and the two adapters whose ranks differ.
    """
    for f, name in zip(factors[1:], ctx.sources[1:]):
        if f.rank != factors[0].rank:
            raise ConfigError(f"strategy '{strategy}' needs equal ranks: module {ctx.module} has rank "
                              f"{factors[0].rank} in {ctx.sources[0]} but {f.rank} in {name} "
                              "(use concat or svd for unequal ranks)")


@register_merge("linear", params=NoParams, reference="https://huggingface.co/docs/peft/developer_guides/model_merging")
def linear(factors: list[ModuleFactors], weights: list[float], params: NoParams, ctx: MergeContext) -> ModuleFactors:
    """A = sum_i sign(w_i s_i) sqrt|w_i s_i| A_i, B = sum_i sqrt|w_i s_i| B_i (PEFT's ``linear``).

    A weight scales A and B by sqrt(w) each, and the product B A contains cross terms B_i A_j (i != j):
    this is not the sum of the updates (use ``concat`` or ``svd`` for that). Equal ranks are required.

    Args:
        factors: one ModuleFactors per adapter, all of the same rank.
        weights: one weight per adapter (may be negative: the sign goes on A).
        params: none.
        ctx: the module and adapter names, for the error message.

    Returns:
        ModuleFactors of the common rank with scaling 1.

    Raises:
        ConfigError: ranks differ.
    """
    from workbench.merges.primitives import merge_factor_space, weighted_sum
    check_equal_ranks(factors, ctx, "linear")
    return merge_factor_space(factors, weights, weighted_sum)
