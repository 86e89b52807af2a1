"""Parallel stages (``workbench run --jobs N``): the engine stays the one writer of the manifest whatever
order stages finish or fail in (forced here with a hand-driven executor, not sleeps), workers really run
at the same time in their own processes, a worker killed mid-stage fails only its stage, and
merge-four under ``--jobs 2`` equals ``--jobs 1`` bit for bit (slow)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.graph import StageResult, Task, run_all
from workbench.graph.engine import StagesFailedError
from workbench.graph.executors import ProcessExecutor, StageOutcome, call_stage, make_executor, partition_devices


def write_params(stage, inputs, out_dir: Path, context) -> StageResult:
    """A stage executor that runs in any process: writes its params and reports its pid."""
    (out_dir / "out.json").write_text(json.dumps({"params": stage.params, "inputs": sorted(inputs)}))
    return StageResult({"out": out_dir / "out.json"}, {"pid": os.getpid()})


def meet(stage, inputs, out_dir: Path, context) -> StageResult:
    """Announce this stage has started, then wait until its partner has too: completes only when both run
    at the same time (a run that ran them one after another times out here)."""
    run = Path(context.run_dir)
    (run / f"started-{stage.name}").write_text(str(os.getpid()))
    partner = run / f"started-{stage.params['partner']}"
    deadline = time.monotonic() + 60
    while not partner.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stage.name}: {partner.name} never appeared: the stages did not overlap")
        time.sleep(0.02)
    return write_params(stage, inputs, out_dir, context)


def die_or_write(stage, inputs, out_dir: Path, context) -> StageResult:
    """SIGKILL this worker process when the stage says so (a worker killed mid-stage), else write."""
    if stage.params.get("die") and not (out_dir / "died-once").exists():
        (out_dir / "died-once").write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
    return write_params(stage, inputs, out_dir, context)


class Boom(RuntimeError):
    pass


class HandDriven:
    """An executor whose stages finish when the test says so, in the order it says: the interleaving
    of commits and failures is chosen, not left to timing. Every manifest write is checked as it happens."""

    slots = 4

    def __init__(self):
        self.futures: dict[str, cf.Future] = {}
        self.calls: dict[str, object] = {}
        self.submitted = threading.Condition()

    def start(self, run_dir):
        pass

    def submit(self, call, slot):
        fut: cf.Future = cf.Future()
        with self.submitted:
            self.futures[call.task.name], self.calls[call.task.name] = fut, call
            self.submitted.notify_all()
        return fut

    def outcome(self, fut, call):
        return fut.result()

    def close(self):
        pass

    def wait_submitted(self, names):
        with self.submitted:
            assert self.submitted.wait_for(lambda: set(names) <= set(self.futures), timeout=30), self.futures

    def finish(self, name, ok: bool = True):
        call = self.calls[name]
        if ok:
            self.futures[name].set_result(StageOutcome(write_params(call.task, call.inputs, call.out_dir, None),
                                                       1.0, 2.0))
        else:
            self.futures[name].set_exception(Boom(f"{name} broke"))


def _four_and_a_consumer():
    a, b, c, d = (Task.make(n, "train", {"n": n}) for n in "abcd")
    return [a, b, c, d, Task.make("e", "merge", {}, inputs=[("adapters.0", a), ("adapters.1", b)])]


@pytest.mark.parametrize("order", [("a", "b!", "c", "d!"), ("b!", "a", "d!", "c"), ("d!", "b!", "c", "a")])
def test_failures_and_commits_in_any_order_leave_a_whole_manifest(tmp_path, monkeypatch, order):
    """Two stages fail and two commit, in the chosen order; after each step the engine applied, the manifest
    on disk is whole JSON that holds every commit and every failure so far (none erased by a later write)."""
    import workbench.graph.store as store_mod

    written, snapshots = threading.Event(), []
    real_write = store_mod.atomic_write_json

    def checked_write(path, data, *a, **k):
        real_write(path, data, *a, **k)
        snapshots.append(json.loads(Path(path).read_text()))  # whole JSON, or this raises
        written.set()

    monkeypatch.setattr(store_mod, "atomic_write_json", checked_write)
    hand = HandDriven()

    def drive():
        hand.wait_submitted("abcd")
        for step in order:
            written.clear()
            hand.finish(step.rstrip("!"), ok=not step.endswith("!"))
            assert written.wait(30), f"the engine never applied {step}"

    driver = threading.Thread(target=drive)
    driver.start()
    with pytest.raises(StagesFailedError, match="2 stages failed") as err:
        run_all(_four_and_a_consumer(), tmp_path, executors={"train": write_params, "merge": write_params},
                executor=hand)
    driver.join()
    assert "'b'" in str(err.value) and "'d'" in str(err.value)
    commits, failed = set(), set()
    for step, snap in zip(order, snapshots[-len(order):]):
        (commits if not step.endswith("!") else failed).add(step.rstrip("!"))
        assert commits <= {n for n, e in snap["stages"].items() if e["status"] == "done"}, (step, snap)
        assert failed == set(snap.get("failures", {})), (step, snap)
        if failed:  # the first failure stays the one older readers see
            assert snap["failed"]["stage"] == next(s.rstrip("!") for s in order if s.endswith("!"))
    assert "e" not in hand.futures  # nothing new starts once a stage failed

    again = HandDriven()
    threading.Thread(target=lambda: (again.wait_submitted("bd"), again.finish("b"), again.finish("d"),
                                     again.wait_submitted("e"), again.finish("e"))).start()
    results = run_all(_four_and_a_consumer(), tmp_path, executors={"train": write_params, "merge": write_params},
                      executor=again)
    assert set(again.futures) == {"b", "d", "e"}  # the rerun redoes what failed (and what waited on it) only
    assert set(results) == set("abcde")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "failures" not in manifest and "failed" not in manifest


def test_one_failure_is_raised_as_itself_and_named_in_the_manifest(tmp_path):
    hand = HandDriven()
    threading.Thread(target=lambda: (hand.wait_submitted("abcd"), hand.finish("c", ok=False),
                                     hand.finish("a"), hand.finish("b"), hand.finish("d"))).start()
    with pytest.raises(Boom, match="c broke"):
        run_all(_four_and_a_consumer(), tmp_path, executors={"train": write_params, "merge": write_params},
                executor=hand)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["failures"]) == {"c"} and manifest["failed"]["stage"] == "c"
    assert {n for n in manifest["stages"]} == {"a", "b", "d"}
    from workbench.graph.status import run_status

    assert {r.name: r.status for r in run_status(tmp_path)}["c"] == "failed"


def test_two_workers_run_at_once_in_their_own_processes(tmp_path):
    """Each stage waits for the other to start: this finishes only if both ran at the same time."""
    a = Task.make("a", "train", {"partner": "b"})
    b = Task.make("b", "train", {"partner": "a"})
    merged = Task.make("m", "merge", {}, inputs=[("adapters.0", a), ("adapters.1", b)])
    results = run_all([a, b, merged], tmp_path / "run", executors={"train": meet, "merge": write_params}, jobs=2)
    pids = {n: r.metrics["pid"] for n, r in results.items()}
    assert len({pids["a"], pids["b"], os.getpid()}) == 3
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert stages["a"]["started"] < stages["b"]["finished"] and stages["b"]["started"] < stages["a"]["finished"]
    assert stages["m"]["started"] >= max(stages["a"]["finished"], stages["b"]["finished"])


def test_a_killed_worker_fails_its_stage_only_and_the_rerun_redoes_it(tmp_path):
    stages = [Task.make("dies", "train", {"die": True}), Task.make("lives", "train", {})]
    executors = {"train": die_or_write}
    from workbench.graph.executors import WorkerDiedError

    with pytest.raises(WorkerDiedError, match="stage 'dies'.*worker process died"):
        run_all(stages, tmp_path, executors=executors, jobs=2)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"lives"} and set(manifest["failures"]) == {"dies"}
    done_before = manifest["stages"]["lives"]["finished"]
    results = run_all(stages, tmp_path, executors=executors, jobs=2)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(results) == {"dies", "lives"} and manifest["stages"]["lives"]["finished"] == done_before


def test_devices_are_partitioned_per_slot():
    slots = partition_devices(2, ["0", "1", "2", "3"], 16)
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
    assert [s["threads"] for s in slots] == [8, 8]
    cpu = partition_devices(2, [], 2)
    assert [s["threads"] for s in cpu] == [1, 1] and all("CUDA_VISIBLE_DEVICES" not in s["env"] for s in cpu)
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="--jobs 4: only 2 GPU"):
        partition_devices(4, ["0", "1"], 8)


def test_worker_threads_and_devices_are_set_before_the_stage(tmp_path):
    ex = ProcessExecutor(2, gpus=["5", "7"], cpus=4)
    task = Task.make("t", "train", {})

    from workbench.graph.executors import StageCall

    call = StageCall(report_env, task, {}, tmp_path, tmp_path, False)
    fut = ex.submit(call, 1)
    out = ex.outcome(fut, call)
    assert out.result.metrics == {"cuda": "7", "threads": 2}


def report_env(stage, inputs, out_dir, context) -> StageResult:
    import torch

    return StageResult({}, {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": torch.get_num_threads()})


def test_executor_ray_without_ray_says_how_to_install(monkeypatch):
    from workbench.errors import WorkbenchError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(WorkbenchError, match=r'pip install "workbench\[ray\]"'):
        make_executor("ray")


def test_address_without_ray_is_refused():
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="--address is only used with --executor ray"):
        make_executor("local", 1, "auto")


def test_inline_call_stage_times_the_stage(tmp_path):
    from workbench.graph.executors import StageCall

    out = call_stage(StageCall(write_params, Task.make("t", "train", {}), {}, tmp_path, tmp_path, False))
    assert out.started <= out.finished and out.pid == os.getpid()


# --- acceptance: merge-four on the tiny model ---------------------------------------------------

MERGE_FOUR_SETS = ["defaults.steps=3", "defaults.eval_limit=2", "defaults.max_new_tokens=4", "defaults.max_samples=24"]
# written per run by design: when, how long, how much memory; everything else must match bit for bit
VOLATILE = {"created", "seconds", "peak_rss_mb", "tokens_per_s", "wall_s", "elapsed_s", "samples_per_s"}


def _files(run: Path) -> dict[str, bytes]:
    """Every file under the run's stages, except each stage's timing.json (only wall-clock times and RSS)."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / "stages").rglob("*"))
            if p.is_file() and p.name != "timing.json"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def assert_same_stage_files(a: Path, b: Path) -> dict[str, bytes]:
    """Two runs wrote the same stage files: tensors and masks byte for byte, JSON after dropping the per-run
    timing fields (VOLATILE). Returns run ``a``'s files."""
    f1, f2 = _files(a), _files(b)
    assert sorted(f1) == sorted(f2)
    for name, data in f1.items():
        if name.endswith(".json"):
            assert _strip(json.loads(data)) == _strip(json.loads(f2[name])), name
        else:
            assert data == f2[name], name
    return f1


