"""The merge API: ``merge`` (adapters -> adapter), ``merge_into_base`` (adapter -> model weights), and
``merge_adapters_into_base`` (adapters -> model weights, dense results added without SVD)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from pydantic import BaseModel

from workbench.adapters.adapter import Adapter, check_same_base, load_adapter
from workbench.adapters.factors import ModuleFactors
from workbench.errors import ConfigError, MismatchError, NonFiniteError, WorkbenchError
from workbench.merges.checks import check_mergeable, label
from workbench.merges.dora import restore_magnitudes, single_dora, strip_magnitudes
from workbench.merges.output import merged_config, merged_tensors, save_model_dir, source_record
from workbench.merges.params import FreeParams, parse_params
from workbench.merges.primitives import all_finite, compress_dense, compute_dtype, module_order
from workbench.merges.registry import MERGES, MergeContext

Strategy = Callable[..., "ModuleFactors | torch.Tensor"]


@dataclass
class MergePlan:
    """A validated merge: inputs, weights, the strategy function and its parsed parameters."""

    adapters: list[Adapter]
    weights: list[float]
    name: str
    fn: Strategy
    params: BaseModel

    def record(self, sources: list[dict] | None = None) -> dict:
        """What the output records about how it was made (``sources``: precomputed source records)."""
        if sources is None:
            sources = [source_record(a, w) for a, w in zip(self.adapters, self.weights)]
        return {"method": "merged", "strategy": self.name, "params": self.params.model_dump(),
                "weights": list(self.weights), "base_fingerprint": check_same_base(self.adapters),
                "sources": sources}


def plan_merge(adapters, strategy: str | Strategy = "concat", weights=None, **params) -> MergePlan:
    """Load and check the inputs, resolve the strategy, validate its parameters, run its whole-input check.

    Args:
        adapters, strategy, weights, **params: as for :func:`merge`.

    Returns:
        A :class:`MergePlan` ready for :func:`run_merge`.

    Raises:
        WorkbenchError: any input or parameter the merge cannot accept (see ``checks.check_mergeable``).
    """
    adapters = [a if isinstance(a, Adapter) else load_adapter(a) for a in adapters]
    check_mergeable(adapters)
    weights = _weights(weights, len(adapters))
    if callable(strategy):
        name, fn, model, check = getattr(strategy, "__name__", "custom"), strategy, FreeParams, None
    else:
        entry = MERGES.entry(strategy)
        name, fn, model, check = entry.name, entry.obj, entry.params or FreeParams, entry.extra.get("check")
    parsed = parse_params(model, name, params)
    if check is not None:
        check(adapters, weights, parsed)
    return MergePlan(adapters, weights, name, fn, parsed)


def _weights(weights, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ConfigError(f"weights: {len(weights)} given for {n} adapters (one weight per adapter)")
    if not all(torch.isfinite(torch.tensor(weights))):
        raise NonFiniteError(f"weights: {weights} contains NaN or infinite values")
    return weights


def run_merge(plan: MergePlan) -> Iterator[tuple[str, ModuleFactors | torch.Tensor, int]]:
    """Run the strategy module by module in the model's order; yields (module, result, default rank).

    The result is ModuleFactors or a dense (out, in) update, checked for shape and finiteness.
    """
    all_factors = [a.factors() for a in plan.adapters]
    seed = getattr(plan.params, "seed", 0)
    generator = torch.Generator().manual_seed(int(seed if isinstance(seed, int) else 0))
    sources = [label(a) for a in plan.adapters]
    for module in module_order(all_factors[0]):
        factors = [_as_compute(fs[module]) for fs in all_factors]
        ctx = MergeContext(module=module, sources=sources, generator=generator)
        result = plan.fn(factors, plan.weights, plan.params, ctx)
        _check_result(plan.name, module, result, factors[0])
        yield module, result, max(f.rank for f in factors)


def _as_compute(f: ModuleFactors) -> ModuleFactors:
    dtype = compute_dtype(f.A, f.B)
    return ModuleFactors(f.A.to(dtype), f.B.to(dtype), f.scaling)


def _check_result(name: str, module: str, result, ref: ModuleFactors) -> None:
    shape = (ref.B.shape[0], ref.A.shape[1])
    if isinstance(result, ModuleFactors):
        got, tensors = (result.B.shape[0], result.A.shape[1]), (result.A, result.B)
        if result.A.shape[0] != result.B.shape[1]:
            raise WorkbenchError(f"strategy '{name}' returned mismatched ranks at module {module}")
    elif isinstance(result, torch.Tensor):
        got, tensors = tuple(result.shape), (result,)
    else:
        raise WorkbenchError(f"strategy '{name}' returned {type(result).__name__} at module {module}; "
                             "expected ModuleFactors or a dense torch.Tensor (out, in)")
    if tuple(got) != shape:
        raise WorkbenchError(f"strategy '{name}' returned shape {tuple(got)} at module {module}, expected {shape}")
    if not all(all_finite(t) for t in tensors):
        raise NonFiniteError(f"strategy '{name}' produced NaN or infinite values at module {module}")


def merge(adapters: list, strategy: str | Strategy = "concat", weights=None, **params) -> Adapter:
    """Merge LoRA adapters into one adapter.

    Args:
        adapters: Adapter values or adapter directories (PEFT format).
        strategy: a registered name (``workbench.merges.MERGES.names()``) or a callable
            ``fn(factors, weights, params, ctx)`` (see ``registry.py``); a callable receives its keyword
            parameters as attributes of ``params``.
        weights: one weight per adapter (default 1.0 each); what a weight means depends on the strategy
            (see workbench/merges/README.md).
        **params: the strategy's parameters (``density``, ``seed``, ``rank``, ``space``, ...). Dense results
            are compressed by SVD to ``rank`` (default: the module's largest input rank).

    Returns:
        An in-memory Adapter (PEFT tensors and config, ``meta`` recording sources, strategy, params,
        weights and base fingerprint; method 'merged'). Save it with ``.save(path)``.

    Raises:
        WorkbenchError: inputs or parameters the strategy cannot accept.
    """
    dora = single_dora(adapters, weights)
    if dora is not None:
        name = strategy if isinstance(strategy, str) else getattr(strategy, "__name__", "custom")
        return restore_magnitudes(merge([strip_magnitudes(dora)], strategy, weights, **params), dora, name)
    plan = plan_merge(adapters, strategy, weights, **params)
    out_rank = getattr(plan.params, "rank", None)
    merged = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Hashing in-memory inputs (1.3 GB for four Llama-8B rank-32 adapters) overlaps the merge: hashlib
        # releases the GIL. Inputs read from directories reuse the hash in their sidecar.
        sources = [pool.submit(source_record, a, w) for a, w in zip(plan.adapters, plan.weights)]
        for module, result, default_rank in run_merge(plan):
            if isinstance(result, torch.Tensor):
                result = compress_dense(result, int(out_rank or default_rank))
            merged[module] = result
        meta = plan.record([s.result() for s in sources])
    dtype = _output_dtype(plan.adapters)
    return Adapter(tensors=merged_tensors(merged, dtype), config=merged_config(plan.adapters[0].config, merged),
                   meta=meta)


def _output_dtype(adapters: list[Adapter]) -> torch.dtype:
    dtype = None
    for a in adapters:
        for t in a.tensors.values():
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return dtype or torch.float32


def _linear_of(model, module: str, shape: tuple[int, int]) -> torch.nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        layer = base.get_submodule(module)
    except AttributeError:
        raise MismatchError(f"the base model has no module {module}") from None
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or getattr(weight, "quant_state", None) is not None:
        raise MismatchError(f"module {module} of the base model is not a plain floating-point Linear "
                            "(quantized bases cannot take merged weights; load the base unquantized)")
    if tuple(weight.shape) != shape:
        raise MismatchError(f"module {module}: base weight is {tuple(weight.shape)} but the update is {shape}")
    return layer


@torch.no_grad()
def _add_delta(model, module: str, delta: torch.Tensor) -> None:
    layer = _linear_of(model, module, tuple(delta.shape))
    w = layer.weight
    w.copy_((w.to(delta.dtype) + delta.to(w.device)).to(w.dtype))  # add in float32, store in the base dtype


def _check_model_base(model, adapters: list[Adapter]) -> None:
    from workbench.adapters.base_check import check_base

    check_base(adapters, model)


def merge_into_base(model, adapter: Adapter):
    """Add each module's ``scaling * B @ A`` to the matching Linear weight of ``model`` (in place).

    Args:
        model: a transformers model (or a PEFT-wrapped one: its base model is changed), unquantized.
        adapter: an Adapter or an adapter directory.

    Returns:
        The same model.

    Raises:
        MismatchError: a module is missing or has another shape, or the base fingerprint differs.
    """
    adapter = adapter if isinstance(adapter, Adapter) else load_adapter(adapter)
    check_mergeable([adapter])
    _check_model_base(model, [adapter])
    for module, f in adapter.factors().items():
        _add_delta(model, module, _as_compute(f).delta())
    return model


def merge_adapters_into_base(model, adapters: list, strategy: str | Strategy = "concat", weights=None, **params):
    """Merge adapters straight into the base weights: dense results are added as they are (no SVD).

    Args:
        model: a transformers model, unquantized (changed in place).
        adapters, strategy, weights, **params: as for :func:`merge` (``rank`` is refused: nothing is compressed).

    Returns:
        ``(model, record)``: the same model and the merge record (sources, strategy, params, weights).
    """
    if params.get("rank") is not None:
        raise ConfigError("rank has no effect when merging into the base weights (nothing is compressed)")
    plan = plan_merge(adapters, strategy, weights, **params)
    _check_model_base(model, plan.adapters)
    for module, result, _ in run_merge(plan):
        _add_delta(model, module, result.delta() if isinstance(result, ModuleFactors) else result)
    return model, plan.record()


def merge_to_dir(adapters: list, out, strategy: str = "concat", weights=None, base: str | None = None,
                 trust_remote_code: bool = False, **params) -> Path:
    """Merge and write: an adapter directory, or with ``base`` a merged model directory (what the CLI runs).

    Args:
        adapters, strategy, weights, **params: as for :func:`merge`.
        out: the output directory; it must not exist.
        base: a base model name (``workbench.models.base.load_base``) to merge into, or None for an adapter.
        trust_remote_code: let ``base`` run code from its model repository (``--trust-remote-code``).

    Returns:
        The output path.

    Raises:
        WorkbenchError: ``out`` exists, or any merge error.
    """
    out = Path(out)
    if out.exists():
        raise WorkbenchError(f"{out}: output already exists (choose another --out or remove it)")
    if base is None:
        return merge(adapters, strategy, weights, **params).save(out)
    from workbench.models.base import BaseSpec, load_base

    from workbench.models.fingerprint import base_fingerprint

    model, tokenizer = load_base(BaseSpec(base, trust_remote_code=trust_remote_code))
    fingerprint = base_fingerprint(model)  # of the base, before its weights change
    model, record = merge_adapters_into_base(model, adapters, strategy, weights, **params)
    record.update(method="merged_model", base=base, base_fingerprint=fingerprint)
    return save_model_dir(model, tokenizer, out, record)
