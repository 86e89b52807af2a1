"""Helpers shared by the stage kinds: settings from resolved stage params, inputs' artifacts.

Torch-free at import (the stage-kind modules that use it are imported by ``workbench validate``): the
adapter, model and training modules are imported inside the functions that build their values.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from workbench.settings import LOOP_FIELDS


def base_spec(params: dict):
    """The :class:`~workbench.models.base.BaseSpec` of a stage's resolved ``base`` section."""
    from workbench.models.base import BaseSpec

    b = params.get("base") or {}
    return BaseSpec(name=b.get("model", BaseSpec.name), dtype=b.get("dtype", "float32"),
                    quantize=b.get("quantize"), trust_remote_code=bool(b.get("trust_remote_code", False)))


def train_config(p: dict):
    """The :class:`~workbench.train.config.TrainConfig` of a stage's resolved loop settings (a setting the
    params do not carry, or carry as None such as ``steps`` of an epoch-long stage, takes its default)."""
    from workbench.train.config import TrainConfig

    return TrainConfig(**{k: p[k] for k in LOOP_FIELDS if p.get(k) is not None})


def adapter_spec(p: dict, method: str | None = None):
    """The :class:`~workbench.adapters.spec.AdapterSpec` of a stage's resolved shape settings."""
    from workbench.adapters.spec import AdapterSpec

    shape = {k: p[k] for k in ("rank", "alpha", "dropout") if p.get(k) is not None}
    if p.get("target_modules"):
        shape["target_modules"] = tuple(p["target_modules"])
    a_seed = p.get("a_seed") if p.get("a_seed") is not None else p.get("seed")
    if a_seed is not None:
        shape["a_seed"] = a_seed
    return AdapterSpec(method=method or p["method"], task=p["task"], options=tuple((p.get("options") or {}).items()),
                       **shape)


def task_of(p: dict, name_key: str = "task", spec_key: str = "task_spec"):
    """The task to train on: a registered name, that task with the options of the pipeline's `tasks:`, or a
    custom task built from it."""
    spec = p.get(spec_key)
    if not spec:
        return p[name_key]
    if "path" not in spec:  # a registered task with the pipeline's options
        from workbench.data.registry import get_task

        return get_task(p[name_key], **spec["options"])
    from workbench.data.tasks.custom import custom_task

    fields = {k: v for k, v in spec.items() if k != "path"}
    return custom_task(p[name_key], spec["path"], **fields)


def artifact(inputs: dict, task, role: str, name: str) -> Path | None:
    """The artifact ``name`` of the stage bound to ``role`` (None when the role is unbound)."""
    t = task.input(role)
    return None if t is None else Path(inputs[t.name].artifacts[name])


def artifacts(inputs: dict, task, field: str, name: str) -> list[Path]:
    return [Path(inputs[t.name].artifacts[name]) for t in task.inputs_for(field)]


def public_summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("trace", "world")}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _num(v, digits: int) -> str:
    """Counts and rates at their own precision, with thousands separators: 1,244,160 trainable, 2,385 MB."""
    return "-" if v is None else f"{v:,.{digits}f}"


def fmt(v) -> str:
    """A metric for summary.md: floats to 3 decimals, None as '-'."""
    return _fmt(v)


def _loss_words(metrics: dict) -> str:
    """The held-out change of the stage's own task (``heldout``, added by ``summary_markdown``), else the
    batch loss of the first and last steps, marked as such."""
    h = metrics.get("heldout")
    if h:
        return f"held-out NLL ({h['task']}) {_fmt(h['before'])} -> {_fmt(h['after'])} ({h['after'] - h['before']:+.3f})"
    # runs from before loss_head/loss_tail existed show the single first and last batch
    head, tail = metrics.get("loss_head", metrics.get("first_loss")), metrics.get("loss_tail", metrics.get("last_loss"))
    k = metrics.get("loss_window", 1)
    window = f"mean of first/last {k} steps" if k > 1 else "first/last step"
    return f"batch loss {_fmt(head)} -> {_fmt(tail)} ({window}; no held-out evaluation)"


def training_headline(metrics: dict) -> str:
    """The summary.md line of a training stage (train, continue)."""
    return (f"{_loss_words(metrics)}, {metrics.get('steps')} steps, "
            f"{_num(metrics.get('tokens_per_s'), 1)} tok/s, {_num(metrics.get('trainable_params'), 0)} trainable, "
            f"peak RSS {_num(metrics.get('peak_rss_mb'), 0)} MB")


@contextlib.contextmanager
def stage_tracker(task, context):
    """The stage's experiment trackers (workbench/tracking.py), or None when the run has none; finished on
    exit. Opened in the process that runs the stage, so parallel and Ray workers log for themselves."""
    opts = context.options
    tracker = None
    if opts.get("tracking"):
        from workbench.tracking import open_tracker

        tracker = open_tracker(opts["tracking"], context.run_dir, task.name,
                               config={"pipeline": opts.get("tracking_config") or {}, "stage": task.params})
    try:
        yield tracker
    finally:
        if tracker is not None:
            tracker.finish()
