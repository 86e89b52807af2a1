"""Running a pipeline: plan against the run store, execute the misses, stream results as they finish.

Executors are looked up by stage kind in :data:`EXECUTORS`, filled from the stage-kind descriptions
(``workbench.pipeline.kinds.add_stage_kind``: the built-ins' table ``workbench.stages.registry`` and any
plugin's ``register_stage_kind``); each is
``fn(stage: Task, inputs: {stage name: StageResult}, out_dir: Path, context: StageContext) -> StageResult``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import yaml

from workbench.errors import WorkbenchError
from workbench.graph.lock import RunLock
from workbench.graph.scheduler import schedule
from workbench.graph.store import RESOLVED, FileHasher, RunStore, compute_keys
from workbench.graph.task import StageResult, Task
from workbench.io.atomic import atomic_write_text, clean_stale_temps
from workbench.registry import Registry

EXECUTORS: Registry[Callable] = Registry("stage executor")


class StagesFailedError(WorkbenchError):
    """Several stages running at the same time failed (each is named, and listed in the manifest)."""


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
                 shared: dict | None = None, jobs: int = 1, executor: str | Any = "local",
                 address: str | None = None) -> Iterator[tuple[str, StageResult]]:
    """Run every stage whose key is not already done; yield ``(stage name, result)`` as stages finish.

    Stages whose inputs are done run at the same time, up to ``jobs`` of them (``--jobs N``), each in
    its own process, or as Ray tasks (``executor="ray"``). The engine's process stays the one writer
    of the manifest. When a stage fails no new stage starts; the ones running finish and are recorded,
    then the first failure is raised, and the manifest's ``failures`` names every stage that failed.

    Args:
        pipeline: an object with ``tasks()`` (and optionally ``resolved()``), or the tasks themselves.
        run_dir: the run directory (created; locked while the generator runs).
        executors: kind -> stage executor; default :data:`EXECUTORS`.
        options: passed to executors as ``context.options``.
        shared: passed to executors as ``context.shared`` (default: a new dict; ``jobs=1`` only).
        jobs: stages at once on this machine (1: in this process, one after another).
        executor: ``"local"``, ``"ray"``, or an object with ``start/submit/outcome/close`` and ``slots``
            (see :mod:`workbench.graph.executors`).
        address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``); Ray only.

    Raises:
        RunLockedError: another live process is writing to ``run_dir``.
        WorkbenchError: no executor for a stage kind, or an executor broke the contract.
        Exception: whatever an executor raised; its stage gets no manifest entry and reruns next time.
    """
    from workbench.graph.executors import make_executor

    groups = schedule(_tasks_of(pipeline))
    keys = compute_keys(groups, FileHasher())
    executors = executors if executors is not None else EXECUTORS
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    runner = make_executor(executor, jobs, address, shared) if isinstance(executor, str) else executor
    with RunLock(root):
        store = _open_store(root, pipeline, groups, keys)
        runner.start(root)
        try:
            yield from _drive(store, groups, keys, executors, runner, dict(options or {}))
        finally:
            runner.close()


def _input_groups(groups: list[list[Task]]) -> list[set[int]]:
    """For each group, the indices of the groups its inputs belong to."""
    index = {g[0]: i for i, g in enumerate(groups)}  # equal tasks hash alike: any name finds its group
    return [{index[dep] for _, dep in g[0].inputs} for g in groups]


def _drive(store: RunStore, groups: list[list[Task]], keys: dict[Task, str], executors, runner,
           options: dict) -> Iterator[tuple[str, StageResult]]:
    """Submit ready groups (inputs done) in pipeline order while slots are free; apply results as they come."""
    needs = _input_groups(groups)
    pending, done, failures = list(range(len(groups))), set(), []
    running: dict[cf.Future, tuple[int, Any]] = {}
    results: dict[str, StageResult] = {}
    free = list(range(runner.slots or len(groups)))[::-1]
    while pending or running:
        while free and not failures and (i := next((i for i in pending if needs[i] <= done), None)) is not None:
            pending.remove(i)
            group, key = groups[i], keys[groups[i][0]]
            hit = _cached(store, group, key)
            if hit is not None:
                done.add(i)
                yield from _publish(group, hit, results)
                continue
            call = _call(store, group[0], key, results, executors, options)
            slot = free.pop()
            running[runner.submit(call, slot)] = (i, call, slot)
        if not running:
            break
        finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for fut in sorted(finished, key=lambda f: running[f][0]):  # same-time finishes: in pipeline order
            i, call, slot = running.pop(fut)
            free.append(slot)
            result = _apply(store, groups[i], keys[groups[i][0]], runner, fut, call, failures)
            if result is not None:
                done.add(i)
                yield from _publish(groups[i], result, results)
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        names = ", ".join(f"'{n}' ({type(e).__name__}: {e})"[:300] for n, e in failures)
        raise StagesFailedError(f"{len(failures)} stages failed: {names}; see failures in "
                                f"{store.root / 'manifest.json'}; a rerun redoes only these and what follows") \
            from failures[0][1]


def _publish(group: list[Task], result: StageResult, results: dict) -> Iterator[tuple[str, StageResult]]:
    for task in group:
        results[task.name] = result
        yield task.name, result


def _cached(store: RunStore, group: list[Task], key: str) -> StageResult | None:
    """A verified result under any of the group's names (recorded under the others too), else None."""
    for task in group:
        hit = store.lookup(task.name, key)
        if hit is not None:
            log.info("stage %s: cached (%s)", task.name, key[:12])
            _record_aliases(store, group, task, key, hit)
            return hit
    return None


