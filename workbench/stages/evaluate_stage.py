"""Executor of the ``evaluate`` stage kind: every listed task on the base (+ adapter).

Results are written after each task (``results.json``, atomically), and a resumed stage skips the tasks
already there: a kill while evaluating task 3 of 4 recomputes only task 3 and 4.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.graph.task import StageResult
from workbench.io.atomic import atomic_write_json
from workbench.stages.common import artifact, base_spec, task_of


def _done(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("tasks", {})
    except json.JSONDecodeError:
        return {}


def run_evaluate(task, inputs, out_dir: Path, context) -> StageResult:
    from workbench.evaluate.api import evaluate_task, load_for_eval
    from workbench.evaluate.generate import GenerationConfig

    p = task.params
    out = Path(out_dir) / "results.json"
    results = _done(out) if context.resume else {}
    todo = [t for t in p["tasks"] if t not in results]
    if todo:
        adapter = artifact(inputs, task, "adapter", "adapter")
        model, tok, info = load_for_eval(adapter, base=base_spec(p).name)
        gen = GenerationConfig(max_new_tokens=p.get("max_new_tokens", 128))
        specs = p.get("task_specs") or {}
        for name in todo:
            t = task_of({"task": name, "task_spec": specs.get(name)})
            results[name] = evaluate_task(model, tok, t, limit=p.get("limit"), gen=gen)
            atomic_write_json(out, {"model": info, "tasks": results})
    metrics = {name: {"primary": r["primary"], "value": r["metrics"].get(r["primary"]), "nll": r["metrics"].get("nll"),
                      "higher_is_better": r["higher_is_better"]} for name, r in results.items()}
    return StageResult(artifacts={"results": out}, metrics=metrics)
