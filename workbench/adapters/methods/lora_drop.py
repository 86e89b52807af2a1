"""``lora_drop``: LoRA-drop (Zhou et al. 2024, arXiv:2402.07721): keep LoRA where its output matters,
share one LoRA across the rest.

Two phases (:meth:`LoraDrop.run`, the method's training phases, called by the loop with its single
phase to call back, so this module never imports the loop): (1) train plain LoRA briefly on a sample of the data and score every
adapted module by the mean squared norm of its LoRA output ``||s B A x||^2`` over the sample's tokens
(:func:`lora_importances`); normalise the scores to sum to 1, sort them, and keep modules until the
cumulative importance reaches ``threshold`` (or keep the ``top_n`` best) (:func:`lora_drop_select`);
(2) train from a fresh initialisation on all the data, the kept modules with their own LoRA and the
dropped ones sharing parameters.

Sharing: the paper gives all dropped layers one shared LoRA. Modules of different projection types have
different shapes, so here the dropped modules share one ``lora_A``/``lora_B`` pair *per projection type*
(all dropped ``q_proj`` share one pair, all dropped ``down_proj`` another): the very same ``nn.Linear`` is
placed in each of their PEFT layers, so it is one parameter for the optimizer. The saved adapter is plain
PEFT LoRA with the shared values written under every module's keys (any LoRA loader reads it).

PEFT's: the LoRA layers. Ours: importance scoring, selection, parameter tying and the two-phase runner.

Options: ``threshold`` (0.9), ``top_n`` (instead of the threshold), ``probe_fraction`` (0.1 of the
examples, at least one batch), ``probe_steps`` (default: one epoch over the sample); ``dropped`` (the
module keys to share; set by :meth:`LoraDrop.run`, needed by :meth:`LoraDrop.attach`).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pydantic import Field

from workbench.adapters.method import Method, MethodOptions, lora_layers
from workbench.adapters.registry import register_method
from workbench.errors import ConfigError, MismatchError
from workbench.keys import A_SUFFIX, B_SUFFIX, module_key, projection_of

if TYPE_CHECKING:
    import torch


class LoraDropOptions(MethodOptions):
    threshold: float = Field(0.9, gt=0, le=1, description="cumulative importance the kept modules reach")
    top_n: Optional[int] = Field(None, ge=1, description="keep exactly this many modules (overrides threshold)")
    probe_fraction: float = Field(0.1, gt=0, le=1, description="share of the examples the probe trains on")
    probe_steps: int = Field(0, ge=0, description="probe optimizer steps (0: one epoch over the sample)")
    dropped: Optional[list[str]] = Field(None, strict=False, description="module keys sharing LoRA (set by run)")


def lora_drop_select(importances: dict[str, float], threshold: float | None = 0.9,
                     top_n: int | None = None) -> tuple[list[str], list[str]]:
    """Split modules into kept and dropped by importance.

    Args:
        importances: module key -> importance (>= 0; normalised here to sum to 1).
        threshold: keep the most important modules until their cumulative share reaches this (0, 1].
        top_n: keep exactly the ``top_n`` most important modules instead (overrides ``threshold``).

    Returns:
        ``(kept, dropped)``, each sorted by decreasing importance (ties broken by name).

    Raises:
        ConfigError: empty input, negative or non-finite scores, or a threshold / top_n out of range.
    """
    if not importances:
        raise ConfigError("lora_drop: no module importances to select from")
    if any(not (v >= 0 and v != float("inf")) for v in importances.values()):
        raise ConfigError("lora_drop: importances must be finite and >= 0")
    order = sorted(importances, key=lambda m: (-importances[m], m))
    if top_n is not None:
        if not 1 <= int(top_n) <= len(order):
            raise ConfigError(f"options.top_n: must be in [1, {len(order)}] (got {top_n})")
        n = int(top_n)
    else:
        if threshold is None or not 0 < threshold <= 1:
            raise ConfigError(f"options.threshold: must be in (0, 1] (got {threshold})")
        n = _count_to_threshold([importances[m] for m in order], threshold)
    return order[:n], order[n:]


def _count_to_threshold(sorted_scores: list[float], threshold: float) -> int:
    total = sum(sorted_scores)
    if total == 0:  # nothing has moved yet: no basis to drop anything
        return len(sorted_scores)
    cum = 0.0
    for i, s in enumerate(sorted_scores):
        cum += s / total
        if cum >= threshold - 1e-12:
            return i + 1
    return len(sorted_scores)


def lora_importances(pm, input_ids: list[list[int]] | torch.Tensor) -> dict[str, float]:
    """Mean squared norm of each LoRA module's output ``s B A x`` over the tokens of a fixed sample.

    Args:
        pm: a PEFT LoRA model (briefly trained).
        input_ids: sequences (a list of id lists, each run on its own so there is no padding) or a
            ``(b, t)`` tensor without padding.

    Returns:
        module key -> importance (not normalised).
    """
    import torch

    layers = lora_layers(pm)
    sums = {m: 0.0 for m in layers}
    tokens = {m: 0 for m in layers}
    hooks = [layer.lora_B["default"].register_forward_hook(_accumulate(m, float(layer.scaling["default"]), sums, tokens))
             for m, layer in layers.items()]
    was_training = pm.training
    pm.eval()
    try:
        rows = input_ids if isinstance(input_ids, torch.Tensor) else [torch.tensor([ids]) for ids in input_ids]
        device = next(pm.parameters()).device
        with torch.no_grad():
            for ids in rows:
                pm(input_ids=ids.reshape(-1, ids.shape[-1]).to(device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        pm.train(was_training)
    return {m: sums[m] / max(tokens[m], 1) for m in layers}


def _accumulate(module: str, scaling: float, sums: dict, tokens: dict):
    def hook(_mod, _inputs, out):  # out: B A x, (b, t, out_features)
        sq = (out.float() * scaling).pow(2).sum(-1)  # (b, t)
        sums[module] += float(sq.sum())
        tokens[module] += sq.numel()
    return hook


def tie_dropped(pm, dropped: list[str]) -> dict[str, str]:
    """Make the dropped modules of each projection type share one lora_A/lora_B pair (the first one's).

    Returns:
        dropped module key -> the module key whose parameters it now uses.

    Raises:
        MismatchError: a dropped module is not adapted, or shapes within a projection type differ.
    """
    layers = lora_layers(pm)
    unknown = sorted(set(dropped) - set(layers))
    if unknown:
        raise MismatchError(f"options.dropped: modules {unknown[:3]} are not adapted in this model")
    owner: dict[str, str] = {}
    source: dict[str, str] = {}
    for module in sorted(dropped):
        first = owner.setdefault(projection_of(module), module)
        src, dst = layers[first], layers[module]
        if src.lora_A["default"].weight.shape != dst.lora_A["default"].weight.shape or \
                src.lora_B["default"].weight.shape != dst.lora_B["default"].weight.shape:
            raise MismatchError(f"lora_drop: {module} and {first} differ in shape; they cannot share LoRA")
        dst.lora_A["default"] = src.lora_A["default"]  # the same nn.Linear: one parameter, one optimizer state
        dst.lora_B["default"] = src.lora_B["default"]
        source[module] = first
    return source


class LoraDrop(Method):
    name = "lora_drop"
    train_a = True
    Options = LoraDropOptions

    def attach(self, model, spec, init=None, mask=None, base_name=None):
        """Attach LoRA, then tie the parameters of the modules listed in ``options.dropped``.

        Raises:
            ConfigError: no ``dropped`` option (the selection comes from :meth:`run`).
        """
        dropped = self.options(spec).dropped
        if dropped is None:
            raise ConfigError("method 'lora_drop' needs its module selection: train it with the workbench loop "
                              "(workbench.train; its probe phase selects the modules), or set options.dropped "
                              "to the module keys that share LoRA")
        pm = super().attach(model, spec, init=init, mask=mask, base_name=base_name)
        tie_dropped(pm, list(dropped))
        return pm

    def run(self, phase, model, examples: list[dict], spec, cfg, out_dir, *, progress: bool = True,
            force: bool = False, meta: dict | None = None, **train_kw):
        """Run LoRA-drop: probe training on a sample, importance selection, then full training.

        Args:
            phase: the loop's single training run (``workbench.train.loop.train_phase``), called twice.
            model: a transformers causal LM (wrapped in place; the probe LoRA is removed before phase 2).
            examples, cfg, progress, force, train_kw: as for :func:`workbench.train.loop.train`.
            spec: a ``lora_drop`` spec; its options set threshold / top_n / probe_fraction / probe_steps.
            out_dir: phase 2 writes ``out_dir/adapter``; the probe run lives in ``out_dir/probe``.

        Returns:
            Phase 2's ``TrainResult``; its adapter's workbench.json records the importances and the selection.

        Raises:
            ConfigError: bad options (see :func:`lora_drop_select`).
        """
        opts = self.options(spec)
        sample = probe_sample(examples, opts.probe_fraction, cfg.batch_size, cfg.seed)
        probe_cfg = dataclasses.replace(cfg, steps=opts.probe_steps, epochs=1.0, checkpoint_every=0)
        probe_spec = dataclasses.replace(spec, method="lora", options=())
        probe = phase(model, sample, probe_spec, probe_cfg, Path(out_dir) / "probe", progress=progress, force=force,
                      pad_id=train_kw.get("pad_id", 0))
        scores = lora_importances(probe.model, [ex["input_ids"] for ex in sample])
        kept, dropped = lora_drop_select(scores, opts.threshold, opts.top_n)
        base = probe.model.unload()  # the base without the probe's LoRA layers (weights untouched)
        full_spec = dataclasses.replace(spec, options={**dict(spec.options), "dropped": tuple(dropped)})
        record = {"importances": scores, "kept": kept, "dropped": dropped, "probe_examples": len(sample),
                  "probe_loss": [probe.summary["first_loss"], probe.summary["last_loss"]]}
        return phase(base, examples, full_spec, cfg, out_dir, progress=progress, force=force,
                     meta={**(meta or {}), "lora_drop": record}, **train_kw)

    def trainable(self, adapter) -> int | None:
        """Kept modules' A and B, plus one shared pair per projection type of the dropped modules (the
        files repeat the shared values under every dropped module's keys)."""
        dropped = set(((adapter.meta.get("spec") or {}).get("options") or {}).get("dropped") or ())
        if not dropped and "lora_drop" not in adapter.meta:
            return None
        shared: set[str] = set()
        total = 0
        for key, t in adapter.tensors.items():
            if ".lora_" not in key:
                continue
            module = module_key(key)
            if module in dropped and key.endswith((A_SUFFIX, B_SUFFIX)):
                group = (projection_of(module), key.endswith(A_SUFFIX))
                if group in shared:
                    continue
                shared.add(group)
            total += t.numel()
        return total


def probe_sample(examples: list[dict], fraction: float, batch_size: int, seed: int) -> list[dict]:
    """A seeded random sample of ``fraction`` of the examples (at least one batch, at most all)."""
    n = min(len(examples), max(batch_size, round(fraction * len(examples))))
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


register_method(LoraDrop(), reference="https://arxiv.org/abs/2402.07721")
