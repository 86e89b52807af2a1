"""Run one training stage with N processes (data parallel): ``accelerate launch`` on a small entry point
that executes exactly the stage's executor; the engine that called it commits the artifact as it does for
a one-process stage (its atomic commit and manifest entry are untouched).

Why a subprocess ``accelerate launch`` and not accelerate's ``notebook_launcher``/``debug_launcher`` or
``torch.multiprocessing``: the workers are fresh interpreters (the engine process may hold a loaded model,
threads, a CUDA context; forking after CUDA is initialised is unsafe and ``notebook_launcher`` refuses it),
it is the command users run by hand (``accelerate config``, FSDP flags and ``CUDA_VISIBLE_DEVICES`` apply
the same way), and torchrun's agent under it stops every worker when one dies, so the stage fails as a
whole and the rerun resumes from its last committed checkpoint.

Only the main process writes in the stage directory (checkpoints, adapter, ``train_summary.json``; see
``workbench/train/loop.py``); it hands the stage's :class:`StageResult` back through a private temporary
directory, which is also where the job description is. A worker that raises writes its exception there
and the parent re-raises it, so a refused resume reads the same under N processes as under one.

Everything handed over is JSON (the task graph, the input results, the context options, the result and
errors): the workbench writes only safetensors and JSON and unpickles nothing, even between its own
processes (tests/faults/test_files.py holds every module to that).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)
WORKER_ENV = "WORKBENCH_LAUNCHED"  # set in the workers: their executor trains in-process
PRECISION_FLAG = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class LaunchError(WorkbenchError):
    """The processes of a data-parallel stage failed without saying why (killed, out of memory)."""


class WorkerCrash(Exception):
    """What a worker raised that is not a workbench error (a crash, not a refusal), by type name and words."""


def processes_for(task, context) -> int:
    """How many processes a stage runs with: ``workbench run --processes N``, else its ``launch.processes``,
    else 1; always 1 inside a worker (the workers are the processes)."""
    if os.environ.get(WORKER_ENV) == "1":
        return 1
    given = context.options.get("processes")
    if given:
        return int(given)
    return int((task.params.get("launch") or {}).get("processes") or 1)


def launch_command(processes: int, launch: dict, precision: str, port: int) -> list[str]:
    """The ``accelerate launch`` command line of a stage's workers (the entry point is appended).

    Args:
        processes: number of processes on this machine.
        launch: the stage's resolved ``launch`` block (``fsdp``).
        precision: the stage's ``precision`` setting (the loop sets it on its Accelerator too).
        port: a free local port for the rendezvous.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", PRECISION_FLAG[precision], "--dynamo_backend", "no",
           "--main_process_port", str(port)]
    if launch.get("fsdp"):
        # use_orig_params: the masked-B parametrisation and the per-group optimizer see the original
        # parameters, not FSDP's flattened ones (untested here: CPU runs cannot use FSDP)
        cmd += ["--use_fsdp", "--fsdp_use_orig_params", "true", "--fsdp_sharding_strategy", "FULL_SHARD"]
    elif processes > 1:
        cmd += ["--multi_gpu"]  # DDP; with no GPU the loop's Accelerator(cpu=True) makes it gloo on CPU
    return cmd + ["--module", __name__]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_launched(task, inputs: dict, out_dir: Path, context, processes: int):
    """Execute ``task``'s executor in ``processes`` processes under ``accelerate launch``; return the
    main process's :class:`~workbench.graph.task.StageResult`.

    Raises:
        WorkbenchError: what a worker raised (the lowest rank's), re-raised here.
        LaunchError: the workers exited non-zero without reporting an error (killed, for instance).
    """
    p = task.params
    from workbench.io.atomic import atomic_write_json

    with tempfile.TemporaryDirectory(prefix="workbench-launch-") as tmp:
        job = Path(tmp) / "job.json"
        atomic_write_json(job, {"task": task_to_json(task), "inputs": {n: result_to_json(r) for n, r in inputs.items()},
                                "out_dir": str(out_dir), "run_dir": str(context.run_dir), "resume": context.resume,
                                "options": dict(context.options)})
        cmd = launch_command(processes, p.get("launch") or {}, p.get("precision") or "fp32", _free_port())
        log.info("stage %s: %d processes: %s", task.name, processes, " ".join(cmd))
        done = subprocess.run([*cmd, str(job), tmp], env={**os.environ, WORKER_ENV: "1"})
        errors = [error_from_json(_load(e)) for e in sorted(Path(tmp).glob("error-*.json"))]
        ours = [e for e in errors if isinstance(e, WorkbenchError)]
        if ours:  # a refused resume, a NaN loss, bad data: what one process would have raised
            raise ours[0]
        result = Path(tmp) / "result.json"
        if done.returncode != 0 or errors or not result.is_file():
            # a worker died (killed, out of memory); the others then fail in a collective: a symptom
            seen = f" (first worker error: {errors[0]})" if errors else ""
            raise LaunchError(f"stage {task.name}: its {processes} processes exited with status {done.returncode}"
                              f"{seen}; rerun to resume from the last committed checkpoint in "
                              f"{Path(out_dir) / 'checkpoints'}")
        return result_from_json(_load(result))


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def task_to_json(task) -> dict:
    """A graph task (and, recursively, its inputs) as plain JSON."""
    return {"name": task.name, "kind": task.kind, "params_json": task.params_json, "files": list(task.files),
            "inputs": [[role, task_to_json(t)] for role, t in task.inputs]}


