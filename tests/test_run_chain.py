"""The main job end to end on the tiny model: `workbench run "safety->math"`, cache hits on rerun,
selective reruns after a change, and exact resume after a SIGKILL inside a stage."""

import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from workbench.adapters.adapter import load_adapter
from workbench.masking.file import load_mask

QUICK = ["defaults.steps=3", "defaults.eval_limit=2", "defaults.max_new_tokens=4", "defaults.max_samples=24"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _sets(tiny_dir, *extra):
    return [*QUICK, f"base.model={tiny_dir}", *extra]


@pytest.fixture(scope="module")
def chain_run(tiny_dir, tmp_path_factory):
    from workbench.stages.run import run

    out = tmp_path_factory.mktemp("run") / "chain"
    results = run("safety->math", out, _sets(tiny_dir), progress=False)
    return out, results


def _stage(out: Path, name: str) -> Path:
    (hit,) = glob.glob(str(out / "stages" / f"{name}-*"))
    return Path(hit)


def test_chain_writes_adapters_disjoint_masks_forgetting_and_report(chain_run):
    out, results = chain_run
    safety, math = load_adapter(_stage(out, "safety")), load_adapter(_stage(out, "math"))
    m1 = load_mask(_stage(out, "safety_mask") / "mask.safetensors")
    m2 = load_mask(_stage(out, "math_mask") / "mask.safetensors")
    assert sum(int((m1.tensors[k] & m2.tensors[k]).sum()) for k in m1.tensors) == 0
    for k, m in m1.tensors.items():  # the safety entries are bitwise identical in the final adapter
        assert torch.equal(safety.tensors[k][m].view(torch.int32), math.tensors[k][m].view(torch.int32))
    forgetting = json.loads((out / "report" / "forgetting.json").read_text())
    assert forgetting["stages"] == ["base_eval", "safety_eval", "math_eval"]
    assert sorted(forgetting["tasks"]) == ["math", "safety"]
    assert all(v is not None for row in forgetting["matrix"] for v in row)
    assert forgetting["learned_at"] == [1, 2] and {"acc", "bwt", "forgetting"} <= set(forgetting["summary"])
    for f in ("report.json", "report.md", "report.html", "forgetting.png"):
        assert (out / "report" / f).is_file(), f
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(results) <= set(manifest["stages"])


def test_rerun_is_all_cache_hits(chain_run, tiny_dir):
    from workbench.graph.engine import plan
    from workbench.pipeline import load_pipeline

    out, _ = chain_run
    rows = plan(load_pipeline("safety->math", _sets(tiny_dir)), out)
    assert {r.status for r in rows} == {"hit"}


def test_changing_math_lr_reruns_only_math_and_dependents(chain_run, tiny_dir):
    from workbench.graph.engine import plan
    from workbench.pipeline import load_pipeline

    out, _ = chain_run
    rows = plan(load_pipeline("safety->math", _sets(tiny_dir, "stages.math.lr=0.02")), out)
    misses = sorted(r.task.name for r in rows if r.status == "miss")
    assert misses == ["analyze", "math", "math_eval"]


PIPE = """\
    # workbench run {path}
    base: {{model: {model}}}
    defaults: {{steps: 6, batch_size: 4, max_length: 64, max_samples: 16, checkpoint_every: 2, lr: 0.01,
               rank: 4, alpha: 8, weight_decay: 0.1}}
    stages:
      safety: {{kind: train, task: safety, method: lori_d}}
      math: {{kind: continue, from: safety, task: math}}
"""


def _cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_sigkill_inside_a_stage_then_rerun_equals_uninterrupted(tiny_dir, tmp_path):
    pipe = tmp_path / "p.yaml"
    pipe.write_text(textwrap.dedent(PIPE.format(path=pipe, model=tiny_dir)))
    ref = _cli(["run", str(pipe), "--out", str(tmp_path / "ref"), "--quiet"])
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = _cli(["run", str(pipe), "--out", str(tmp_path / "run"), "--quiet"],
                  env={"WORKBENCH_FAULT_STAGE": "math", "WORKBENCH_FAULT_KILL_AFTER": "3"})
    assert killed.returncode == -9
    assert "math" not in json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    resumed = _cli(["run", str(pipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_adapter(_stage(tmp_path / "ref", "math")), load_adapter(_stage(tmp_path / "run", "math"))
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    trace = json.loads((_stage(tmp_path / "run", "math") / "train_summary.json").read_text())["trace"]
    assert len(trace) == 6


def test_unquoted_chain_is_refused_with_the_quoted_form():
    res = _cli(["run", "safety-"])
    assert res.returncode == 2 and "'safety->math->code'" in res.stderr and "Traceback" not in res.stderr
