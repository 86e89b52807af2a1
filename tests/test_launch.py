"""Data-parallel stages: `launch:` in a pipeline and `workbench run --processes N` run a training stage in N
processes under accelerate launch (gloo on CPU), the engine commits the artifact, `launch` stays out of
the cache key, and a killed worker's stage resumes from its last committed checkpoint on rerun."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

from workbench.graph.engine import StageContext, plan
from workbench.graph.task import Task
from workbench.pipeline import load_pipeline
from workbench.stages.launch import launch_command, processes_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import TWO_PROCESS_ATOL, _max_diff, assert_half_of_every_batch  # noqa: E402

PIPELINE = """\
name: dp
base: {{model: {model}}}
defaults: {{method: lora, rank: 4, steps: {steps}, batch_size: 4, max_samples: 8, max_length: 64,
           checkpoint_every: 2, lr: 0.01{launch}}}
stages:
  math: {{kind: train, task: math}}
"""


def _pipeline(tmp_path, model="smollm2-135m-instruct", steps=2, launch="") -> Path:
    path = tmp_path / "dp.yaml"
    path.write_text(PIPELINE.format(model=model, steps=steps, launch=launch))
    return path


def test_launch_block_resolves_into_the_stage_but_not_into_its_key(tmp_path):
    one = load_pipeline(str(_pipeline(tmp_path)))
    assert one.task("math").params["launch"] == {"processes": 1, "mixed_precision": None, "fsdp": False}
    two = load_pipeline(str(_pipeline(tmp_path, launch=", launch: {processes: 2}")))
    assert two.task("math").params["launch"]["processes"] == 2
    # how a stage runs is not what it computes: one key, so a run on 8 GPUs is a cache hit on one
    assert plan(one, tmp_path / "run")[0].key == plan(two, tmp_path / "run")[0].key
    bf16 = load_pipeline(str(_pipeline(tmp_path, launch=", launch: {processes: 2, mixed_precision: bf16}")))
    assert bf16.task("math").params["precision"] == "bf16"  # mixed_precision is the precision: in the key
    assert plan(bf16, tmp_path / "run")[0].key != plan(one, tmp_path / "run")[0].key


def test_a_stage_launch_block_replaces_the_defaults_one_and_bad_values_are_located(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(model="m", steps=2, launch=", launch: {processes: 4}")
                    .replace("task: math}", "task: math, launch: {processes: 2}}"))
    assert load_pipeline(str(path)).task("math").params["launch"]["processes"] == 2
    from workbench.pipeline.problems import PipelineError

    path.write_text(PIPELINE.format(model="m", steps=2, launch=", launch: {processes: 0, gpus: 2}"))
    with pytest.raises(PipelineError) as err:
        load_pipeline(str(path))
    text = str(err.value)
    assert "defaults.launch.processes" in text and "defaults.launch.gpus" in text, text
    path.write_text(PIPELINE.format(model="m", steps=2, launch=", launch: {processes: 2, fsdp: true}"))
    with pytest.raises(PipelineError, match=r"defaults.launch.fsdp: .*not supported yet"):
        load_pipeline(str(path))


def test_processes_come_from_the_flag_then_the_stage_and_are_one_inside_a_worker(monkeypatch):
    task = Task.make("a", "train", {"launch": {"processes": 3}})
    assert processes_for(task, StageContext(Path("."))) == 3
    assert processes_for(task, StageContext(Path("."), options={"processes": 2})) == 2
    assert processes_for(Task.make("b", "train", {}), StageContext(Path("."))) == 1
    monkeypatch.setenv("WORKBENCH_LAUNCHED", "1")
    assert processes_for(task, StageContext(Path("."), options={"processes": 2})) == 1


def test_launch_command_is_ddp_or_fsdp_with_orig_params():
    ddp = launch_command(2, {}, "fp32", 29999)
    assert ddp[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in ddp
    assert ddp[ddp.index("--num_processes") + 1] == "2" and ddp[ddp.index("--mixed_precision") + 1] == "no"
    assert ddp[-2:] == ["--module", "workbench.stages.launch"]
    fsdp = launch_command(8, {"fsdp": True}, "bf16", 29999)
    assert "--use_fsdp" in fsdp and fsdp[fsdp.index("--fsdp_use_orig_params") + 1] == "true"
    assert "--multi_gpu" not in fsdp and fsdp[fsdp.index("--mixed_precision") + 1] == "bf16"


def test_run_refuses_a_bad_processes_flag(capsys):
    from workbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "x.yaml", "--processes", "0"])
    assert exc.value.code == 2 and "--processes" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _summary(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stage_dir = run_dir / manifest["stages"]["math"]["dir"]
    return json.loads((stage_dir / "train_summary.json").read_text()), manifest["stages"]["math"]


@pytest.mark.slow  # a 2-process stage under accelerate launch and a 1-process one: ~60 s here
def test_run_with_two_processes_commits_the_one_process_adapter(tmp_path, tiny_dir):
    from workbench.stages.run import run

    pipe = _pipeline(tmp_path, model=tiny_dir)
    two = run(str(pipe), tmp_path / "two", processes=2, progress=False)
    summary, entry = _summary(tmp_path / "two")
    assert_half_of_every_batch(summary)
    assert two["math"].metrics["world_size"] == 2 and entry["metrics"]["world_size"] == 2
    one = run(str(pipe), tmp_path / "one", progress=False)
    assert one["math"].metrics["world_size"] == 1
    # the same key (launch is not in it), so the same stage directory name in both runs
    assert Path(two["math"].artifacts["adapter"]).parent.name == Path(one["math"].artifacts["adapter"]).parent.name
    assert _max_diff(two["math"].artifacts["adapter"], one["math"].artifacts["adapter"]) <= TWO_PROCESS_ATOL


@pytest.mark.slow  # two 2-process runs of a 4-step stage
def test_a_killed_worker_resumes_from_the_last_checkpoint_on_rerun(tmp_path, tiny_dir, monkeypatch):
    from workbench.stages.run import run
    from workbench.stages.launch import LaunchError

    pipe = _pipeline(tmp_path, model=tiny_dir, steps=4)  # checkpoints after step 2 (not after the last)
    monkeypatch.setenv("WORKBENCH_FAULT_KILL_AFTER", "3")
    monkeypatch.setenv("WORKBENCH_FAULT_RANK", "1")  # one worker dies; torchrun stops the other
    with pytest.raises(LaunchError, match="rerun to resume"):
        run(str(pipe), tmp_path / "run", processes=2, progress=False)
    monkeypatch.delenv("WORKBENCH_FAULT_KILL_AFTER")
    result = run(str(pipe), tmp_path / "run", processes=2, progress=False)
    summary, _ = _summary(tmp_path / "run")
    assert summary["world_size"] == 2 and summary["resumed_from"] == 2
    assert summary["steps_this_run"] == 2 and [t["step"] for t in summary["trace"]] == [1, 2, 3, 4]
    assert summary["tokens_this_run"] == sum(t["tokens"] for t in summary["trace"][2:]) < summary["tokens"]
    assert result["math"].metrics["resumed_from"] == 2
