"""The task graph and run store, driven by counting dummy executors (mergekit's test_graph pattern)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from workbench.graph import (GraphError, RunLock, RunLockedError, StageResult, Task, check_dependencies, plan,
                             run_all, run_pipeline)
from workbench.graph.status import format_status, run_status
from workbench.pipeline import load_pipeline

PIPELINE = """\
tasks:
  mine: {{path: data.jsonl}}
defaults: {{steps: 5}}
stages:
  probe: {{kind: train, task: mine, a_seed: 0}}
  mask: {{kind: calibrate, from: probe}}
  adapter: {{kind: train, task: mine, method: lori_s, mask: mask, lr: {lr}}}
  other: {{kind: train, task: mine, a_seed: 7}}
  eval: {{kind: evaluate, adapter: adapter, tasks: [mine]}}
  report: {{kind: analyze, adapters: [adapter, other], masks: [mask], forgetting: [eval]}}
"""


class Counting:
    """Executors for every kind that count calls, record resume hints and write one artifact."""

    def __init__(self, fail: str | None = None):
        self.calls: Counter = Counter()
        self.resumed: dict[str, bool] = {}
        self.fail = fail

    def __call__(self, stage: Task, inputs, out_dir: Path, context) -> StageResult:
        self.calls[stage.name] += 1
        self.resumed[stage.name] = context.resume
        assert set(inputs) == {t.name for _, t in stage.inputs}
        (out_dir / "partial.bin").write_bytes(b"checkpoint")
        if stage.name == self.fail:
            raise RuntimeError(f"boom in {stage.name}")
        out = out_dir / "out.json"
        out.write_text(json.dumps({"params": stage.params, "inputs": sorted(inputs)}))
        return StageResult({"out": out}, {"calls": self.calls[stage.name]})

    def registry(self) -> dict:
        return {k: self for k in ("train", "continue", "calibrate", "merge", "evaluate", "analyze")}


@pytest.fixture()
def setup(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"instruction": "a", "output": "b"}\n')

    def write(lr="1e-2"):
        f = tmp_path / "p.yaml"
        f.write_text(PIPELINE.format(lr=lr))
        return load_pipeline(f)

    return tmp_path, write


def test_rerun_is_all_hits_and_calls_nothing(setup):
    tmp, write = setup
    counting = Counting()
    first = run_all(write(), tmp / "run", executors=counting.registry())
    assert set(first) == {"probe", "mask", "adapter", "other", "eval", "report"}
    assert all(n == 1 for n in counting.calls.values()) and len(counting.calls) == 6
    assert {s for _, _, s in plan(write(), tmp / "run")} == {"hit"}
    again = Counting()
    second = run_all(write(), tmp / "run", executors=again.registry())
    assert not again.calls
    assert second["eval"].artifacts["out"] == first["eval"].artifacts["out"]
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    assert manifest["stages"]["report"]["artifacts"]["out"]["sha256"]
    assert (tmp / "run" / "pipeline.resolved.yaml").read_text().count("&id") == 0


def test_changed_param_reruns_stage_and_descendants_only(setup):
    tmp, write = setup
    run_all(write(), tmp / "run", executors=Counting().registry())
    changed = write(lr="3e-2")
    rows = {t.name: s for t, _, s in plan(changed, tmp / "run")}
    assert rows == {"probe": "hit", "mask": "hit", "other": "hit", "adapter": "miss", "eval": "miss", "report": "miss"}
    counting = Counting()
    run_all(changed, tmp / "run", executors=counting.registry())
    assert set(counting.calls) == {"adapter", "eval", "report"}


def test_set_override_changes_key_like_an_edit(setup):
    tmp, write = setup
    base = write()
    over = load_pipeline(tmp / "p.yaml", ["stages.other.rank=4"])
    keys = {t.name: k for t, k, _ in plan(base, tmp / "nowhere")}
    keys2 = {t.name: k for t, k, _ in plan(over, tmp / "nowhere")}
    assert {n for n in keys if keys[n] != keys2[n]} == {"other", "report"}
    assert not (tmp / "nowhere").exists()


def test_data_file_content_not_mtime_decides(setup):
    tmp, write = setup
    run_all(write(), tmp / "run", executors=Counting().registry())
    data = tmp / "data.jsonl"
    os.utime(data, (time.time() + 100, time.time() + 100))
    assert {s for _, _, s in plan(write(), tmp / "run")} == {"hit"}
    data.write_text('{"instruction": "a", "output": "c"}\n')
    counting = Counting()
    run_all(write(), tmp / "run", executors=counting.registry())
    assert set(counting.calls) == {"probe", "mask", "adapter", "other", "eval", "report"}


def test_tampered_artifact_reruns_that_stage(setup):
    tmp, write = setup
    results = run_all(write(), tmp / "run", executors=Counting().registry())
    results["other"].artifacts["out"].write_text("tampered")
    counting = Counting()
    run_all(write(), tmp / "run", executors=counting.registry())
    assert set(counting.calls) == {"other"}  # same key: consumers' inputs are unchanged


def test_crash_leaves_no_entry_and_next_run_resumes(setup):
    tmp, write = setup
    crashing = Counting(fail="adapter")
    with pytest.raises(RuntimeError, match="boom in adapter"):
        run_all(write(), tmp / "run", executors=crashing.registry())
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    assert "adapter" not in manifest["stages"] and {"probe", "mask"} <= set(manifest["stages"])
    assert manifest["failed"]["stage"] == "adapter"
    assert not (tmp / "run" / ".lock").exists()
    statuses = {r.name: r.status for r in run_status(tmp / "run")}
    assert statuses["probe"] == "done" and statuses["adapter"] == "failed" and statuses["report"] == "pending"
    counting = Counting()
    run_all(write(), tmp / "run", executors=counting.registry())
    assert "probe" not in counting.calls and counting.calls["adapter"] == 1
    assert counting.resumed["adapter"] is True and counting.resumed["eval"] is False
    assert "6/6 stages done" in format_status(run_status(tmp / "run"))


def test_stage_dir_without_entry_and_stale_temps_are_not_trusted(setup):
    tmp, write = setup
    run_all(write(), tmp / "run", executors=Counting().registry())
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    del manifest["stages"]["eval"]
    (tmp / "run" / "manifest.json").write_text(json.dumps(manifest))
    stale = tmp / "run" / "stages" / ".wbtmp-x.json.123"
    stale.write_text("half")
    counting = Counting()
    run_all(write(), tmp / "run", executors=counting.registry())
    assert set(counting.calls) == {"eval"} and counting.resumed["eval"] is True
    assert not stale.exists()


def test_diamond_and_equal_stages_run_once(tmp_path):
    a = Task.make("a", "train", {"x": 1})
    b = Task.make("b", "calibrate", {"y": 1}, [("from", a)])
    c = Task.make("c", "calibrate", {"y": 2}, [("from", a)])
    twin = Task.make("twin", "calibrate", {"y": 2}, [("from", a)])  # same work as c
    d = Task.make("d", "merge", {}, [("adapters.0", b), ("adapters.1", c), ("adapters.2", twin)])
    counting = Counting()
    results = run_all([d], tmp_path / "run", executors=counting.registry())
    assert counting.calls == Counter({"a": 1, "b": 1, "c": 1, "d": 1})
    assert results["twin"] is results["c"] and set(results) == {"a", "b", "c", "twin", "d"}
    assert {s for _, _, s in plan([d], tmp_path / "run")} == {"hit"}


def test_task_identity_ignores_name_and_key_order():
    t1 = Task.make("one", "train", {"lr": 1e-3, "rank": 8})
    t2 = Task.make("two", "train", {"rank": 8, "lr": 1e-3})
    assert t1 == t2 and hash(t1) == hash(t2) and len({t1, t2}) == 1
    assert Task.make("one", "train", {"rank": 16, "lr": 1e-3}) != t1


def test_graph_errors_name_the_stages():
    with pytest.raises(GraphError, match=r"stage 'a' is in a cycle: a -> b -> c -> a"):
        check_dependencies([("a", ["c"]), ("b", ["a"]), ("c", ["b"])])
    with pytest.raises(GraphError, match=r"stage 'm' refers to itself: m -> m"):
        check_dependencies([("m", ["m"])])
    with pytest.raises(GraphError, match=r"stage 'b' refers to unknown stage 'aa' \(did you mean 'a'\?\)"):
        check_dependencies([("a", []), ("b", ["aa"])])
    with pytest.raises(GraphError, match="duplicate stage names: a"):
        check_dependencies([("a", []), ("a", [])])
    assert check_dependencies([("z", ["y"]), ("y", []), ("x", ["y"])]) == ["y", "z", "x"]


def test_two_different_tasks_with_one_name_are_refused(tmp_path):
    a1, a2 = Task.make("a", "train", {"x": 1}), Task.make("a", "train", {"x": 2})
    with pytest.raises(GraphError, match="two different stages are named 'a'"):
        plan([Task.make("m", "merge", {}, [("adapters.0", a1), ("adapters.1", a2)])], tmp_path)


HOLD = """
import sys, time
from workbench.graph import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_lock_contention_and_stale_recovery(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"in use by process {holder.pid} on "):
            run_all([Task.make("a", "train", {})], run, executors=Counting().registry())
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale and is taken over
    assert (run / ".lock").exists()
    counting = Counting()
    run_all([Task.make("a", "train", {})], run, executors=counting.registry())
    assert counting.calls["a"] == 1 and not (run / ".lock").exists()


