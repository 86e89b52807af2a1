"""Where a stage runs: in the engine's own process (``--jobs 1``), in a worker process of its own
(``--jobs N``), or as a Ray task (``--executor ray``).

The engine stays the only writer of the manifest whatever runs the stages: an executor hands back a
:class:`StageOutcome` (the result and when the stage started and finished) and the engine process
hashes the artifacts and records the entry. Two stages finishing at once therefore never write the
manifest at the same time, and a stage that fails leaves the others' entries alone.

Worker processes are started with ``spawn`` (a forked copy of a process that has loaded torch can hang
on its thread pools), one short-lived process per stage: a worker killed mid-stage (OOM, SIGKILL)
takes only its own stage down, and no RNG or cache state is carried from one stage to the next, which
keeps ``--jobs 2`` bitwise equal to ``--jobs 1``. Ray is used as the distributed engine across machines
(resources, placement, retries); nothing here reimplements it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import pickle
import sys
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workbench.errors import ConfigError, WorkbenchError
from workbench.graph.task import StageResult, Task

log = logging.getLogger("workbench.graph")
RAY_INSTALL = 'the Ray executor needs Ray: pip install "workbench[ray]"'
# passed to workers and Ray tasks: a remote node does not have the driver's environment
_FORWARDED_PREFIX = "WORKBENCH_"


class WorkerDiedError(WorkbenchError):
    """A stage's worker process or Ray task died before handing back a result."""


@dataclass
class StageCall:
    """Everything a stage needs to run away from the engine (picklable).

    Attributes:
        fn: the stage executor ``fn(task, inputs, out_dir, context)``.
        task, inputs, out_dir: as the executor receives them.
        run_dir, resume, options: the :class:`~workbench.graph.engine.StageContext` fields.
        env: ``WORKBENCH_*`` variables of the engine process, set in the worker for the call.
    """

    fn: Callable
    task: Task
    inputs: dict
    out_dir: Path
    run_dir: Path
    resume: bool
    options: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)


@dataclass
class StageOutcome:
    """What came back: the executor's result and its wall-clock start and end (``time.time()``)."""

    result: StageResult
    started: float
    finished: float
    pid: int = 0


def forwarded_env() -> dict:
    """The ``WORKBENCH_*`` variables of this process."""
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_PREFIX)}


def call_stage(call: StageCall, shared: dict | None = None) -> StageOutcome:
    """Run one stage here and time it (the body of every executor).

    Args:
        call: the stage and its inputs.
        shared: the run-wide cache dict (the engine's own process only; a worker starts empty).

    Returns:
        The outcome; whatever the stage executor raises propagates.
    """
    from workbench.graph.engine import StageContext
    from workbench.progress import quiet_third_party

    quiet_third_party()  # a worker process (--jobs, Ray) never ran the CLI that does this
    context = StageContext(call.run_dir, call.resume, shared if shared is not None else {}, dict(call.options))
    saved = {k: os.environ.get(k) for k in call.env}
    os.environ.update(call.env)
    try:  # a Ray worker runs many tasks: one stage's variables must not leak into the next
        started = time.time()
        result = call.fn(call.task, call.inputs, call.out_dir, context)
        return StageOutcome(result, started, time.time(), os.getpid())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class InlineExecutor:
    """``--jobs 1``: each stage runs in the engine's process, one after another (the run-wide ``shared``
    cache, e.g. a loaded base model, is kept between stages)."""

    slots = 1

    def __init__(self, shared: dict | None = None):
        self.shared = shared if shared is not None else {}

    def start(self, run_dir: Path) -> None:
        """Nothing to check: the engine's own process sees the run directory."""

    def submit(self, call: StageCall, slot: int) -> cf.Future:
        """Run the stage now; the returned future is already done (result or exception)."""
        from workbench.graph.memory import release_memory

        fut: cf.Future = cf.Future()
        try:
            fut.set_result(call_stage(call, self.shared))
        except BaseException as exc:  # noqa: BLE001  (the engine records it, then re-raises)
            fut.set_exception(exc)
        finally:
            release_memory()  # the next stage loads its own model: do not carry this one's freed pages
        return fut

    def outcome(self, fut: cf.Future, call: StageCall) -> StageOutcome:
        """The stage's outcome (or its exception, raised)."""
        return fut.result()

    def close(self) -> None:
        """Nothing to release."""


