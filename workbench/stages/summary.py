"""A short Markdown overview of a finished run: every stage with its headline numbers.

Each stage kind writes its own headline (``StageKind.summary``, in the kind's module). A training stage's
metrics get ``heldout`` added here, when evaluate stages scored its own task before and after it: the
held-out NLL says what the stage did, the batch loss of its first and last steps mostly says which
batches they were.
"""

from __future__ import annotations


def _evaluated_nll(pipeline, results: dict, adapter: str | None, task: str, base) -> float | None:
    """The held-out NLL of ``task`` from the first finished evaluation of ``adapter`` (None: of the base
    model ``base``), in run order."""
    for name in pipeline.order():
        t = pipeline.task(name)
        scored = t.input("adapter")
        if name not in results or task not in (t.params.get("tasks") or ()):
            continue
        if (scored.name if scored is not None else None) != adapter or (adapter is None and t.params.get("base") != base):
            continue
        nll = (results[name].metrics.get(task) or {}).get("nll")
        if nll is not None:
            return nll
    return None


def heldout_change(pipeline, results: dict, name: str) -> dict | None:
    """``{"task", "before", "after"}``: the held-out NLL of a training stage's own task evaluated on the
    model it started from (the adapter of ``from``, else the base model) and on its own adapter; None when
    either evaluation is missing (a probe, or a run without evaluate stages)."""
    t = pipeline.task(name)
    task = t.params.get("task")
    if task is None or "adapter" not in results[name].artifacts:
        return None
    start = t.input("from")
    after = _evaluated_nll(pipeline, results, name, task, None)
    before = _evaluated_nll(pipeline, results, start.name if start is not None else None, task, t.params.get("base"))
    if after is None or before is None:
        return None
    return {"task": task, "before": before, "after": after}


def summary_markdown(pipeline, results: dict) -> str:
    """``summary.md``: one table row per finished stage, in execution order."""
    from workbench.pipeline.kinds import stage_kinds

    kinds = stage_kinds()
    lines = [f"# Run: {pipeline.name}", "", "| stage | kind | result |", "|---|---|---|"]
    for name in pipeline.order():
        if name in results:
            kind = pipeline.task(name).kind
            metrics = results[name].metrics
            change = heldout_change(pipeline, results, name)
            if change is not None:
                metrics = {**metrics, "heldout": change}
            headline = kinds.get(kind).summary(metrics) if kind in kinds else ""
            lines.append(f"| {name} | {kind} | {headline} |")
    return "\n".join(lines) + "\n"


def time_markdown(pipeline, results: dict, run_dir) -> str:
    """The end of ``summary.md``: time by kind (load, train, evaluate, ...) and per stage with its peak RSS,
    from the manifest of ``run_dir`` and each stage's ``timing.json``."""
    from workbench.stages.timing import breakdown_markdown, stage_breakdowns

    return breakdown_markdown(stage_breakdowns(run_dir, [n for n in pipeline.order() if n in results]))
