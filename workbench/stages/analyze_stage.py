"""Executor of the ``analyze`` stage kind: forgetting matrices (from the evaluate stages, in chain order)
and the subspace/interference report over the chain's adapters and masks.

A compared chain (``--compare lora``) has evaluate stages ``lori_s-safety_eval``, ``lora-safety_eval``...:
they are grouped by their prefix, one forgetting matrix per method, each starting from the base-model row.
"""

from __future__ import annotations

from pathlib import Path

from workbench.graph.task import StageResult


def _prefix(stage: str, tasks: list[str]) -> str | None:
    for t in tasks:
        if stage.endswith(f"{t}_eval"):
            return stage[: -len(f"{t}_eval")]
    return None


def forgetting_groups(evals: list, results: dict) -> dict[str, dict]:
    """``{group: {"tasks", "stages", "matrix", "metric", "learned_at", "nll"}}`` (group '' for a single chain)."""
    if not evals:
        return {}
    names = [t.name for t in evals]
    # the order the pipeline lists the tasks in (metrics read back from a manifest come key-sorted)
    tasks = list(dict.fromkeys([*(n for t in evals for n in t.params.get("tasks", [])),
                                *(n for s in names for n in results[s].metrics)]))
    base = [s for s in names if _prefix(s, tasks) is None]
    groups: dict[str, list[str]] = {}
    for s in names:
        p = _prefix(s, tasks)
        if p is not None:
            groups.setdefault(p, []).append(s)
    return {p.rstrip("-_"): _matrix(base + stages, tasks, results, p) for p, stages in (groups or {"": []}).items()}


def _matrix(stages: list[str], tasks: list[str], results: dict, prefix: str) -> dict:
    rows = [results[s].metrics for s in stages]
    learned = [stages.index(f"{prefix}{t}_eval") if f"{prefix}{t}_eval" in stages else None for t in tasks]
    return {"tasks": tasks, "stages": stages, "learned_at": learned,
            "matrix": [[(row.get(t) or {}).get("value") for t in tasks] for row in rows],
            "metric": {t: next((row[t]["primary"] for row in rows if t in row), None) for t in tasks},
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
    atomic_write_json(out_dir / f"{name}.json", {**f, "summary": fm.summary(), "nll_summary": nll.summary()})
    for m, stem in ((fm, name), (nll, f"{name}-nll")):
        m.write_markdown(out_dir / f"{stem}.md")
        m.write_heatmap(out_dir / f"{stem}.png")


def _masks_for(adapters: list[str], masks: dict[str, str]) -> dict | None:
    """Pair masks with adapters: in order when the counts match, else by the chain's ``<adapter>_mask`` names."""
    if not masks:
        return None
    if len(masks) == len(adapters):
        return dict(zip(adapters, masks.values()))
    return {a: masks[f"{a}_mask"] for a in adapters if f"{a}_mask" in masks} or None


def continued_pairs(task) -> dict[str, str]:
    """``{continue stage: the stage it continued}`` among the analysed adapters (``compare: increments``)."""
    if task.params.get("compare", "increments") != "increments":
        return {}
    tasks = task.inputs_for("adapters")
    names = {t.name for t in tasks}
    return {t.name: t.input("from").name for t in tasks
            if t.kind == "continue" and t.input("from") is not None and t.input("from").name in names}


def run_analyze(task, inputs, out_dir: Path, context) -> StageResult:
    from workbench.analytics.report import build_report

    out_dir = Path(out_dir)
    groups = forgetting_groups(task.inputs_for("forgetting"), inputs)
    for group, f in groups.items():
        _write_forgetting(out_dir, f"forgetting-{group}" if group else "forgetting", f)
    main = next(iter(groups.values()), None)
    if len(groups) > 1:
        _write_forgetting(out_dir, "forgetting", main)
    adapters = {t.name: str(inputs[t.name].artifacts["adapter"]) for t in task.inputs_for("adapters")}
    masks = {t.name: str(inputs[t.name].artifacts["mask"]) for t in task.inputs_for("masks")}
    metrics = {"forgetting": {g: f["matrix"] for g, f in groups.items()}}
    if adapters:
        mask_arg = _masks_for(list(adapters), masks)
        forgetting = {k: main[k] for k in ("tasks", "stages", "matrix", "metric")} if main else None
        if forgetting:
            forgetting["metric"] = "primary metric per task"
        report = build_report(adapters, masks=mask_arg, forgetting=forgetting, out_dir=out_dir,
                              increments=continued_pairs(task))
        metrics["summary"] = report.get("summary", {})
    arts = {"report": out_dir}
    if main:
        arts["forgetting"] = out_dir / "forgetting.json"
    return StageResult(artifacts=arts, metrics=metrics)