def _init_worker(env: dict, threads: int) -> None:
    """Worker start: pin its devices and threads before torch touches them (torch reads OMP_NUM_THREADS
    when it is first imported; a worker whose main module already imported it is set directly)."""
    os.environ.update(env)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in (s.strip() for s in env.split(",")) if g and g != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def partition_devices(jobs: int, gpus: list[str], cpus: int) -> list[dict]:
    """Split the machine into ``jobs`` equal slots.

    Args:
        jobs: stages running at once.
        gpus: visible GPU ids (may be empty).
        cpus: usable CPU cores.

    Returns:
        Per slot: ``{"env": {...}, "threads": n}``; with GPUs each slot gets ``len(gpus) // jobs`` of them
        through ``CUDA_VISIBLE_DEVICES``, and every slot gets ``cpus // jobs`` torch threads (at least 1).

    Raises:
        ConfigError: GPUs are visible but fewer than ``jobs`` (two stages would share one).
    """
    if gpus and len(gpus) < jobs:
        raise ConfigError(f"--jobs {jobs}: only {len(gpus)} GPU(s) visible ({','.join(gpus)}); "
                          f"use --jobs {len(gpus)} or fewer so that no two stages share a GPU")
    threads = max(1, cpus // jobs)
    per = len(gpus) // jobs if gpus else 0
    slots = []
    for k in range(jobs):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[k * per:(k + 1) * per])
        slots.append({"env": env, "threads": threads})
    return slots


def _check_picklable(call: StageCall) -> None:
    try:
        pickle.dumps(call)
    except Exception as exc:  # noqa: BLE001  (any pickling failure means the same thing here)
        raise WorkbenchError(f"stage '{call.task.name}': its {call.task.kind} executor cannot be sent to a worker "
                             f"process ({exc}); run this pipeline with --jobs 1") from None


class ProcessExecutor:
    """``--jobs N``: each stage in a fresh spawned process with its slot's devices and threads."""

    def __init__(self, jobs: int, gpus: list[str] | None = None, cpus: int | None = None):
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, not {jobs}")
        self.slots = jobs
        self.devices = partition_devices(jobs, _visible_gpus() if gpus is None else gpus, cpus or _cpu_count())
        self._pools: dict[cf.Future, cf.ProcessPoolExecutor] = {}

    def start(self, run_dir: Path) -> None:
        """Workers run on this machine: they see the run directory."""

    def submit(self, call: StageCall, slot: int) -> cf.Future:
        """Start the stage in its own process on device slot ``slot``."""
        _check_picklable(call)
        dev = self.devices[slot]
        pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(dev["env"], dev["threads"]))
        fut = pool.submit(call_stage, call)
        self._pools[fut] = pool
        return fut

    def outcome(self, fut: cf.Future, call: StageCall) -> StageOutcome:
        """The finished stage's outcome; its worker process is reaped.

        Raises:
            WorkerDiedError: the worker process died (killed, out of memory) before it returned.
            Exception: whatever the stage raised in the worker.
        """
        pool = self._pools.pop(fut)
        try:
            return fut.result()
        except BrokenProcessPool:
            raise WorkerDiedError(f"stage '{call.task.name}': its worker process died before the stage finished "
                                  f"(killed or out of memory); rerun to resume it in {call.out_dir}") from None
        finally:
            pool.shutdown(wait=True)

    def close(self) -> None:
        """Wait for every worker still running (the engine already waited for their futures)."""
        for pool in list(self._pools.values()):
            pool.shutdown(wait=True)
        self._pools.clear()


def make_executor(kind: str = "local", jobs: int = 1, address: str | None = None,
                  shared: dict | None = None):
    """The executor for ``--executor KIND --jobs N [--address ADDR]``.

    Raises:
        ConfigError: an unknown kind, or ``--address`` without ``--executor ray``.
        WorkbenchError: Ray is asked for but not installed (says how to install it).
    """
    if kind == "ray":
        from workbench.graph.ray_executor import RayExecutor

        return RayExecutor(address)
    if kind != "local":
        raise ConfigError(f"--executor: unknown executor '{kind}' (choose local or ray)")
    if address is not None:
        raise ConfigError("--address is only used with --executor ray")
    return InlineExecutor(shared) if jobs == 1 else ProcessExecutor(jobs)


def probe_token() -> str:
    """A fresh name for a run-directory visibility probe."""
    return f".probe-{uuid.uuid4().hex}"
