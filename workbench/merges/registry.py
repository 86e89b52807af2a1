"""The merge-strategy registry and the contract every strategy follows.

A strategy is a pure function called once per adapted module::

    fn(factors: list[ModuleFactors], weights: list[float], params, ctx: MergeContext)
        -> ModuleFactors | torch.Tensor

It returns either final low-rank factors (kept as they are) or a dense delta ``(out, in)``, which the
caller compresses back to ``params.rank`` by SVD for an adapter output, or adds as it is to the base
weights for ``--into-base``. Strategies never see a live model and never write files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel

from workbench.registry import Registry

if TYPE_CHECKING:
    import torch

MERGES: Registry = Registry("merge strategy")


@dataclass
class MergeContext:
    """What a strategy may need beyond the factors of one module.

    Attributes:
        module: the module key being merged (``model.layers.0.self_attn.q_proj``), for error messages.
        sources: the adapters' names, in the order of ``factors``.
        generator: one CPU generator seeded once per merge and shared by all modules, which are visited in
            the model's order (see ``primitives.module_order``) so that seeded random strategies reproduce
            PEFT's draws from torch's global RNG after ``torch.manual_seed(seed)``.
    """

    module: str
    sources: list[str]
    generator: torch.Generator = field(default_factory=lambda: _new_generator())


def _new_generator():
    import torch  # here, not at import: the registry must load without torch (`workbench validate`)

    return torch.Generator()


def register_merge(name: str, params: type[BaseModel] | None = None, reference: str = "",
                   check: Callable[..., Any] | None = None) -> Callable:
    """Decorator registering a strategy under ``name`` so that ``merge(..., strategy=name)`` finds it.

    Args:
        name: the registry key (also the module file name for built-in strategies).
        params: a pydantic model of the strategy's parameters (``extra="forbid"`` recommended); None when
            it takes none.
        reference: a paper or documentation link.
        check: optional ``check(adapters, weights, params)`` run once over whole adapters before any module
            is merged (for conditions that span modules, e.g. disjoint supports); raises WorkbenchError.

    Returns:
        The decorator; it returns the function unchanged.
    """
    return MERGES.register(name, params=params, reference=reference, check=check)
