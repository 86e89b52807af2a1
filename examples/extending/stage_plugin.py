"""A new stage kind in one file: ``norms``, the largest lora_B norms of an adapter (``norms.json``).

As a plugin: list this file under ``plugins:``. As a built-in: ``workbench/stages/norms_stage.py`` defining
``KIND = StageKind(...)`` plus one row in ``BUILTIN`` (``workbench/stages/registry.py``). The settings
model is the YAML schema of the stage (unknown keys are errors, with file:line); ``refs`` says which fields
name other stages and of which kinds; every other field is part of the stage's cache key.
"""

import json
from pathlib import Path

import workbench


class NormsSettings(workbench.StageSettings):
    adapter: str  # a reference to a train/continue/merge stage (refs= below)
    top: int = 3


def _headline(metrics: dict) -> str:
    return f"largest B norm {metrics['largest']:.4f}"


@workbench.register_stage_kind("norms", NormsSettings, refs={"adapter": ("train", "continue", "merge")},
                               summary=_headline, doc="the largest lora_B norms of an adapter")
def run_norms(task, inputs, out_dir, context):
    """Write the ``top`` largest lora_B norms of the referenced stage's adapter."""
    adapter = workbench.load_adapter(inputs[task.input("adapter").name].artifacts["adapter"])
    norms = sorted(((float(adapter.tensors[k].float().norm()), k) for k in adapter.b_keys()), reverse=True)
    top = norms[: task.params["top"]]
    out = Path(out_dir) / "norms.json"
    out.write_text(json.dumps(top))
    return workbench.StageResult(artifacts={"norms": out}, metrics={"largest": top[0][0], "top": len(top)})
