"""``--executor ray``: each stage is a Ray task; Ray places it on a node with the CPUs/GPUs it asks for.

The run directory must be on storage every node sees (NFS, Lustre, a shared home): stages read their
inputs' artifacts and write their own there, and the engine (the driver) records the manifest. That is
checked before the first stage: one probe task per alive node, pinned to it, reads a file the driver
wrote and writes one back. Tasks are not retried by Ray (``max_retries=0``): a task killed mid-stage
fails the run, and the rerun resumes it from its last committed checkpoint like any interrupted stage.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.graph.executors import RAY_INSTALL, StageCall, StageOutcome, WorkerDiedError, call_stage, probe_token

log = logging.getLogger("workbench.graph")


class RunDirNotSharedError(WorkbenchError):
    """A Ray node cannot see the run directory."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise WorkbenchError(RAY_INSTALL) from None
    return ray


def _probe(path: str, token: str) -> dict:
    """On a node: read the driver's probe file and answer in a second one.

    Returns:
        ``{"host": ..., "problem": what went wrong or ""}``.
    """
    import socket

    host = socket.gethostname()
    p = Path(path) / token
    try:
        if p.read_text(encoding="utf-8") != token:
            return {"host": host, "problem": f"{host}: {p} has other content"}
        (Path(path) / f"{token}.{host}").write_text(token, encoding="utf-8")
    except OSError as exc:
        return {"host": host, "problem": f"{host}: {exc}"}
    return {"host": host, "problem": ""}


def _unanswered(run_dir: Path, token: str, answers: list[dict]) -> list[str]:
    """Nodes whose answer file the driver cannot read (they wrote somewhere the driver does not see)."""
    return [f"{a['host']}: its file {run_dir / (token + '.' + a['host'])} is not visible here"
            for a in answers if not a["problem"] and not (run_dir / f"{token}.{a['host']}").is_file()]


def stage_resources(call: StageCall, cluster_gpus: float) -> dict:
    """The Ray resources of a stage: one CPU per process it runs (``--processes N`` for stages with a launch block,
    else its ``launch.processes``, else 1; the rule of ``workbench.stages.launch.processes_for``), and one
    GPU per process where the cluster has GPUs."""
    launch = call.task.params.get("launch") or {}
    # the kinds that run under accelerate launch are those with a launch block (train, continue, evaluate)
    given = call.options.get("processes") if "launch" in call.task.params else None
    processes = int(given or launch.get("processes") or 1)
    return {"num_cpus": processes, "num_gpus": processes if cluster_gpus > 0 else 0}


class RayExecutor:
    """Stages as Ray tasks on the cluster at ``address`` (None: a local Ray runtime, started here
    unless one is already initialised in this process)."""

    slots = None  # Ray queues tasks until resources free up: the engine submits every ready stage

    def __init__(self, address: str | None = None):
        self.ray = _import_ray()
        if not self.ray.is_initialized():
            kwargs = {"include_dashboard": False} if address is None else {}
            self.ray.init(address=address, log_to_driver=True, **kwargs)
        self._remote = self.ray.remote(max_retries=0)(call_stage)
        self._refs: dict[cf.Future, object] = {}

    def start(self, run_dir: Path) -> None:
        """Check that every alive node sees ``run_dir``.

        Raises:
            RunDirNotSharedError: a node cannot read or write it (names the path and the node).
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = probe_token()
        probe_file = Path(run_dir) / token
        probe_file.write_text(token, encoding="utf-8")
        remote = self.ray.remote(num_cpus=0, max_retries=0)(_probe)
        try:
            nodes = [n for n in self.ray.nodes() if n.get("Alive")]
            refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(Path(run_dir).absolute()), token) for n in nodes]
            answers = self.ray.get(refs)
            problems = [a["problem"] for a in answers if a["problem"]] + _unanswered(Path(run_dir), token, answers)
        finally:
            for p in Path(run_dir).glob(f"{token}*"):
                p.unlink(missing_ok=True)
        if problems:
            raise RunDirNotSharedError(f"run directory {Path(run_dir).absolute()} is not visible from every Ray node "
                                       f"({'; '.join(problems)}); put it on storage all nodes mount")
        log.info("run directory %s visible from %d Ray node(s)", run_dir, len(nodes))

    def submit(self, call: StageCall, slot: int) -> cf.Future:
        """Submit the stage as a Ray task with the resources its ``launch`` block needs."""
        res = stage_resources(call, self.ray.cluster_resources().get("GPU", 0))
        ref = self._remote.options(**res, name=f"stage:{call.task.name}").remote(call)
        fut = ref.future()
        self._refs[fut] = ref
        return fut

    def outcome(self, fut: cf.Future, call: StageCall) -> StageOutcome:
        """The task's outcome.

        Raises:
            WorkerDiedError: the task's worker died or the task was cancelled.
            Exception: whatever the stage raised (Ray re-raises it as the original type where it can).
        """
        self._refs.pop(fut, None)
        exc_types = self.ray.exceptions
        try:
            return fut.result()
        except (exc_types.WorkerCrashedError, exc_types.TaskCancelledError, exc_types.NodeDiedError) as exc:
            raise WorkerDiedError(f"stage '{call.task.name}': its Ray task died before the stage finished "
                                  f"({type(exc).__name__}); rerun to resume it in {call.out_dir}") from None
        except exc_types.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None

    def cancel_all(self) -> None:
        """Force-cancel every task still running (used when the driver is interrupted)."""
        for ref in list(self._refs.values()):
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        """Cancel the tasks still running (the driver was interrupted, or stopped after a failure raised
        while submitting), and leave the Ray runtime up (a caller or a cluster owns it)."""
        self.cancel_all()
        self._refs.clear()
