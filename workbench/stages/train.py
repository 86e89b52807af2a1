"""Train an adapter on a task: load the base, read and tokenize the task's data, run the loop."""

from __future__ import annotations

from pathlib import Path

from workbench.adapters.adapter import Adapter, load_adapter
from workbench.adapters.spec import AdapterSpec
from workbench.errors import MismatchError
from workbench.hashing import tensors_hash
from workbench.models.base import BaseSpec, load_base
from workbench.stages.timing import phase
from workbench.train.config import TrainConfig
from workbench.train.loop import TrainResult, train


def task_examples(tokenizer, task, cfg: TrainConfig, limit: int | None = None, data_dir=None) -> list[dict]:
    """Tokenized training examples of a task under ``cfg.template`` (loss on response tokens only)."""
    from workbench.data.prompts import tokenize_records
    from workbench.data.registry import get_task

    from workbench.protocols import with_template

    records = with_template(get_task(task), cfg.template).train_records(limit=limit, seed=cfg.seed, data_dir=data_dir)
    return tokenize_records(tokenizer, records, cfg.max_length)


def continued_spec(spec: AdapterSpec, init: Adapter) -> AdapterSpec:
    """Continuing an adapter keeps its rank, alpha, targets and A seed; refuse a spec that says otherwise."""
    old = init.meta.get("spec")
    if not old:
        return spec
    fixed = {k: old[k] for k in ("rank", "alpha", "a_seed", "use_rslora") if k in old}
    fixed["target_modules"] = tuple(old.get("target_modules", spec.target_modules))
    return AdapterSpec(**{**spec.to_dict(), **fixed, "options": spec.options})


def train_task(base: BaseSpec | str, task, spec: AdapterSpec, cfg: TrainConfig, out_dir, *,
               init: Adapter | str | None = None, mask=None, limit: int | None = None, data_dir=None,
               force: bool = False, progress: bool = True, model=None, tokenizer=None,
               log_step=None) -> TrainResult:
    """Train ``spec`` on ``task`` and write ``out_dir/adapter``.

    Args:
        base: the base model to load (ignored when ``model``/``tokenizer`` are given).
        init: adapter (or path) to continue; its rank, alpha, targets and A seed are kept.
        mask: a Mask (or path to a mask file) for lori_s.
        limit: use at most this many training records.
        log_step: per-step callback for experiment trackers (``workbench.tracking.step_logger``).

    Raises:
        ConfigError: unknown task or method, bad method options, or a base the method cannot train on.
        MismatchError: the mask or the adapter to continue does not fit (another base included).
    """
    from workbench.adapters.registry import get_method
    from workbench.data.registry import get_task
    from workbench.masking.file import load_mask

    task = get_task(task)  # unknown names fail before any weight is loaded
    method = get_method(spec.method)
    method.options(spec)  # so do bad method options
    if model is None:
        base = BaseSpec(base) if isinstance(base, str) else base
        with phase("load"):
            # qlora brings its own 4-bit base; pad_token: add resizes the embeddings (workbench/models/base.py)
            model, tokenizer = load_base(method.resolve_base(base).with_pad_token(cfg.pad_token))
    init = load_adapter(init) if isinstance(init, (str, Path)) else init
    if init is not None:
        spec = continued_spec(spec, init)
    mask_obj = load_mask(mask) if isinstance(mask, (str, Path)) else mask
    examples = task_examples(tokenizer, task, cfg, limit, data_dir)
    base_name = base.name if isinstance(base, BaseSpec) else base
    meta = {"task": task.name, "name": Path(out_dir).name, "base": base_name,
            "parent": str(init.path) if init is not None and init.path else None,
            "parent_hash": tensors_hash(init.tensors) if init is not None else None}
    if mask_obj is not None:
        meta.update(mask_hash=mask_obj.content_hash(), mask_kept=int(mask_obj.kept()))
        _check_mask_base(mask_obj, init)
    return train(model, examples, spec, cfg, out_dir, init=init, mask=mask_obj.tensors if mask_obj else None,
                 pad_id=tokenizer.pad_token_id or 0, force=force, progress=progress, meta=meta,
                 fault_tag=Path(out_dir).name.rsplit("-", 1)[0], log_step=log_step)


def _check_mask_base(mask, init: Adapter | None) -> None:
    fp = mask.meta.get("base_fingerprint")
    if init is not None and fp and init.fingerprint and fp != init.fingerprint:
        raise MismatchError(f"mask was calibrated on base {fp}, the adapter to continue is on {init.fingerprint}")
