"""Running a pipeline: plan against the run store, execute the misses, stream results as they finish.

Executors are looked up by stage kind in :data:`EXECUTORS` (filled by ``workbench.stages``); each is
``fn(stage: Task, inputs: {stage name: StageResult}, out_dir: Path, context: StageContext) -> StageResult``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import yaml

from workbench.graph.lock import RunLock
from workbench.graph.memory import release_memory
from workbench.graph.scheduler import schedule
from workbench.graph.store import RESOLVED, FileHasher, RunStore, compute_keys
from workbench.graph.task import StageResult, Task
from workbench.io.atomic import atomic_write_text, clean_stale_temps
from workbench.registry import Registry

EXECUTORS: Registry[Callable] = Registry("stage executor")
log = logging.getLogger("workbench.graph")


class _PlainDumper(yaml.SafeDumper):
    """No ``&id001`` anchors: the resolved file is read by people."""

    def ignore_aliases(self, data) -> bool:
        return True


@dataclass
class StageContext:
    """What an executor gets besides its inputs.

    Attributes:
        run_dir: the run directory.
        resume: True when an unfinished directory of this very stage exists (a checkpoint may be there).
        shared: one dict for the whole run (executors may cache a loaded base model in it).
        options: caller options passed to ``run_pipeline`` (device, verbosity, ...).
    """

    run_dir: Path
    resume: bool = False
    shared: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


class PipelineLike(Protocol):
    """What the engine needs from a pipeline: its tasks and (optionally) a resolved form to save."""

    def tasks(self) -> list[Task]: ...


@dataclass(frozen=True)
class PlannedStage:
    """One row of a plan: the task, its cache key and whether the store already has it."""

    task: Task
    key: str
    status: str  # "hit" or "miss"

    def __iter__(self):  # unpacks as (stage, key, status)
        return iter((self.task, self.key, self.status))


def _tasks_of(pipeline: PipelineLike | Iterable[Task]) -> list[Task]:
    return list(pipeline.tasks()) if hasattr(pipeline, "tasks") else list(pipeline)


def plan(pipeline: PipelineLike | Iterable[Task], run_dir: str | os.PathLike) -> list[PlannedStage]:
    """Which stages would run: ``[(stage, key, "hit"|"miss")]`` in execution order. Writes nothing.

    Equal stages (same content, different names) are listed under each name; both share one key.
    """
    groups = schedule(_tasks_of(pipeline))
    keys = compute_keys(groups, FileHasher())
    store = RunStore(run_dir) if Path(run_dir).is_dir() else None
    rows = []
    for group in groups:
        key = keys[group[0]]
        for task in group:
            hit = store is not None and store.lookup(task.name, key) is not None
            rows.append(PlannedStage(task, key, "hit" if hit else "miss"))
    return rows


def run_pipeline(pipeline: PipelineLike | Iterable[Task], run_dir: str | os.PathLike,
                 executors: Registry | dict | None = None, options: dict | None = None,
                 shared: dict | None = None) -> Iterator[tuple[str, StageResult]]:
    """Run every stage whose key is not already done; yield ``(stage name, result)`` in order.

    Args:
        pipeline: an object with ``tasks()`` (and optionally ``resolved()``), or the tasks themselves.
        run_dir: the run directory (created; locked while the generator runs).
        executors: kind -> executor; default :data:`EXECUTORS`.
        options: passed to executors as ``context.options``.
        shared: passed to executors as ``context.shared`` (default: a new dict).

    Raises:
        RunLockedError: another live process is writing to ``run_dir``.
        WorkbenchError: no executor for a stage kind, or an executor broke the contract.
        Exception: whatever an executor raised; its stage gets no manifest entry and reruns next time.
    """
    groups = schedule(_tasks_of(pipeline))
    keys = compute_keys(groups, FileHasher())
    executors = executors if executors is not None else EXECUTORS
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    with RunLock(root):
        store = _open_store(root, pipeline, groups, keys)
        context = StageContext(root, shared=shared if shared is not None else {}, options=dict(options or {}))
        results: dict[str, StageResult] = {}
        for group in groups:
            result = _run_group(store, group, keys[group[0]], results, executors, context)
            for task in group:
                results[task.name] = result
                yield task.name, result


def _open_store(root: Path, pipeline, groups: list[list[Task]], keys: dict[Task, str]) -> RunStore:
    for stale in clean_stale_temps(root):
        log.info("removed stale temporary file %s", stale)
    store = RunStore(root)
    for orphan in store.orphan_dirs():
        log.info("ignoring %s: no manifest entry (interrupted or superseded stage)", orphan)
    resolved = pipeline.resolved() if hasattr(pipeline, "resolved") else None
    if resolved is not None:
        atomic_write_text(root / RESOLVED, yaml.dump(resolved, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True))
    name = getattr(pipeline, "name", None)
    store.set_plan(name if isinstance(name, str) else None,
                   [{"name": t.name, "kind": t.kind, "key": keys[g[0]]} for g in groups for t in g])
    return store


def _run_group(store: RunStore, group: list[Task], key: str, results: dict[str, StageResult],
               executors, context: StageContext) -> StageResult:
    """Reuse a verified result under any of the group's names, or execute the first task once."""
    for task in group:
        hit = store.lookup(task.name, key)
        if hit is not None:
            log.info("stage %s: cached (%s)", task.name, key[:12])
            _record_aliases(store, group, task, key, hit)
            return hit
    task = group[0]
    result = _execute(store, task, key, results, executors, context)
    _record_aliases(store, group, task, key, result)
    return result


def _record_aliases(store: RunStore, group: list[Task], done: Task, key: str, result: StageResult) -> None:
    entry = store.manifest["stages"][done.name] if done.name in store.manifest["stages"] else None
    for other in group:
        if other is not done and store.lookup(other.name, key) is None and entry is not None:
            store.record(other.name, other, key, result, entry["started"], store._abs(entry["dir"]))


def _execute(store: RunStore, task: Task, key: str, results: dict[str, StageResult],
             executors, context: StageContext) -> StageResult:
    fn = executors.get(task.kind) if isinstance(executors, Registry) else _get(executors, task.kind)
    out_dir = store.stage_dir(task.name, key)
    resume = out_dir.is_dir()
    if resume:
        log.info("stage %s: resuming in %s (no manifest entry yet)", task.name, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {dep.name: results[dep.name] for _, dep in task.inputs}
    started = time.time()
    try:
        result = fn(task, inputs, out_dir, _with_resume(context, resume))
        store.record(task.name, task, key, result, started)
    except BaseException as exc:
        store.record_failure(task.name, exc)
        raise
    finally:
        release_memory()  # the next stage loads its own model: do not carry this one's freed pages
    return result


def _get(executors: dict, kind: str) -> Callable:
    from workbench.errors import unknown_name

    if kind not in executors:
        raise unknown_name("stage executor", kind, executors)
    return executors[kind]


def _with_resume(context: StageContext, resume: bool) -> StageContext:
    return StageContext(context.run_dir, resume, context.shared, context.options)


def run_all(pipeline: Any, run_dir: str | os.PathLike, **kwargs) -> dict[str, StageResult]:
    """Run to completion and return ``{stage name: result}`` (the non-streaming form of run_pipeline)."""
    return dict(run_pipeline(pipeline, run_dir, **kwargs))
