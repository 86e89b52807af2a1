"""Per-module attribution of forgetting: undo a later update on chosen modules, measure the earlier task.

For an earlier adapter ``before`` and a later one ``after`` (a chain's later snapshot, or a merge that
contains ``before``), "removing the later update from module m" means using ``before``'s factors on m and
``after``'s elsewhere. If a score (e.g. the data-aware energy ``E_ij`` per module) finds the modules that
matter, removing its top-k recovers more of the earlier task's held-out NLL than removing k random modules.

Each variant is merged into the base weights (``merges.api.merge_into_base``) and scored with the held-out
NLL of the evaluation (``evaluate.runner.Runner.response_nll``); the base weights are restored from copies
between variants, bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from workbench.adapters.adapter import Adapter
from workbench.errors import ConfigError, MismatchError
from workbench.keys import file_key


@dataclass(frozen=True)
class Attribution:
    """Held-out NLL of the earlier task under ``after`` with its update removed from some modules.

    Attributes:
        k: modules removed per variant.
        nll_before, nll_after: the earlier and the later adapter as they are.
        nll_top: with the update removed from the top-k modules by the score (``top_modules``).
        nll_random: the same for each of ``len(random_modules)`` draws of k random modules.
    """

    k: int
    nll_before: float
    nll_after: float
    nll_top: float
    top_modules: list[str]
    nll_random: list[float]
    random_modules: list[list[str]]

    @property
    def recovered_top(self) -> float | None:
        """Share of the NLL increase that removing the top-k undoes (1: all of it; None: no increase)."""
        gap = self.nll_after - self.nll_before
        return (self.nll_after - self.nll_top) / gap if gap != 0 else None

    @property
    def recovered_random(self) -> float | None:
        gap = self.nll_after - self.nll_before
        if gap == 0 or not self.nll_random:
            return None
        return (self.nll_after - sum(self.nll_random) / len(self.nll_random)) / gap


def _check_pair(before: Adapter, after: Adapter) -> list[str]:
    mods = after.modules()
    if before.modules() != mods:
        raise MismatchError(f"attribution: {before.name} and {after.name} adapt different modules")
    for m in mods:
        for f in ("A", "B"):
            if before.tensors[file_key(m, f)].shape != after.tensors[file_key(m, f)].shape:
                raise MismatchError(f"attribution: module {m}: lora_{f} shapes differ between {before.name} "
                                    f"and {after.name}")
        if before.scaling(m) != after.scaling(m):
            raise MismatchError(f"attribution: module {m}: scaling {before.scaling(m)} vs {after.scaling(m)}")
    return mods


def with_update_removed(before: Adapter, after: Adapter, removed) -> Adapter:
    """``after`` with ``before``'s factors on the modules in ``removed`` (same config and identity as after).

    Raises:
        MismatchError: the adapters adapt different modules or differ in a module's shape or scaling.
    """
    _check_pair(before, after)
    tensors = dict(after.tensors)
    for m in removed:
        for f in ("A", "B"):
            tensors[file_key(m, f)] = before.tensors[file_key(m, f)]
    return Adapter(tensors=tensors, config=after.config, meta=dict(after.meta), path=None)


def _nll(model, tokenizer, adapter: Adapter, originals: dict, pairs: list[dict]) -> float:
    from workbench.evaluate.runner import Runner
    from workbench.merges.api import merge_into_base

    named = dict(model.named_modules())
    with torch.no_grad():
        for m, w in originals.items():
            named[m].weight.copy_(w)                        # back to the base, bit for bit
    merge_into_base(model, adapter)
    return float(Runner(model, tokenizer).response_nll(pairs)["nll"])


def attribute_modules(model, tokenizer, before: Adapter, after: Adapter, scores: dict[str, float], pairs: list[dict],
              k: int, n_random: int = 3, seed: int = 0) -> Attribution:
    """Remove ``after``'s update from the top-k modules by ``scores`` and from k random modules; measure NLL.

    Args:
        model: the base model (unquantized, not PEFT-wrapped); its weights are changed and restored.
        tokenizer: its tokenizer.
        before, after: the earlier and the later adapter (same modules, shapes and scaling).
        scores: module -> score (higher: more interference), e.g. ``{m: e.energy for m, e in pair.modules.items()}``.
        pairs: the earlier task's held-out ``{"prompt", "response"}`` pairs.
        k: modules to remove per variant (1..number of modules).
        n_random: random draws of k modules.
        seed: seed of the random draws.

    Returns:
        An :class:`Attribution`.

    Raises:
        ConfigError: k out of range, or a scored module the adapters do not adapt.
        MismatchError: the adapters do not pair up, or the base lacks a module.
    """
    return attribute_ks(model, tokenizer, before, after, scores, pairs, [k], n_random, seed)[0]


def attribute_ks(model, tokenizer, before: Adapter, after: Adapter, scores: dict[str, float], pairs: list[dict],
                 ks, n_random: int = 3, seed: int = 0) -> list[Attribution]:
    """:func:`attribute_modules` for several k, the unmodified ``before`` and ``after`` scored once.

    Costs ``2 + len(ks) (1 + n_random)`` held-out NLL passes over ``pairs``. Same arguments, errors and
    random draws (per k, from ``seed``) as :func:`attribute_modules`.
    """
    mods = _check_pair(before, after)
    bad = [k for k in ks if not 1 <= k <= len(mods)]
    if bad:
        raise ConfigError(f"attribution: k must be in 1..{len(mods)}, got {bad[0]}")
    unknown = sorted(set(scores) - set(mods))
    if unknown:
        raise ConfigError(f"attribution: scores name modules the adapters do not adapt: {unknown[:3]}")
    named = dict(model.named_modules())
    originals = {m: named[m].weight.detach().clone() for m in mods if m in named}
    ranked = sorted(mods, key=lambda m: -scores.get(m, float("-inf")))

    def nll(adapter: Adapter) -> float:
        return _nll(model, tokenizer, adapter, originals, pairs)

    out = []
    try:
        nll_before, nll_after = nll(before), nll(after)
        for k in ks:
            rng = random.Random(seed)
            draws = [sorted(rng.sample(mods, k)) for _ in range(n_random)]
            top = ranked[:k]
            nll_top = nll(with_update_removed(before, after, top))
            nll_rand = [nll(with_update_removed(before, after, d)) for d in draws]
            out.append(Attribution(k, nll_before, nll_after, nll_top, top, nll_rand, draws))
    finally:
        with torch.no_grad():
            for m, w in originals.items():
                named[m].weight.copy_(w)
    return out
