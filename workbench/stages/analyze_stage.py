"""Executor of the ``analyze`` stage kind: the forgetting matrix (from the evaluate stages, in chain
order) and the subspace/interference report over the chain's adapters and masks."""

from __future__ import annotations

from pathlib import Path

from workbench.graph.task import StageResult
from workbench.stages.common import artifacts


def forgetting_from(evals: list, results: dict) -> dict | None:
    """``{"tasks", "stages", "matrix", "metric"}`` with the primary metric of each task after each stage."""
    if not evals:
        return None
    stages = [t.name for t in evals]
    rows = [results[s].metrics for s in stages]
    tasks = sorted({name for row in rows for name in row}, key=lambda n: next(i for i, r in enumerate(rows) if n in r))
    matrix = [[(row.get(t) or {}).get("value") for t in tasks] for row in rows]
    metric = {t: next((row[t]["primary"] for row in rows if t in row), None) for t in tasks}
    return {"tasks": tasks, "stages": stages, "matrix": matrix, "metric": metric,
            "nll": [[(row.get(t) or {}).get("nll") for t in tasks] for row in rows]}


def run_analyze(task, inputs, out_dir: Path, context) -> StageResult:
    from workbench.analytics.report import build_report
    from workbench.evaluate.forgetting import ForgettingMatrix
    from workbench.io.atomic import atomic_write_json

    out_dir = Path(out_dir)
    forgetting = forgetting_from(task.inputs_for("forgetting"), inputs)
    if forgetting:
        atomic_write_json(out_dir / "forgetting.json", forgetting)
        fm = ForgettingMatrix(tasks=forgetting["tasks"], stages=forgetting["stages"], metric="primary",
                              path=out_dir / "forgetting_matrix.json")
        for i, s in enumerate(forgetting["stages"]):
            for j, t in enumerate(forgetting["tasks"]):
                if forgetting["matrix"][i][j] is not None:
                    fm.set(s, t, float(forgetting["matrix"][i][j]))
        fm.write_markdown(out_dir / "forgetting.md")
        fm.write_heatmap(out_dir / "forgetting.png")
    adapters = {t.name: str(inputs[t.name].artifacts["adapter"]) for t in task.inputs_for("adapters")}
    masks = [str(m) for m in artifacts(inputs, task, "masks", "mask")]
    report_dir = out_dir  # report.json/.md/.html and figures beside forgetting.*: RUN_DIR/report is a copy
    metrics = {}
    if adapters:
        mask_arg = dict(zip(adapters, masks)) if masks and len(masks) == len(adapters) else None
        report = build_report(adapters, masks=mask_arg, forgetting=forgetting, out_dir=report_dir)
        metrics["summary"] = report.get("summary", {})
    return StageResult(artifacts={"report": report_dir, "forgetting": out_dir / "forgetting.json"} if forgetting
                       else {"report": report_dir}, metrics=metrics)
