"""The ``analyze`` stage kind: forgetting matrices from evaluate stages (in chain order) and the subspace /
interference report over adapters and masks.

Everything the executor needs to know about the other stages is resolved from their fields and passed
explicitly in the task's parameters, never read out of stage names:

- ``forgetting``: a list of evaluate stages (one matrix) or a mapping ``group -> list`` (one matrix per
  group, e.g. per method of a compared chain). Each row records the task its stage *learned*: the
  ``task`` of the stage its ``adapter`` field names (none for the base model or a merge). A task's
  ``learned_at`` is the first row that learned it.
- masks pair with adapters through the adapters' own ``mask`` fields: an adapter pairs with the
  calibrate stage it trained inside, when that stage is listed under ``masks``.
- ``data`` (a chain's: its tasks): the report's data-aware section on those tasks' held-out inputs (base
  from the pipeline, custom tasks and options from its ``tasks:``), each pair's score beside the
  forgetting it caused in every group, and the attribution of the first task's forgetting; the points
  are also the stage's metric ``score_forgetting`` (a ``--seeds`` run pools them). Resolved only when
  given, so an analyze stage without ``data`` keeps its key.

Parameters name other stages by their input *role* (``forgetting.lora.2``, ``adapters.0``), not by
name, so the cache key stays independent of stage names like every other key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Mapping, Optional, Union

from pydantic import AfterValidator, Field

from workbench.graph.task import StageResult
from workbench.pipeline.kinds import ADAPTER_KINDS, StageKind, StageSettings, role
from workbench.pipeline.schema import Ref, TaskName
from workbench.stages.common import base_spec, task_of
from workbench.stages.timing import timed_stage

_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def _check_group(name: str) -> str:
    """Group names become file names (``forgetting-<group>.json``)."""
    if not _GROUP.match(name):
        raise ValueError(f"forgetting group '{name}' is not allowed: use letters, digits, '_', '.' and '-'")
    return name


class AnalyzeStage(StageSettings):
    """Subspace, mask-overlap and forgetting analysis plus the report."""

    adapters: list[Ref] = []
    masks: list[Ref] = []
    forgetting: Union[list[Ref], dict[Annotated[str, AfterValidator(_check_group)], list[Ref]]] = []
    # increments: a ``continue`` adapter listed with the adapter it continued is analysed as what its
    # stage added (a chain's snapshots contain every earlier stage); snapshots: as saved.
    compare: Literal["increments", "snapshots"] = "increments"
    data: list[TaskName] = Field(
        [], description="tasks whose held-out inputs weigh the data-aware interference section, its score vs "
                        "forgetting and the attribution of the first task's forgetting ([]: off)")
    attribute: bool = Field(True, description="with data: also the per-module attribution of one pair (NLL "
                                             "passes on the base: the costly part)")
    data_limit: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="held-out pairs per data task (input moments and attribution; default 32)")


def _learned(ctx, eval_name: str) -> str | None:
    """The task the adapter an evaluate stage scores was trained on (None: base model, merge, unknown)."""
    ev = ctx.stages.get(eval_name)
    adapter = ctx.stages.get(getattr(ev, "adapter", None) or "")
    return getattr(adapter, "task", None)


def mask_pairs(stage, stages: Mapping) -> dict[int, int]:
    """``{adapter index: mask index}``: each listed adapter with the listed mask its ``mask`` field names."""
    out = {}
    for i, a in enumerate(stage.adapters):
        own = getattr(stages.get(a), "mask", None)
        if own in stage.masks:
            out[i] = stage.masks.index(own)
    return out


def resolve(stage, ctx) -> dict:
    """Forgetting rows by group with the task each learned, the tasks in order, the mask pairs.

    The groups are a list (``[{"group", "rows"}]``): the task's parameters are stored with sorted keys, and
    the first group (the chain's own method) is the one ``forgetting.json`` shows.
    """
    groups: dict[str, list] = {}
    for sub, ref in KIND.ref_items(stage, "forgetting"):
        group = str(sub[0]) if len(sub) == 2 else ""
        groups.setdefault(group, []).append({"input": role("forgetting", sub), "learned": _learned(ctx, ref)})
    evals = [r for _, r in KIND.ref_items(stage, "forgetting")]
    tasks = list(dict.fromkeys(t for e in evals for t in (getattr(ctx.stages.get(e), "tasks", None) or ())))
    pairs = {role("adapters", (a,)): role("masks", (m,)) for a, m in mask_pairs(stage, ctx.stages).items()}
    out = {"compare": stage.compare, "forgetting": [{"group": g, "rows": rows} for g, rows in groups.items()],
           "tasks": tasks, "mask_of": pairs}
    if stage.data:  # only then: an analyze stage without data keeps the key it had
        out.update(data=list(stage.data), data_limit=stage.data_limit,
                   data_specs={t: s for t in stage.data if (s := ctx.task_spec(t))})
        if not stage.attribute:  # only when off: the keys of stages with attribution stay as they were
            out["attribute"] = False
    return out


def uses(stage, ctx) -> list:
    """The data tasks (a custom task's file joins the key, an unknown name is reported at its line)."""
    return [(("data", i), "task", t) for i, t in enumerate(stage.data)]


def check_masks(parts, name: str, stage) -> list:
    """Every listed mask pairs with a listed adapter (one trained inside it): else it would be ignored."""
    from workbench.pipeline.problems import problem_at

    paired = set(mask_pairs(stage, parts.stages).values())
    if any(parts.stages.get(a) is None for a in stage.adapters):
        return []  # a failed or unknown adapter stage is reported elsewhere
    return [problem_at(parts.located, ("stages", name, "masks", j),
                       f"'{m}' is not the mask of any adapter listed here: an adapter pairs with the calibrate "
                       "stage named in its 'mask' field")
            for j, m in enumerate(stage.masks) if j not in paired]


def forgetting_groups(task, results: dict) -> dict[str, dict]:
    """``{group: {"tasks", "stages", "matrix", "metric", "learned_at", "nll"}}`` of an analyze task ('' for
    an ungrouped list), in the order the stage lists them, from its resolved rows and the evaluate stages'
    results."""
    p = task.params
    out = {}
    for entry in p.get("forgetting", []):
        group, rows = entry["group"], entry["rows"]
        stages = [task.input(r["input"]).name for r in rows]
        # the listed order; metrics read back from a manifest come key-sorted
        tasks = list(dict.fromkeys([*p.get("tasks", []), *(t for s in stages for t in results[s].metrics)]))
        learned = [next((i for i, r in enumerate(rows) if r["learned"] == t), None) for t in tasks]
        out[group] = _matrix(stages, tasks, learned, results)
        # the stage each row scores (None: the base model), so the report can say "after math"
        out[group]["row_adapters"] = [getattr(task.input(r["input"]).input("adapter"), "name", None) for r in rows]
    return out


def _matrix(stages: list[str], tasks: list[str], learned: list, results: dict) -> dict:
    rows = [results[s].metrics for s in stages]
    return {"tasks": tasks, "stages": stages, "learned_at": learned,
            "matrix": [[(row.get(t) or {}).get("value") for t in tasks] for row in rows],
            "metric": {t: next((row[t]["primary"] for row in rows if t in row), None) for t in tasks},
            "higher_is_better": {t: next((bool(row[t].get("higher_is_better", True)) for row in rows if t in row), True)
                                 for t in tasks},
            "nll": [[(row.get(t) or {}).get("nll") for t in tasks] for row in rows]}


def _filled(f: dict, key: str, metric: str, higher_is_better: bool):
    from workbench.evaluate.forgetting import ForgettingMatrix

    learned = [i if i is not None else min(j + 1, len(f["stages"]) - 1) for j, i in enumerate(f["learned_at"])]
    fm = ForgettingMatrix(tasks=f["tasks"], stages=f["stages"], metric=metric, learned_at=learned,
                          higher_is_better=higher_is_better)
    for i, s in enumerate(f["stages"]):
        for j, t in enumerate(f["tasks"]):
            if f[key][i][j] is not None:
                fm.set(s, t, float(f[key][i][j]))
    return fm


def _write_forgetting(out_dir: Path, name: str, f: dict) -> None:
    """The primary-metric matrix (``name.*``) and the held-out NLL matrix (``name-nll.*``, lower is better:
    sensitive even where a small model's accuracy is zero everywhere)."""
    from workbench.io.atomic import atomic_write_json

    fm = _filled(f, "matrix", "primary", True)
    nll = _filled(f, "nll", "nll", False)
    from workbench.evaluate.forgetting import rate_columns

    fm.summary_columns = rate_columns(f.get("metric") or {}, f.get("higher_is_better") or {}, f["tasks"])
    atomic_write_json(out_dir / f"{name}.json", {**f, "summary": fm.summary(), "nll_summary": nll.summary()})
    for m, stem in ((fm, name), (nll, f"{name}-nll")):
        m.write_markdown(out_dir / f"{stem}.md")
        m.write_heatmap(out_dir / f"{stem}.png")


def continued_pairs(task) -> dict[str, str]:
    """``{continue stage: the stage it continued}`` among the analysed adapters (``compare: increments``)."""
    if task.params.get("compare", "increments") != "increments":
        return {}
    tasks = task.inputs_for("adapters")
    names = {t.name for t in tasks}
    return {t.name: t.input("from").name for t in tasks
            if t.kind == "continue" and t.input("from") is not None and t.input("from").name in names}


def _masks_arg(task, inputs) -> dict | None:
    """``{adapter stage: mask file}`` from the resolved pairs (None when there are none)."""
    pairs = {task.input(a).name: str(inputs[task.input(m).name].artifacts["mask"])
             for a, m in (task.params.get("mask_of") or {}).items()}
    return pairs or None


def _report_forgetting(f: dict | None) -> dict | None:
    """The main group's matrices for the report (its primary metric named per task)."""
    if not f:
        return None
    keys = ("tasks", "stages", "matrix", "nll", "learned_at", "higher_is_better", "row_adapters")
    return {**{k: f[k] for k in keys}, "metric": {t: m for t, m in f["metric"].items() if m is not None}}


def _training_losses(adapters: dict[str, str]) -> dict[str, Path]:
    """``{adapter stage: its train_summary.json}`` for the adapters a training stage wrote (the training
    loop writes that file beside ``adapter/``; merged adapters have none)."""
    files = {name: Path(path).parent / "train_summary.json" for name, path in adapters.items()}
    return {name: f for name, f in files.items() if f.is_file()}


def _data_args(p: dict, groups: dict) -> dict:
    """``build_report``'s data-aware arguments: the data tasks (custom ones and options from the pipeline's
    ``tasks:``), the base, the limit, the attribution and every group's matrix; none without ``data``."""
    if not p.get("data"):
        return {}
    specs = p.get("data_specs") or {}
    return {"data": [task_of({"task": t, "task_spec": specs.get(t)}) for t in p["data"]], "base": base_spec(p),
            "data_limit": p.get("data_limit"), "attribute": p.get("attribute", True),
            "forgetting_groups": {g: _report_forgetting(f) for g, f in groups.items()}}


@timed_stage("analyze")
def run_analyze(task, inputs, out_dir: Path, context) -> StageResult:
    """Write the forgetting matrices and the report."""
    from workbench.analytics.report import build_report

    out_dir = Path(out_dir)
    groups = forgetting_groups(task, inputs)
    for group, f in groups.items():
        _write_forgetting(out_dir, f"forgetting-{group}" if group else "forgetting", f)
    main = next(iter(groups.values()), None)
    if len(groups) > 1 or (main is not None and "" not in groups):
        _write_forgetting(out_dir, "forgetting", main)
    adapters = {t.name: str(inputs[t.name].artifacts["adapter"]) for t in task.inputs_for("adapters")}
    metrics = {"forgetting": {g: f["matrix"] for g, f in groups.items()}}
    if adapters:
        report = build_report(adapters, masks=_masks_arg(task, inputs), forgetting=_report_forgetting(main),
                              out_dir=out_dir, increments=continued_pairs(task), training=_training_losses(adapters),
                              **_data_args(task.params, groups))
        metrics["summary"] = report.get("summary", {})
        if "score_forgetting" in report.get("data_aware", {}):  # what a --seeds run pools over seeds
            metrics["score_forgetting"] = report["data_aware"]["score_forgetting"]["points"]
    arts = {"report": out_dir}
    if main:
        arts["forgetting"] = out_dir / "forgetting.json"
    return StageResult(artifacts=arts, metrics=metrics)


KIND = StageKind("analyze", AnalyzeStage, run_analyze,
                 refs={"adapters": ADAPTER_KINDS, "masks": ("calibrate",), "forgetting": ("evaluate",)},
                 resolve=resolve, uses=uses, checks=(check_masks,), doc="forgetting matrices and the subspace report")