def test_lock_from_another_host_is_not_stolen(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "since": 0}))
    with pytest.raises(RunLockedError, match="if nothing runs on elsewhere.example, delete"):
        RunLock(tmp_path).acquire()


def test_graph_layer_imports_no_torch_nn_or_transformers():
    code = ("import sys, workbench.graph, workbench.graph.status; "
            "bad = [m for m in sys.modules if m == 'transformers' or m.startswith(('transformers.', 'torch.nn'))]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_status_cli(setup, capsys):
    from workbench.cli import main

    tmp, write = setup
    run_all(write(), tmp / "run", executors=Counting().registry())
    assert main(["status", str(tmp / "run")]) == 0
    assert "6/6 stages done" in capsys.readouterr().out
    assert main(["status", str(tmp / "nothing")]) == 2


def test_validate_cli_shows_hits(setup, capsys):
    from workbench.cli import main

    tmp, write = setup
    write()
    run_all(write(), tmp / "run", executors=Counting().registry())
    assert main(["validate", str(tmp / "p.yaml"), "--out", str(tmp / "run"), "--set", "stages.eval.limit=3"]) == 0
    lines = {ln.split()[1]: ln.split()[3] for ln in capsys.readouterr().out.splitlines()[1:]}
    assert lines["probe"] == "hit" and lines["eval"] == "miss" and lines["report"] == "miss"


def test_streaming_yields_in_order_and_stops_cleanly(setup):
    tmp, write = setup
    gen = run_pipeline(write(), tmp / "run", executors=Counting().registry())
    name, result = next(gen)
    assert name == "probe" and isinstance(result, StageResult)
    assert (tmp / "run" / ".lock").exists()
    gen.close()
    assert not (tmp / "run" / ".lock").exists()


_TRIM_SCRIPT = """
import os, torch
from workbench.graph.memory import release_memory
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
chunks = [torch.ones(8000) for _ in range(7800)]  # ~250 MB of 32 KB blocks
keep = torch.ones(10)  # allocated last, on top of the heap: free() alone cannot shrink it
del chunks
import gc; gc.collect()
freed = rss_mb()
trimmed = release_memory()
print(freed, rss_mb(), int(trimmed))
"""


def test_release_memory_returns_freed_pages_to_the_os():
    """Freed mid-sized tensors stay resident in glibc's arenas until trimmed (what a stage leaves behind).
    In a fresh process: the test process's own heap history would make the numbers depend on test order."""
    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    res = subprocess.run([sys.executable, "-c", _TRIM_SCRIPT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    freed, after, trimmed = map(float, res.stdout.split())
    if not trimmed:
        pytest.skip("no glibc malloc_trim here")
    assert after < freed - 100, (freed, after)
