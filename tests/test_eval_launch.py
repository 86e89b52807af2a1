"""Evaluation stages under N data-parallel processes: each process computes every N-th batch
(workbench/evaluate/shard.py), the results are gathered in prompt order, and the stage writes the bytes one
process writes; the split itself is recorded by the processes (``eval_split.json``)."""

import json
from pathlib import Path

import pytest

from workbench.evaluate import shard
from workbench.graph.engine import plan
from workbench.pipeline import load_pipeline

PIPELINE = """\
name: evaldp
base: {{model: {model}}}
defaults: {{eval_limit: 20, max_new_tokens: 4{launch}}}
stages:
  greedy: {{kind: evaluate, adapter: null, tasks: [safety, math]}}
  sampled: {{kind: evaluate, adapter: null, tasks: [math], temperature: 0.9, top_p: 0.9}}
"""


def _pipeline(tmp_path, model="smollm2-135m-instruct", launch="") -> Path:
    path = tmp_path / "evaldp.yaml"
    path.write_text(PIPELINE.format(model=model, launch=launch))
    return path


def test_one_process_computes_every_batch_and_a_missing_batch_is_an_error():
    shard.record()  # what earlier tests' evaluations counted
    assert shard.world() == (0, 1) and shard.mine(3) == [0, 1, 2]
    assert shard.gather({1: "b", 0: "a"}, 2) == ["a", "b"]
    with pytest.raises(RuntimeError, match=r"batches \[1\] of 2"):
        shard.gather({0: "a"}, 2)
    assert shard.record() == {"world_size": 1, "batches": [3]}  # 2 + 1 gathered above, then reset
    assert shard.record() == {"world_size": 1, "batches": [0]}
    shard.gather({0: "a"}, 1)
    shard.reset()  # what an evaluate stage does first: batches of an earlier stage are not its own
    assert shard.record()["batches"] == [0]


def test_an_evaluate_stage_counts_only_its_own_batches(tmp_path, tiny_dir):
    from workbench.graph.engine import StageContext
    from workbench.stages.evaluate_stage import run_evaluate

    shard.gather({0: "an earlier stage's batch"}, 1)  # e.g. a training stage's held-out NLL in this process
    task = load_pipeline(str(_pipeline(tmp_path, model=tiny_dir))).task("sampled")
    run_evaluate.__wrapped__(task, {}, tmp_path / "out", StageContext(tmp_path))
    # math: 20 prompts in batches of 16 (2) and 20 held-out pairs in batches of 8 (3)
    assert json.loads((tmp_path / "out" / "eval_split.json").read_text()) == {"world_size": 1, "batches": [5]}


def test_an_evaluate_stage_takes_the_launch_block_outside_its_key(tmp_path):
    one = load_pipeline(str(_pipeline(tmp_path)))
    assert one.task("greedy").params["launch"] == {"processes": 1}
    two = load_pipeline(str(_pipeline(tmp_path, launch=", launch: {processes: 2}")))
    assert two.task("greedy").params["launch"] == {"processes": 2}
    assert [c.key for c in plan(one, tmp_path / "r")] == [c.key for c in plan(two, tmp_path / "r")]
    path = tmp_path / "own.yaml"
    path.write_text(PIPELINE.format(model="m", launch="").replace("tasks: [math],", "tasks: [math], launch: {processes: 3},"))
    assert load_pipeline(str(path)).task("sampled").params["launch"] == {"processes": 3}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _stage_dir(run_dir: Path, name: str) -> Path:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return run_dir / manifest["stages"][name]["dir"]


@pytest.mark.slow  # two evaluate stages under 2 gloo processes, then in one: ~40 s here
def test_two_processes_split_the_batches_and_write_the_one_process_results(tmp_path, tiny_dir):
    from workbench.stages.run import run

    pipe = _pipeline(tmp_path, model=tiny_dir)
    run(str(pipe), tmp_path / "two", processes=2, progress=False)
    run(str(pipe), tmp_path / "one", progress=False)
    for name in ("greedy", "sampled"):
        two, one = _stage_dir(tmp_path / "two", name), _stage_dir(tmp_path / "one", name)
        assert two.name == one.name  # one key: a run on N processes is a cache hit on one
        split2 = json.loads((two / "eval_split.json").read_text())
        split1 = json.loads((one / "eval_split.json").read_text())
        assert split2["world_size"] == 2 and split1 == {"world_size": 1, "batches": [sum(split2["batches"])]}
        # every process computed a share (every other batch), and no batch twice
        assert min(split2["batches"]) >= 1 and abs(split2["batches"][0] - split2["batches"][1]) <= 3
        # the same batches in the same padding: the very bytes, sampled decoding included (seeded per batch)
        assert (two / "results.json").read_bytes() == (one / "results.json").read_bytes()
    tasks = json.loads((_stage_dir(tmp_path / "two", "greedy") / "results.json").read_text())["tasks"]
    per_prompt = tasks["safety"]["details"]["per_seed"][0]
    assert tasks["math"]["metrics"]["nll"] > 0 and per_prompt  # prompts kept in order: compared bytewise above
