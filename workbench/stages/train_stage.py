"""Executors of the ``train`` and ``continue`` stage kinds."""

from __future__ import annotations

from pathlib import Path

from workbench.graph.task import StageResult
from workbench.stages.common import adapter_spec, artifact, artifacts, base_spec, public_summary, task_of, train_config
from workbench.stages.train import train_task


def run_train(task, inputs, out_dir: Path, context) -> StageResult:
    """A new adapter on one task (inside a mask for masked methods)."""
    p = task.params
    result = train_task(base_spec(p), task_of(p), adapter_spec(p), train_config(p), out_dir,
                        mask=artifact(inputs, task, "mask", "mask"), limit=p.get("max_samples"),
                        progress=context.options.get("progress", True))
    return StageResult(artifacts={"adapter": result.adapter_path}, metrics=public_summary(result.summary))


def run_continue(task, inputs, out_dir: Path, context) -> StageResult:
    """Keep training an adapter on a new task.

    With ``mask``: only inside it (LoRI-S continual step). With ``exclude`` and no mask (the LoRI-D probe
    of a later task): on every position no earlier mask owns, i.e. inside the complement of their union,
    so earlier tasks' entries stay bitwise frozen while the probe calibrates the new task's mask.
    """
    from workbench.adapters.adapter import load_adapter
    from workbench.io.mask_file import load_mask
    from workbench.masking.mask import Mask, union

    p = task.params
    init = load_adapter(artifact(inputs, task, "from", "adapter"))
    mask = artifact(inputs, task, "mask", "mask")
    method = p.get("method") or init.method
    excluded = artifacts(inputs, task, "exclude", "mask")
    if mask is None and excluded:
        owned = union([load_mask(m) for m in excluded])
        mask = Mask({k: ~v for k, v in owned.tensors.items()}, {"role": "probe-free-positions"})
        method = "lori_s"
    spec = adapter_spec({**(init.meta.get("spec") or {}), **p, "method": method})
    result = train_task(base_spec(p), task_of(p), spec, train_config(p), out_dir, init=init, mask=mask,
                        limit=p.get("max_samples"), progress=context.options.get("progress", True))
    return StageResult(artifacts={"adapter": result.adapter_path}, metrics=public_summary(result.summary))


