"""Helpers shared by the stage executors: settings from resolved stage params, inputs' artifacts."""

from __future__ import annotations

from pathlib import Path

from workbench.adapters.spec import AdapterSpec
from workbench.models.base import BaseSpec
from workbench.train.config import TrainConfig


def base_spec(params: dict) -> BaseSpec:
    b = params.get("base") or {}
    return BaseSpec(name=b.get("model", BaseSpec.name), dtype=b.get("dtype", "float32"),
                    quantize=b.get("quantize"), trust_remote_code=bool(b.get("trust_remote_code", False)))


def train_config(p: dict) -> TrainConfig:
    return TrainConfig(lr=p["lr"], steps=p.get("steps") or 0, epochs=p.get("epochs") or 1.0,
                       batch_size=p["batch_size"], grad_accum=p.get("grad_accum", 1), max_length=p["max_length"],
                       warmup_ratio=p.get("warmup_ratio", 0.0), schedule=p.get("scheduler", "cosine"),
                       weight_decay=p.get("weight_decay", 0.0), seed=p.get("seed", 0),
                       checkpoint_every=p.get("checkpoint_every", 10))


def adapter_spec(p: dict, method: str | None = None) -> AdapterSpec:
    return AdapterSpec(method=method or p["method"], rank=p.get("rank", 8), alpha=p.get("alpha", 16.0),
                       target_modules=tuple(p.get("target_modules") or AdapterSpec.target_modules),
                       dropout=p.get("dropout", 0.0), a_seed=p.get("a_seed", p.get("seed", 0)), task=p["task"],
                       options=tuple((p.get("options") or {}).items()))


def task_of(p: dict, name_key: str = "task", spec_key: str = "task_spec"):
    """The task to train on: a registered name, or a custom task built from the pipeline's `tasks:`."""
    spec = p.get(spec_key)
    if not spec:
        return p[name_key]
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
