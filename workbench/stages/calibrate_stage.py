"""The ``calibrate`` stage kind: a sparse mask from the magnitudes of ``from``'s adapter (LoRI-S calibration),
disjoint from every mask in ``exclude``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field

from workbench.graph.task import StageResult
from workbench.pipeline.kinds import StageKind, StageSettings
from workbench.pipeline.schema import Fraction, Ref
from workbench.stages.common import artifact, artifacts, fmt
from workbench.stages.timing import timed_stage


class CalibrateStage(StageSettings):
    """Build a sparse mask from the magnitudes of ``from``'s adapter (LoRI-S calibration)."""

    from_: Ref = Field(alias="from")
    sparsity: Optional[Fraction] = None
    scope: str = "global"
    exclude: list[Ref] = []
    tie_rule: Optional[Literal["exact", "official"]] = Field(
        None, description="exact: round((1 - sparsity) n) entries, ties by index; official: every |B| >= the "
                          "k-th largest (LoRI's extract_mask.py); default: defaults.tie_rule")


class CalibrateDefaults(BaseModel):
    """What calibrate stages take from ``defaults:``."""

    sparsity: Fraction = Field(0.9, description="fraction of B's entries a mask leaves out (calibrate stages)")
    tie_rule: Literal["exact", "official"] = Field(
        "exact", description="how calibrate stages count kept entries and break ties (exact | official)")


def _sparsity(stage, defaults) -> float:
    return stage.sparsity if stage.sparsity is not None else defaults.sparsity


def resolve(stage, ctx) -> dict:
    return {"sparsity": _sparsity(stage, ctx.defaults), "scope": stage.scope,
            "tie_rule": stage.tie_rule or ctx.defaults.tie_rule}


def uses(stage, ctx) -> list:
    return [(("scope",), "mask scope", stage.scope)]


def _exclusion_closure(parts, name: str) -> list[str]:
    """Every calibrate stage that ``name`` must be disjoint from, directly or through its exclusions."""
    seen, stack = [], list(parts.stages[name].exclude)
    while stack:
        ref = stack.pop()
        target = parts.stages.get(ref)
        if ref in seen or ref == name or target is None or target.kind != "calibrate":
            continue
        seen.append(ref)
        stack.extend(target.exclude)
    return seen


def check_disjoint(parts, name: str, stage) -> list:
    """Disjoint masks cannot together keep more than every position: their densities must sum to <= 1."""
    from workbench.pipeline.problems import problem_at

    group = [name, *_exclusion_closure(parts, name)]
    density = {n: 1.0 - _sparsity(parts.stages[n], parts.defaults) for n in group}
    total = sum(density.values())
    if len(group) > 1 and total > 1.0 + 1e-9:
        text = ", ".join(f"{n} {density[n]:.2f}" for n in group)
        return [problem_at(parts.located, ("stages", name, "exclude"),
                           f"masks cannot be disjoint: densities ({text}) add up to {total:.2f} > 1; raise the sparsity")]
    return []


@timed_stage("calibrate")
def run_calibrate(task, inputs, out_dir: Path, context) -> StageResult:
    """A global-magnitude mask, disjoint from earlier masks."""
    from workbench.masking.calibration import calibrate_to_file

    p = task.params
    out = Path(out_dir) / "mask.safetensors"
    if out.exists():  # a previous attempt wrote it but was not committed: recompute, it is cheap
        out.unlink()
    mask = calibrate_to_file(artifact(inputs, task, "from", "adapter"), out, p["sparsity"], p.get("scope", "global"),
                             [str(m) for m in artifacts(inputs, task, "exclude", "mask")],
                             tie_rule=p.get("tie_rule", "exact"))
    return StageResult(artifacts={"mask": out}, metrics={"kept": int(mask.kept()), "density": mask.density()})


def summary(metrics: dict) -> str:
    return f"kept {metrics.get('kept')} (density {fmt(metrics.get('density'))})"


KIND = StageKind("calibrate", CalibrateStage, run_calibrate,
                 refs={"from": ("train", "continue"), "exclude": ("calibrate",)}, resolve=resolve, uses=uses,
                 checks=(check_disjoint,), defaults=CalibrateDefaults, summary=summary,
                 doc="a sparse mask from an adapter's magnitudes")
