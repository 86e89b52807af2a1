"""Executor of the ``calibrate`` stage kind: a global-magnitude mask, disjoint from earlier masks."""

from __future__ import annotations

from pathlib import Path

from workbench.graph.task import StageResult
from workbench.stages.common import artifact, artifacts


def run_calibrate(task, inputs, out_dir: Path, context) -> StageResult:
    from workbench.masking.calibrate import calibrate_to_file

    p = task.params
    out = Path(out_dir) / "mask.safetensors"
    if out.exists():  # a previous attempt wrote it but was not committed: recompute, it is cheap
        out.unlink()
    mask = calibrate_to_file(artifact(inputs, task, "from", "adapter"), out, p["sparsity"], p.get("scope", "global"),
                             [str(m) for m in artifacts(inputs, task, "exclude", "mask")])
    return StageResult(artifacts={"mask": out}, metrics={"kept": int(mask.kept()), "density": mask.density()})
