"""Executor of the ``merge`` stage kind."""

from __future__ import annotations

import shutil
from pathlib import Path

from workbench.graph.task import StageResult
from workbench.stages.common import artifacts


def run_merge(task, inputs, out_dir: Path, context) -> StageResult:
    from workbench.merges.api import merge_to_dir

    p = task.params
    out = Path(out_dir) / "adapter"
    if out.exists():  # an uncommitted earlier attempt
        shutil.rmtree(out)
    merge_to_dir([str(a) for a in artifacts(inputs, task, "adapters", "adapter")], out, p.get("strategy", "concat"),
                 p.get("weights"), **(p.get("params") or {}))
    return StageResult(artifacts={"adapter": out}, metrics={"strategy": p.get("strategy", "concat")})
