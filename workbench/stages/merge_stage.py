"""The ``merge`` stage kind: several adapters into one, by a registered merge strategy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional

from pydantic import Field, ValidationError, model_validator

from workbench.graph.task import StageResult
from workbench.pipeline.kinds import ADAPTER_KINDS, StageKind, StageSettings
from workbench.pipeline.schema import Ref
from workbench.stages.common import artifacts
from workbench.stages.timing import timed_stage


class MergeStage(StageSettings):
    """Merge several adapters into one."""

    adapters: Annotated[list[Ref], Field(min_length=1)]
    strategy: str = "concat"
    weights: Optional[list[float]] = None
    params: dict = {}

    @model_validator(mode="after")
    def _weights_match(self):
        if self.weights is not None and len(self.weights) != len(self.adapters):
            raise ValueError(f"weights has {len(self.weights)} values for {len(self.adapters)} adapters")
        return self


def resolve(stage, ctx) -> dict:
    return {"strategy": stage.strategy, "weights": stage.weights, "params": stage.params}


def uses(stage, ctx) -> list:
    return [(("strategy",), "merge strategy", stage.strategy)]


def check_params(parts, name: str, stage) -> list:
    """The params fit the strategy's params model (when the strategy is known and registers one)."""
    from workbench.pipeline.names import params_model
    from workbench.pipeline.problems import schema_problems

    model = params_model("merge strategy", stage.strategy)
    if model is None:
        return []
    try:
        model.model_validate(stage.params)
    except ValidationError as exc:
        return schema_problems(exc, parts.located, ("stages", name, "params"))
    return []


@timed_stage("merge")
def run_merge(task, inputs, out_dir: Path, context) -> StageResult:
    """Merge the input adapters into ``out_dir/adapter``."""
    from workbench.merges.api import merge_to_dir

    p = task.params
    out = Path(out_dir) / "adapter"
    if out.exists():  # an uncommitted earlier attempt
        shutil.rmtree(out)
    merge_to_dir([str(a) for a in artifacts(inputs, task, "adapters", "adapter")], out, p.get("strategy", "concat"),
                 p.get("weights"), **(p.get("params") or {}))
    return StageResult(artifacts={"adapter": out}, metrics={"strategy": p.get("strategy", "concat")})


KIND = StageKind("merge", MergeStage, run_merge, refs={"adapters": ADAPTER_KINDS}, resolve=resolve, uses=uses,
                 checks=(check_params,), doc="merge several adapters into one")