def _call(store: RunStore, task: Task, key: str, results: dict[str, StageResult], executors,
          options: dict):
    from workbench.graph.executors import StageCall, forwarded_env

    fn = executors.get(task.kind) if isinstance(executors, Registry) else _get(executors, task.kind)
    out_dir = store.stage_dir(task.name, key)
    resume = out_dir.is_dir()
    if resume:
        log.info("stage %s: resuming in %s (no manifest entry yet)", task.name, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {dep.name: results[dep.name] for _, dep in task.inputs}
    return StageCall(fn, task, inputs, out_dir, store.root, resume, options, forwarded_env())


def _apply(store: RunStore, group: list[Task], key: str, runner, fut, call, failures: list) -> StageResult | None:
    """Record a finished stage (and its equal stages), or its failure; only the engine's process writes."""
    task = group[0]
    try:
        outcome = runner.outcome(fut, call)
        store.record(task.name, task, key, outcome.result, outcome.started, finished=outcome.finished)
    except BaseException as exc:
        store.record_failure(task.name, exc)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt and the like: stop now
        log.error("stage %s failed: %s: %s", task.name, type(exc).__name__, exc)
        failures.append((task.name, exc))
        return None
    _record_aliases(store, group, task, key, outcome.result)
    return outcome.result


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


def _record_aliases(store: RunStore, group: list[Task], done: Task, key: str, result: StageResult) -> None:
    entry = store.manifest["stages"][done.name] if done.name in store.manifest["stages"] else None
    for other in group:
        if other is not done and store.lookup(other.name, key) is None and entry is not None:
            store.record(other.name, other, key, result, entry["started"], store._abs(entry["dir"]))


def _get(executors: dict, kind: str) -> Callable:
    from workbench.errors import unknown_name

    if kind not in executors:
        raise unknown_name("stage executor", kind, executors)
    return executors[kind]


def run_all(pipeline: Any, run_dir: str | os.PathLike, **kwargs) -> dict[str, StageResult]:
    """Run to completion and return ``{stage name: result}`` (the non-streaming form of run_pipeline)."""
    return dict(run_pipeline(pipeline, run_dir, **kwargs))