@pytest.mark.slow
def test_merge_four_jobs_2_overlaps_and_equals_jobs_1(tmp_path):
    """Four trainings overlap under --jobs 2 and every artifact file equals --jobs 1's: tensors and masks
    byte for byte; JSON after dropping only the per-run timing fields (two --jobs 1 runs differ there too)."""
    from workbench.models.tiny import save_tiny_llama
    from workbench.stages.run import run

    tiny = save_tiny_llama(tmp_path / "tiny")
    sets = [*MERGE_FOUR_SETS, f"base.model={tiny}"]
    out = tmp_path / "run"  # both runs in the same directory name: paths written into results match
    run("pipelines/merge-four.yaml", out, sets, progress=False)
    one = out.rename(tmp_path / "jobs1")
    run("pipelines/merge-four.yaml", out, sets, progress=False, jobs=2)
    m1 = json.loads((one / "manifest.json").read_text())["stages"]
    m2 = json.loads((out / "manifest.json").read_text())["stages"]
    trains = [m2[n] for n in ("safety", "math", "code", "nlu")]
    overlaps = sum(a["started"] < b["finished"] and b["started"] < a["finished"]
                   for i, a in enumerate(trains) for b in trains[i + 1:])
    assert overlaps >= 2, [(t["started"], t["finished"]) for t in trains]
    assert_same_stage_files(one, out)
    tensors = 0
    for n, entry in m1.items():  # and the SHA-256 the manifests recorded, for every non-JSON artifact file
        for art, rec in entry["artifacts"].items():
            for f, digest in rec["sha256"].items():
                if not (f or rec["path"]).endswith(".json"):
                    assert digest == m2[n]["artifacts"][art]["sha256"][f], (n, art, f)
                    tensors += f.endswith(".safetensors")
    assert tensors >= 6  # four trained adapters and two merges at least


def test_cli_refuses_bad_jobs_and_passes_jobs_to_every_seed(capsys, monkeypatch):
    from workbench.cli import main
    from workbench.stages import seeds

    with pytest.raises(SystemExit):
        main(["run", "safety->math", "--jobs", "0"])
    assert "--jobs" in capsys.readouterr().err
    seen = {}

    def fake_stream_seeds(chain, out, overrides, seed_list, **options):
        seen.update(options, seeds=seed_list)
        return iter(())

    monkeypatch.setattr(seeds, "stream_seeds", fake_stream_seeds)
    assert main(["run", "safety->math", "--seeds", "0,1", "--jobs", "2", "--quiet"]) == 0
    assert seen["jobs"] == 2 and seen["seeds"] == [0, 1] and seen["executor"] == "local"
