"""Pipelines and runs: property 5 (skip by content), 15 (files validated before any work), 16 (graph
checked), 21 (code runs only where the user put it), 22 (evaluation resumes per cell). No training: the
engine runs counting executors."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.graph import plan, run_all
from workbench.graph.task import StageResult
from workbench.pipeline import PipelineError, load_pipeline

from .harness import bad_input, count

PIPE = """\
tasks:
  mine: {path: mine.jsonl}
  theirs: {path: theirs.jsonl}
defaults: {steps: 5, lr: 0.01, rank: 4}
stages:
  a: {kind: train, task: mine}
  b: {kind: train, task: theirs, a_seed: 3}
  e: {kind: evaluate, adapter: b, tasks: [theirs]}
"""

# the same pipeline with every mapping's keys in another order
PIPE_REORDERED = """\
stages:
  e: {tasks: [theirs], adapter: b, kind: evaluate}
  b: {a_seed: 3, task: theirs, kind: train}
  a: {task: mine, kind: train}
defaults: {rank: 4, lr: 0.01, steps: 5}
tasks:
  theirs: {path: theirs.jsonl}
  mine: {path: mine.jsonl}
"""


class Counting:
    def __init__(self):
        self.calls: Counter = Counter()

    def __call__(self, stage, inputs, out_dir: Path, context) -> StageResult:
        self.calls[stage.name] += 1
        (out_dir / "out.json").write_text(json.dumps(stage.params, sort_keys=True, default=str))
        return StageResult({"out": out_dir / "out.json"}, {})

    def registry(self) -> dict:
        return {k: self for k in ("train", "continue", "calibrate", "merge", "evaluate", "analyze")}


@pytest.fixture()
def done_run(tmp_path):
    """A finished run of PIPE; returns (tmp_path, load(text) -> pipeline)."""
    (tmp_path / "mine.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (tmp_path / "theirs.jsonl").write_text('{"instruction": "c", "output": "d"}\n')

    def load(text: str = PIPE):
        f = tmp_path / "p.yaml"
        f.write_text(text)
        return load_pipeline(f)

    run_all(load(), tmp_path / "run", executors=Counting().registry())
    return tmp_path, load


def _rerun(tmp: Path, pipeline) -> set[str]:
    counting = Counting()
    run_all(pipeline, tmp / "run", executors=counting.registry())
    return set(counting.calls)


# --- property 5: skip by content ------------------------------------------------------------------

def test_touching_files_reruns_nothing(done_run):
    tmp, load = done_run
    for name in ("mine.jsonl", "theirs.jsonl", "p.yaml"):
        os.utime(tmp / name, (time.time() + 3600, time.time() + 3600))
        (tmp / name).write_bytes((tmp / name).read_bytes())  # rewritten with the same bytes
    assert {row.status for row in plan(load(), tmp / "run")} == {"hit"}
    assert _rerun(tmp, load()) == set()


def test_reordered_yaml_keys_rerun_nothing(done_run):
    tmp, load = done_run
    assert {row.status for row in plan(load(PIPE_REORDERED), tmp / "run")} == {"hit"}
    assert _rerun(tmp, load(PIPE_REORDERED)) == set()


def test_one_changed_byte_reruns_exactly_its_consumers(done_run):
    tmp, load = done_run
    data = tmp / "theirs.jsonl"
    data.write_bytes(data.read_bytes().replace(b'"d"', b'"e"'))
    assert {r.task.name: r.status for r in plan(load(), tmp / "run")} == {"a": "hit", "b": "miss", "e": "miss"}
    assert _rerun(tmp, load()) == {"b", "e"}


# --- properties 15 and 16: validated before any work -------------------------------------------------

BAD = {
    "duplicate key": ("stages:\n  s: {kind: train, task: safety}\n  s: {kind: train, task: math}\n",
                      "duplicate key 's'"),
    "yaml 1.1 octal": ("stages:\n  s: {kind: train, task: safety, seed: 010}\n", "leading zero"),
    "yaml 1.1 boolean name": ("stages:\n  no: {kind: train, task: safety}\n", "stages"),
    "cycle": ("stages:\n  safety: {kind: continue, from: math, task: safety}\n"
              "  math: {kind: continue, from: safety, task: math}\n", "cycle: "),
    "self loop": ("stages:\n  safety: {kind: continue, from: safety, task: safety}\n", "safety"),
    "unknown ref": ("stages:\n  m: {kind: continue, from: safty, task: math}\n  safety: {kind: train, task: safety}\n",
                    "did you mean 'safety'?"),
    "dotdot name": ("stages:\n  ../x: {kind: train, task: safety}\n", "stage name '../x' is not allowed"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_pipeline_is_refused_before_a_run_directory_exists(tmp_path, capsys, case):
    text, expected = BAD[case]
    pipe, out = tmp_path / "bad.yaml", tmp_path / "runs" / "bad"
    pipe.write_text(text)
    bad_input()
    code = main(["run", str(pipe), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert expected in err and f"{pipe}:" in err, err
    assert not out.exists() and not out.parent.exists()


def test_cycle_is_printed_by_name_in_order(tmp_path):
    pipe = tmp_path / "c.yaml"
    pipe.write_text(BAD["cycle"][0])
    with pytest.raises(PipelineError) as err:
        load_pipeline(pipe)
    cycles = [line.split("cycle: ")[1] for line in str(err.value).splitlines() if "cycle: " in line]
    assert cycles and set(cycles) <= {"safety -> math -> safety", "math -> safety -> math"}, cycles


# --- property 21: code runs only where the user put it ---------------------------------------------

def _plant_module(tmp_path: Path, monkeypatch) -> Path:
    """A module that, if ever imported, creates a file: a stand-in for code smuggled into a config."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef merge(*a): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def test_a_dotted_strategy_in_a_pipeline_is_refused_and_never_imported(tmp_path, monkeypatch, capsys):
    marker = _plant_module(tmp_path, monkeypatch)
    pipe = tmp_path / "p.yaml"
    pipe.write_text("stages:\n  a: {kind: train, task: safety}\n  b: {kind: train, task: math}\n"
                    "  m: {kind: merge, adapters: [a, b], strategy: evil_plugin.merge}\n")
    bad_input()
    assert main(["validate", str(pipe)]) == 2
    assert "unknown merge strategy 'evil_plugin.merge'" in capsys.readouterr().err
    assert not marker.exists() and "evil_plugin" not in sys.modules