def task_from_json(d: dict):
    """The inverse of :func:`task_to_json` (the digest is recomputed, so it is checked to match)."""
    from workbench.graph.task import Task

    return Task(d["name"], d["kind"], d["params_json"], tuple((r, task_from_json(t)) for r, t in d["inputs"]),
                tuple(d["files"]))


def result_to_json(result) -> dict:
    return {"artifacts": {k: str(v) for k, v in result.artifacts.items()}, "metrics": result.metrics}


def result_from_json(d: dict):
    from workbench.graph.task import StageResult

    return StageResult({k: Path(v) for k, v in d["artifacts"].items()}, d["metrics"])


def error_to_json(exc: BaseException) -> dict:
    return {"module": type(exc).__module__, "type": type(exc).__qualname__, "message": str(exc)}


def error_from_json(d: dict) -> BaseException:
    """A worker's error as the parent sees it: the same workbench error class with the same words (re-raised
    as it is); any other exception (a crash, not a refusal) as a :class:`WorkerCrash` quoting it."""
    if d["module"].startswith("workbench."):
        cls = getattr(importlib.import_module(d["module"]), d["type"], None)
        if isinstance(cls, type) and issubclass(cls, WorkbenchError):
            try:
                return cls(d["message"])
            except TypeError:  # a constructor that takes more than the message
                pass
    return WorkerCrash(f"{d['type']}: {d['message']}")


def worker(job_path: Path, handback: Path) -> None:
    """One worker: run the stage's executor; the main process hands its result back.

    Args:
        job_path: the job (task, inputs, stage directory, context) the parent wrote, as JSON.
        handback: the parent's private directory for ``result.json`` and ``error-<rank>.json``.
    """
    from accelerate import PartialState

    import workbench.stages.registry  # noqa: F401  (registers the executors)
    from workbench.graph.engine import EXECUTORS, StageContext
    from workbench.pipeline.plugins import import_plugin

    from workbench.io.atomic import atomic_write_json

    job = _load(job_path)
    task = task_from_json(job["task"])
    inputs = {n: result_from_json(r) for n, r in job["inputs"].items()}
    for f in task.files:  # plugin files (part of the key) define methods or tasks the stage may use
        if f.endswith(".py"):
            import_plugin(Path(f))
    rank = int(os.environ.get("RANK", "0"))
    options = dict(job["options"])
    if rank != 0:
        options.pop("tracking", None)  # experiment trackers log from the main process only
    context = StageContext(Path(job["run_dir"]), job["resume"], {}, options)
    # the executor undecorated: timing.json is written by the parent's decorated call (one writer)
    execute = getattr(EXECUTORS.get(task.kind), "__wrapped__", EXECUTORS.get(task.kind))
    try:
        result = execute(task, inputs, Path(job["out_dir"]), context)
    except BaseException as exc:
        atomic_write_json(handback / f"error-{rank:05d}.json", error_to_json(exc))
        raise
    if PartialState().is_main_process:
        atomic_write_json(handback / "result.json", result_to_json(result))


if __name__ == "__main__":
    from workbench.progress import quiet_third_party

    quiet_third_party()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
