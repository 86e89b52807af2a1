"""The ``continue`` stage kind: keep training the adapter of ``from`` on a new task.

Earlier positions stay as they are: with ``mask`` the stage trains only inside it (a LoRI-S continual
step); with ``exclude`` and no mask (the LoRI-D probe of a later task) it trains on every position no
earlier mask owns, inside the complement of their union. The adapter's shape is ``from``'s, so only the
loop settings are fields here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field

from workbench.graph.task import StageResult
from workbench.pipeline.kinds import StageKind
from workbench.pipeline.schema import Loop, Ref, TaskName
from workbench.settings import MASKED_METHOD
from workbench.stages.common import (adapter_spec, artifact, artifacts, base_spec, public_summary, stage_tracker,
                                     task_of, train_config, training_headline)
from workbench.stages.timing import timed_stage
from workbench.stages.train_stage import Launch, check_mask, training_params, training_uses


class ContinueStage(Loop):
    """Keep training the adapter of ``from`` on a new task; earlier positions stay as they are."""

    from_: Ref = Field(alias="from")
    task: TaskName
    mask: Optional[Ref] = None
    exclude: list[Ref] = []
    launch: Optional[Launch] = None


@timed_stage("train")
def run_continue(task, inputs, out_dir: Path, context) -> StageResult:
    """Keep training an adapter on a new task (see the module docstring for ``mask`` and ``exclude``)."""
    from workbench.adapters.adapter import load_adapter
    from workbench.adapters.registry import get_method
    from workbench.masking.file import load_mask
    from workbench.masking.mask import Mask, union
    from workbench.stages.train import train_task
    from workbench.tracking import step_logger
    from workbench.stages.launch import processes_for, run_launched

    processes = processes_for(task, context)
    if processes > 1:  # data parallel (workbench/stages/launch.py): the workers run this very function
        return run_launched(task, inputs, out_dir, context, processes)
    p = task.params
    init = load_adapter(artifact(inputs, task, "from", "adapter"))
    mask = artifact(inputs, task, "mask", "mask")
    method = p.get("method") or init.method
    excluded = artifacts(inputs, task, "exclude", "mask")
    if mask is None and excluded:
        owned = union([load_mask(m) for m in excluded])
        mask = Mask({k: ~v for k, v in owned.tensors.items()}, {"role": "probe-free-positions"})
        # the free positions are a mask: an unmasked method (the LoRI-D probe) trains them as its masked form
        method = method if get_method(method).uses_mask else MASKED_METHOD
    spec = adapter_spec({**(init.meta.get("spec") or {}), **p, "method": method})
    with stage_tracker(task, context) as tracker:
        result = train_task(base_spec(p), task_of(p), spec, train_config(p), out_dir, init=init, mask=mask,
                            limit=p.get("max_samples"), progress=context.options.get("progress", True),
                            log_step=step_logger(tracker, task.name))
    return StageResult(artifacts={"adapter": result.adapter_path}, metrics=public_summary(result.summary))


KIND = StageKind("continue", ContinueStage, run_continue,
                 refs={"from": ("train", "continue"), "mask": ("calibrate",), "exclude": ("calibrate",)},
                 resolve=training_params, uses=training_uses, checks=(check_mask,), summary=training_headline,
                 doc="keep training an adapter on a new task")
