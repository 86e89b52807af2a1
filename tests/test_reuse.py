"""The base-model evaluation shared across run directories (workbench/stages/reuse.py): adopted by key
from another run, never a trained stage, not when the donor changed or other code computed it, and with
``WORKBENCH_REUSE_BASE_EVAL=0`` recomputed to the same bytes. Each test has its own index file."""

import json
from pathlib import Path

import pytest

from workbench.graph.engine import run_all
from workbench.graph.task import StageResult, Task
from workbench.stages import reuse

FAST = ["defaults.steps=2", "defaults.eval_limit=4", "defaults.max_new_tokens=2", "defaults.max_samples=8"]


@pytest.fixture()
def index(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "base-evals.json"
    monkeypatch.setenv(reuse.INDEX_ENV, str(path))
    monkeypatch.setenv(reuse.SWITCH, "1")
    return path


def _counting():
    calls = []

    def execute(task, inputs, out_dir, context):
        calls.append(task.name)
        (out_dir / "results.json").write_text(task.params_json)
        return StageResult({"results": out_dir / "results.json"})

    return calls, {"evaluate": execute, "train": execute}


def _tasks():
    base = Task.make("base_eval", "evaluate", {"tasks": ["safety"], "limit": 4})
    train = Task.make("safety", "train", {"steps": 2})
    return [base, train, Task.make("safety_eval", "evaluate", {"tasks": ["safety"]}, [("adapter", train)])]


def _run(tasks, run_dir, executors):
    """What workbench.stages.run.stream does around the engine."""
    adopted, executing = reuse.adopt_base_evals(tasks, run_dir)
    for name, _ in run_all(tasks, run_dir, executors=executors).items():
        if name in executing:
            reuse.remember(run_dir, name)
    return adopted


def test_only_the_base_evaluation_is_adopted_from_another_run(tmp_path, index):
    calls, executors = _counting()
    assert _run(_tasks(), tmp_path / "a", executors) == []
    assert _run(_tasks(), tmp_path / "b", executors) == ["base_eval"]
    # the base evaluation ran once; the identical training and its evaluation ran again in b
    assert calls == ["base_eval", "safety", "safety_eval", "safety", "safety_eval"]
    entry = json.loads((tmp_path / "b" / "manifest.json").read_text())["stages"]["base_eval"]
    assert Path(entry["dir"]).parent.parent == (tmp_path / "a").resolve()
    assert not list((tmp_path / "b" / "stages").glob("base_eval-*"))
    a_entry = json.loads((tmp_path / "a" / "manifest.json").read_text())["stages"]["base_eval"]
    assert entry["seconds"] == a_entry["seconds"]  # the time it took in a, not the wait since
    assert list(json.loads(index.read_text())) == [a_entry["key"]]


def test_switch_off_recomputes_and_records_nothing(tmp_path, index, monkeypatch):
    calls, executors = _counting()
    _run(_tasks(), tmp_path / "a", executors)
    monkeypatch.setenv(reuse.SWITCH, "0")
    index.unlink()
    assert _run(_tasks(), tmp_path / "b", executors) == []
    assert calls.count("base_eval") == 2 and not index.exists()


def test_changed_donor_or_other_code_is_not_adopted(tmp_path, index):
    calls, executors = _counting()
    _run(_tasks(), tmp_path / "a", executors)
    key = next(iter(json.loads(index.read_text())))
    reuse.update_index({key: {**json.loads(index.read_text())[key], "code": "other"}})
    assert _run(_tasks(), tmp_path / "b", executors) == []  # other code: recomputed (and b now in the index)
    assert json.loads(index.read_text())[key]["run"] == str((tmp_path / "b").resolve())
    (next((tmp_path / "b" / "stages").glob("base_eval-*")) / "results.json").write_text("tampered")
    assert _run(_tasks(), tmp_path / "c", executors) == []  # hash mismatch: stale, dropped, recomputed
    assert calls.count("base_eval") == 3
    assert json.loads(index.read_text())[key]["run"] == str((tmp_path / "c").resolve())


def test_index_update_keeps_what_another_writer_added(index):
    reuse.update_index({"k1": {"run": "/a"}})
    reuse.update_index({"k2": {"run": "/b"}})  # re-read before writing: k1 stays
    reuse.update_index(drop={"k1"})
    assert json.loads(index.read_text()) == {"k2": {"run": "/b"}}
    index.write_text("{not json")  # a broken index is an empty cache, not an error
    assert reuse.read_index() == {}
    assert not list(index.parent.glob(".*tmp*"))


@pytest.mark.slow  # three tiny-model chains (~60-90 s on the shared 2-core machine)
def test_tiny_chain_adopts_the_base_evaluation_and_recomputes_it_identically(tmp_path, index, monkeypatch):
    import workbench.evaluate.api as api
    from workbench.cli import main
    from workbench.models.tiny import save_tiny_llama

    tiny = save_tiny_llama(tmp_path / "model")
    calls = []
    real = api.evaluate_task
    monkeypatch.setattr(api, "evaluate_task", lambda *a, **k: calls.append(1) or real(*a, **k))

    def run(name):
        calls.clear()
        assert main(["run", "safety->math", "--out", str(tmp_path / name), "--quiet", "--set", *FAST,
                     f"base.model={tiny}"]) == 0
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())["stages"]
        return len(calls), manifest

    n_a, a = run("a")
    n_b, b = run("b")  # the same chain in a new directory: trains again, evaluates the base model no more
    assert Path(b["base_eval"]["dir"]).parent.parent == (tmp_path / "a").resolve()
    assert not list((tmp_path / "b" / "stages").glob("base_eval-*"))
    base_tasks = json.loads((tmp_path / "a" / a["base_eval"]["artifacts"]["results"]["path"]).read_text())["tasks"]
    assert n_b == n_a - len(base_tasks) and len(base_tasks) == 2  # no task of the base evaluation ran in b
    trained = [n for n, e in b.items() if e["kind"] == "train"]
    assert trained and all(not Path(b[n]["dir"]).is_absolute() for n in trained)  # inside b: trained there
    monkeypatch.setenv(reuse.SWITCH, "0")
    n_c, c = run("c")
    assert n_c == n_a and (tmp_path / "c" / c["base_eval"]["dir"]).parent.parent == tmp_path / "c"
    results = {r: (tmp_path / r / m["base_eval"]["artifacts"]["results"]["path"]).read_bytes()
               for r, m in (("a", a), ("b", b), ("c", c))}
    assert results["a"] == results["b"] == results["c"]
    assert b["base_eval"]["key"] == c["base_eval"]["key"] == a["base_eval"]["key"]
