"""``workbench run --executor ray`` on a local Ray runtime (2 CPUs, loopback, no dashboard), on the tiny
model: artifacts equal the local executor's, a Ray task SIGKILLed mid-stage fails the run and the rerun
resumes from the stage's last committed checkpoint, and the run-directory probe names what it cannot see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install "workbench[ray]"')

from test_jobs import assert_same_stage_files  # noqa: E402  (the same comparison as --jobs 2 vs --jobs 1)

PIPE = """\
name: ray-small
defaults: {method: lori_d, rank: 4, steps: 4, batch_size: 4, max_samples: 16, max_length: 64,
           warmup_ratio: 0.0, checkpoint_every: 1}
stages:
  safety: {kind: train, task: safety, a_seed: 1}
  math:   {kind: train, task: math, a_seed: 2}
  merged: {kind: merge, adapters: [safety, math], strategy: concat}
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    root = tmp_path_factory.mktemp("ray")
    tiny = save_tiny_llama(root / "tiny")
    (root / "p.yaml").write_text(PIPE)
    return root / "p.yaml", [f"base.model={tiny}"]


def _stage_dir(run: Path, name: str) -> Path:
    (hit,) = (run / "stages").glob(f"{name}-*")
    return hit


@pytest.mark.slow
def test_ray_artifacts_equal_the_local_executor(local_ray, small, tmp_path):
    from workbench.stages.run import run

    pipe, sets = small
    out = tmp_path / "run"
    run(pipe, out, sets, progress=False)
    local = out.rename(tmp_path / "local")
    run(pipe, out, sets, progress=False, executor="ray")
    f1 = assert_same_stage_files(local, out)
    assert sum(n.endswith(".safetensors") for n in f1) >= 3


@pytest.mark.slow
def test_a_ray_task_killed_mid_stage_resumes_on_rerun(local_ray, small, tmp_path, monkeypatch):
    from workbench.graph.executors import WorkerDiedError
    from workbench.stages.run import run

    pipe, sets = small
    out = tmp_path / "run"
    monkeypatch.setenv("WORKBENCH_FAULT_KILL_AFTER", "2")  # forwarded to the Ray task (WORKBENCH_*)
    monkeypatch.setenv("WORKBENCH_FAULT_STAGE", "math")
    with pytest.raises(WorkerDiedError, match="stage 'math': its Ray task died"):
        run(pipe, out, sets, progress=False, executor="ray")
    manifest = json.loads((out / "manifest.json").read_text())
    assert "math" in manifest["failures"] and "math" not in manifest["stages"]
    assert (_stage_dir(out, "math") / "checkpoints").is_dir()
    run(pipe, out, sets, progress=False, executor="ray")
    summary = json.loads((_stage_dir(out, "math") / "train_summary.json").read_text())
    if "resumed_from" in summary:
        assert summary["resumed_from"] == 2 and summary["steps_this_run"] == 2
    monkeypatch.delenv("WORKBENCH_FAULT_KILL_AFTER")
    fresh = tmp_path / "fresh"
    run(pipe, fresh, sets, progress=False)  # uninterrupted, local: the resumed adapter equals it
    name = "adapter/adapter_model.safetensors"
    assert (_stage_dir(out, "math") / name).read_bytes() == (_stage_dir(fresh, "math") / name).read_bytes()


def test_run_dir_probe_is_checked_on_every_node(local_ray, tmp_path):
    from workbench.graph.ray_executor import RayExecutor

    RayExecutor().start(tmp_path)  # the one local node sees it; the probe files are cleaned up
    assert not list(tmp_path.glob(".probe-*"))


def test_a_node_that_cannot_see_the_run_dir_is_named(tmp_path):
    from workbench.graph.ray_executor import _probe

    problem = _probe(str(tmp_path / "elsewhere"), ".probe-x")["problem"]  # a node without the mount
    assert "elsewhere" in problem and "No such file" in problem
    from workbench.graph.ray_executor import _unanswered

    (tmp_path / ".probe-y").write_text(".probe-y")
    answer = _probe(str(tmp_path), ".probe-y")
    (tmp_path / f".probe-y.{answer['host']}").unlink()  # its answer went to a disk the driver does not see
    assert "is not visible here" in _unanswered(tmp_path, ".probe-y", [answer])[0]


def test_stage_resources_follow_the_launch_block(tmp_path):
    from workbench.graph import Task
    from workbench.graph.executors import StageCall
    from workbench.graph.ray_executor import stage_resources

    task = Task.make("t", "train", {"launch": {"processes": 2}})
    call = StageCall(print, task, {}, tmp_path, tmp_path, False)
    assert stage_resources(call, 0) == {"num_cpus": 2, "num_gpus": 0}
    assert stage_resources(call, 8) == {"num_cpus": 2, "num_gpus": 2}
    plain = StageCall(print, Task.make("e", "evaluate", {}), {}, tmp_path, tmp_path, False, {"processes": 4})
    assert stage_resources(plain, 0) == {"num_cpus": 1, "num_gpus": 0}
    # an evaluate stage with a launch block runs under accelerate launch too: --processes reaches it
    evaluate = StageCall(print, Task.make("e", "evaluate", {"launch": {"processes": 1}}), {}, tmp_path, tmp_path,
                         False, {"processes": 4})
    assert stage_resources(evaluate, 0) == {"num_cpus": 4, "num_gpus": 0}
