"""Evaluate a model on tasks: ``evaluate_task`` (one task, in memory) and ``evaluate_adapter`` (the CLI's
one call: load a base and an adapter, evaluate several tasks, write JSON).

Every number is returned with the settings that produced it (generation config, seeds, limit, judge,
NLU mode). With several seeds the metrics are the mean over seeds, with the sample standard deviation
next to them; greedy decoding varies across seeds only through the seeded subset of ``limit`` records.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

from workbench.errors import ConfigError
from workbench.evaluate.generate import GenerationConfig
from workbench.evaluate.metrics import KINDS
from workbench.evaluate.runner import Runner

HELDOUT_DEFAULT = 200


def summarize_seeds(per_seed: list[dict]) -> tuple[dict, dict]:
    """Mean and sample std (0 for one seed) of each metric over seeds. NaNs propagate."""
    names = sorted({k for r in per_seed for k in r["metrics"]})
    mean, std = {}, {}
    for name in names:
        values = [r["metrics"][name] for r in per_seed if name in r["metrics"]]
        mean[name] = sum(values) / len(values)
        std[name] = statistics.stdev(values) if len(values) > 1 and not any(map(math.isnan, values)) else 0.0
    return mean, std


def evaluate_task(model, tokenizer, task, limit: int | None = None, seeds=(0,), gen: GenerationConfig | None = None,
                  heldout: bool = True, heldout_limit: int | None = None, runner: Runner | None = None,
                  generate: bool = True, **kind_options) -> dict:
    """Evaluate one task.

    Args:
        model: a causal LM (transformers or PEFT), eval mode.
        tokenizer: its tokenizer.
        task: a ``workbench.data`` Task, or its registry name.
        limit: records per evaluation split (a seeded subset); None for all.
        seeds: one run per seed (sampling seed, and the subset seed when ``limit`` is set).
        gen: generation settings; unset fields take the task kind's defaults.
        heldout: also compute the mean NLL of the reference responses on held-out pairs.
        heldout_limit: held-out pairs to score (default ``limit`` or 200).
        runner: a preconfigured runner (judge, NLU mode, sandbox limits); ``model``/``tokenizer``/``gen``
            are then taken from it.
        generate: False scores the held-out NLL alone (no generation, no kind metric; the primary metric
            is then ``nll``, lower is better): a task whose own metric a budget cannot afford.
        **kind_options: passed to the kind's evaluator (``n_samples``/``ks`` for code, ``mode`` for nlu).

    Returns:
        ``{"task", "kind", "primary", "higher_is_better", "metrics": {name: mean}, "std": {name: std},
        "details": {"per_seed": [...], "heldout": {...}}, "settings": {...}}``.

    Raises:
        ConfigError: unknown task or task kind.
    """
    task = _resolve_task(task)
    entry = KINDS.entry(task.kind)
    runner = (runner or Runner(model, tokenizer, gen or GenerationConfig())).for_kind(
        entry.extra["max_new_tokens"], entry.extra["stop"])
    seeds = list(seeds)
    if not generate and not heldout:
        raise ConfigError(f"task '{task.name}': generate=False leaves only the held-out NLL, so heldout must be True")
    per_seed = []
    for seed in seeds if generate else ():
        torch.manual_seed(seed)
        result = entry.obj(runner, task, limit, seed, **kind_options)
        per_seed.append({"seed": seed, **result})
    metrics, std = summarize_seeds(per_seed)
    details: dict = {"per_seed": per_seed}
    if heldout:
        details["heldout"] = runner.response_nll(task.heldout_pairs(heldout_limit or limit or HELDOUT_DEFAULT))
        metrics["nll"], std["nll"] = details["heldout"]["nll"], 0.0
    settings = {"generation": runner.gen.to_dict() if generate else None, "seeds": seeds, "limit": limit, "nlu_mode": runner.nlu_mode,
                "raw_prompts": runner.raw_prompts, **{k: v for k, v in kind_options.items()}}
    # the safety judge that produced the numbers (None for kinds that use no judge)
    judge = per_seed[0].get("details", {}).get("judge") if per_seed else None
    primary, higher = (entry.extra["primary"], entry.extra["higher_is_better"]) if generate else ("nll", False)
    return {"task": task.name, "kind": task.kind, "primary": primary, "higher_is_better": higher,
            "metrics": metrics, "std": std,
            "details": details, "settings": settings, "judge": judge}


def _resolve_task(task):
    if isinstance(task, str):
        from workbench.data.registry import get_task  # lazy: the data layer is optional for callers with Tasks

        return get_task(task)
    return task


def load_for_eval(adapter_dir: str | Path | None, base: str | None = None, device: str | None = None,
                  trust_remote_code: bool = False, pad_token: str | None = None):
    """Load a base model (``workbench.models.base.load_base``) and, unless ``adapter_dir`` is None, the
    adapter on top (``workbench.adapters.live.load_onto``: the base-fingerprint check, then the adapter's
    method loads it, e.g. AdaLoRA with its reduced ranks).

    Args:
        adapter_dir: a PEFT adapter directory, or None for the base alone.
        base: base model name; default the adapter's recorded base (``workbench.json`` ``base``), else
            the embedded default.
        device: "cpu", "cuda", ...; default CUDA when available.
        trust_remote_code: let ``base`` run code from its model repository (``--trust-remote-code``).
        pad_token: how the base alone is loaded (``eos``, the default, or ``add``); an adapter's recorded
            ``pad_token`` wins, since its base must be loaded as it was in training.

    Returns:
        ``(model, tokenizer, info)``; ``info`` names the base and the adapter.

    Raises:
        MismatchError: the adapter records a base fingerprint that differs from the loaded base's.
    """
    from workbench.models.base import EMBEDDED, BaseSpec, load_base

    adapter = None
    if adapter_dir is not None:
        from workbench.adapters.adapter import load_adapter
        from workbench.adapters.registry import loadable_peft_types

        # checked read: clear errors for a broken directory, before the base is loaded
        adapter = load_adapter(adapter_dir, peft_types=loadable_peft_types())
    base = base or _recorded_base(adapter) or EMBEDDED
    pad = (adapter.meta.get("pad_token") if adapter is not None else None) or pad_token or "eos"
    model, tokenizer = load_base(BaseSpec(base, trust_remote_code=trust_remote_code, pad_token=pad))
    if adapter is not None:
        from workbench.adapters.live import load_onto

        # adapter.path: the adapter directory itself, also when given a training output dir (OUT/adapter)
        model = load_onto(model, adapter, hint=f" ('{base}'); pass the right --base")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    return model, tokenizer, {"base": base, "adapter": str(adapter_dir) if adapter_dir else None, "device": device}


def _recorded_base(adapter) -> str | None:
    """The base an adapter names: ``workbench.json`` ``base``, or PEFT's ``base_model_name_or_path`` when it
    is the embedded alias or an existing local path (a hub id is not fetched implicitly)."""
    from workbench.models.base import EMBEDDED

    if adapter is None:
        return None
    named = adapter.meta.get("base") or adapter.config.get("base_model_name_or_path")
    if isinstance(named, str) and (named == EMBEDDED or Path(named).expanduser().exists()):
        return named
    return None


def evaluate_adapter(adapter_dir, tasks: list[str], base: str | None = None, limit: int | None = None,
                     seeds=(0,), gen: GenerationConfig | None = None, out: str | Path | None = None,
                     nlu_mode: str = "generate", device: str | None = None, trust_remote_code: bool = False) -> dict:
    """Load (base + adapter, or the base alone when ``adapter_dir`` is None), evaluate every task, and
    write the result JSON atomically to ``out`` when given. Under ``accelerate launch`` (N processes) each
    process computes every N-th batch (``workbench.evaluate.shard``) and the main process writes.

    Returns:
        ``{"model": info, "tasks": {name: evaluate_task result}}``.
    """
    from workbench.evaluate import shard
    from workbench.io.atomic import atomic_write_json

    tasks = [_resolve_task(t) for t in tasks]  # unknown names fail before the model is loaded
    shard.init_process_group()  # under accelerate launch / torchrun: each process computes every N-th batch
    main = shard.world()[0] == 0
    model, tokenizer, info = load_for_eval(adapter_dir, base, device or shard.device(),
                                           trust_remote_code=trust_remote_code)
    runner = Runner(model, tokenizer, gen or GenerationConfig(), nlu_mode=nlu_mode)
    report = {"model": info, "tasks": {}}
    for task in tasks:
        report["tasks"][task.name] = evaluate_task(model, tokenizer, task, limit=limit, seeds=seeds, runner=runner)
        if out is not None and main:
            atomic_write_json(out, report)  # after each task, so a long run leaves its finished tasks behind
    return report