def test_a_dotted_strategy_on_the_command_line_is_refused_and_never_imported(tmp_path, monkeypatch, capsys):
    from .harness import tiny_adapter

    marker = _plant_module(tmp_path, monkeypatch)
    a, b = tiny_adapter(1).save(tmp_path / "a"), tiny_adapter(2).save(tmp_path / "b")
    bad_input()
    code = main(["merge", str(a), str(b), "--strategy", "evil_plugin.merge", "--out", str(tmp_path / "out")])
    assert code == 2 and "unknown merge strategy 'evil_plugin.merge'" in capsys.readouterr().err
    assert not marker.exists() and "evil_plugin" not in sys.modules and not (tmp_path / "out").exists()


def test_trust_remote_code_is_off_unless_asked(tmp_path):
    from workbench.models.base import BaseSpec
    from workbench.stages.common import base_spec

    assert BaseSpec().trust_remote_code is False and base_spec({}).trust_remote_code is False
    pipe = tmp_path / "p.yaml"
    pipe.write_text("stages:\n  a: {kind: train, task: safety}\n")
    assert load_pipeline(pipe).model.base.trust_remote_code is False


# --- property 22: evaluation resumes per cell ----------------------------------------------------

class Killed(BaseException):
    """Stands in for SIGKILL inside the evaluator (a BaseException: nothing catches it on the way out)."""


def test_kill_while_evaluating_task_3_of_4_recomputes_only_3_and_4(tmp_path, monkeypatch):
    import workbench.evaluate.api as api
    from workbench.graph import Task
    from workbench.stages.evaluate_stage import run_evaluate

    calls, killed = [], []

    def fake_evaluate(model, tok, task, limit=None, gen=None, **options):
        calls.append(task)
        if task == "t3" and not killed:
            killed.append(task)
            count("faults_injected")
            raise Killed()
        return {"primary": "acc", "metrics": {"acc": 0.5}, "higher_is_better": True}

    monkeypatch.setattr(api, "evaluate_task", fake_evaluate)
    monkeypatch.setattr(api, "load_for_eval", lambda adapter, base=None, **_: (None, None, {"base": base}))
    stage = Task.make("ev", "evaluate", {"tasks": ["t1", "t2", "t3", "t4"], "limit": 2})
    with pytest.raises(Killed):
        run_all([stage], tmp_path, executors={"evaluate": run_evaluate})
    assert calls == ["t1", "t2", "t3"]
    calls.clear()
    result = run_all([stage], tmp_path, executors={"evaluate": run_evaluate})["ev"]
    assert calls == ["t3", "t4"]
    assert sorted(result.metrics) == ["t1", "t2", "t3", "t4"]
