"""Property 1 for directories: replacing a directory (adapter, merged model, run report, cache) shows a
reader the old or the new one, whole, at every instant, and a crash at any point leaves one of them.

One helper does it (``workbench.io.atomic.atomic_directory``); a scan checks that no other module renames
or replaces files itself.
"""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import workbench.io.atomic as atomic
from workbench.errors import WorkbenchError
from workbench.io.atomic import atomic_directory, clean_stale_temps

from .harness import ROOT, count, run_python, temps_under

OLD = {"a.txt": b"old a", "sub/b.txt": b"old b"}
NEW = {"a.txt": b"new a", "sub/c.txt": b"new c"}


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _read(root: Path) -> dict[str, bytes] | None:
    """What a reader finds at ``root`` right now (None: no directory)."""
    if not root.is_dir():
        return None
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _exchange_supported(tmp_path: Path) -> bool:
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.mkdir(), b.mkdir()
    try:
        return atomic._exchange(a, b)
    finally:
        shutil.rmtree(a), shutil.rmtree(b)


@pytest.fixture
def observed(monkeypatch):
    """Check ``watched[0]`` before and after every rename, exchange and removal the writer makes: a reader
    at any of those instants must see one of the allowed contents (``watched[1]``). Yields that list."""
    watched: list = []

    def check():
        if watched:
            assert _read(watched[0]) in watched[1], f"a reader saw {_read(watched[0])!r}"

    def wrap(owner, name):
        real = getattr(owner, name)

        def observer(*args, **kwargs):
            check()
            out = real(*args, **kwargs)
            check()
            return out

        monkeypatch.setattr(owner, name, observer)

    for owner, name in [(os, "rename"), (os, "replace"), (Path, "rename"), (Path, "replace"),
                        (shutil, "rmtree"), (atomic, "_exchange")]:
        wrap(owner, name)
    yield watched


def test_replacing_a_directory_never_shows_a_reader_a_missing_or_mixed_one(tmp_path, observed):
    if not _exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here (the two-rename fallback is used)")
    target = tmp_path / "out"
    target.mkdir()
    _write(target, OLD)
    observed[:] = [target, (OLD, NEW)]
    with atomic_directory(target, if_exists="replace") as tmp:
        _write(tmp, NEW)
    count("artifacts_verified")
    assert _read(target) == NEW and not temps_under(tmp_path)


def _fake_analyze_run(tmp_path: Path, monkeypatch, content: dict[str, bytes]):
    import workbench.stages.summary

    monkeypatch.setattr(workbench.stages.summary, "summary_markdown", lambda pipeline, results: "summary\n")
    src = tmp_path / f"analyze-{len(list(tmp_path.glob('analyze-*')))}"
    src.mkdir()
    _write(src, content)
    pipeline = SimpleNamespace(task=lambda name: SimpleNamespace(kind="analyze"), order=lambda: ["analyze"])
    return pipeline, {"analyze": SimpleNamespace(artifacts={"report": src}, metrics={})}


def test_publishing_a_report_never_shows_a_reader_a_missing_or_mixed_one(tmp_path, monkeypatch, observed):
    from workbench.stages.run import publish_report

    if not _exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    run_dir = tmp_path / "run"
    publish_report(run_dir, *_fake_analyze_run(tmp_path, monkeypatch, OLD))
    observed[:] = [run_dir / "report", (OLD, NEW)]
    publish_report(run_dir, *_fake_analyze_run(tmp_path, monkeypatch, NEW))
    assert _read(run_dir / "report") == NEW and not temps_under(run_dir)


class Crash(BaseException):
    """Stands for the process dying at a rename (BaseException: no ``except Exception`` swallows it)."""


def test_a_crash_while_publishing_a_report_keeps_the_old_report(tmp_path, monkeypatch):
    from workbench.stages.run import publish_report

    run_dir = tmp_path / "run"
    publish_report(run_dir, *_fake_analyze_run(tmp_path, monkeypatch, OLD))
    second = _fake_analyze_run(tmp_path, monkeypatch, NEW)

    def crash(*args, **kwargs):
        raise Crash

    for owner, name in [(os, "rename"), (os, "replace"), (Path, "rename"), (Path, "replace"), (atomic, "_exchange")]:
        monkeypatch.setattr(owner, name, crash)
    with pytest.raises(Crash):
        publish_report(run_dir, *second)
    count("faults_injected")
    assert _read(run_dir / "report") == OLD
    count("artifacts_verified")


# The killed writer imports only workbench.io.atomic (no torch): ~0.1 s per kill.
KILL = """
import os, signal, sys
from pathlib import Path
import workbench.io.atomic as atomic
where, target = sys.argv[1], Path(sys.argv[2])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_exchange, real_replace = atomic._exchange, os.replace
def exchange(a, b):
    if where == "before the exchange": die()
    if where.startswith("between"): return False  # a system without RENAME_EXCHANGE
    done = real_exchange(a, b)
    die()
def replace(a, b):
    real_replace(a, b)
    if where.startswith("between"): die()
atomic._exchange, os.replace = exchange, replace
with atomic.atomic_directory(target, if_exists="replace") as tmp:
    (tmp / "a.txt").write_bytes(b"new a")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "c.txt").write_bytes(b"new c")
"""


@pytest.mark.parametrize("where, right_after, finally_", [
    ("before the exchange", OLD, OLD),
    ("after the exchange", NEW, NEW),
    ("between the two renames of the fallback", None, OLD),
])
def test_a_kill_at_any_step_of_a_directory_swap_leaves_old_or_new(tmp_path, where, right_after, finally_):
    target = tmp_path / "adapter"
    target.mkdir()
    _write(target, OLD)
    res = run_python(["-c", KILL, where, str(target)])
    assert res.returncode == -9, res.stderr[-1500:]
    count("faults_injected")
    # Only the fallback (no RENAME_EXCHANGE) has an instant with no directory; the next start repairs it.
    assert _read(target) == right_after
    assert temps_under(tmp_path)
    clean_stale_temps(tmp_path)
    assert _read(target) == finally_ and not temps_under(tmp_path)
    count("artifacts_verified")


def test_if_exists_error_keep_and_a_failing_body(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        _write(tmp, OLD)
    assert _read(target) == OLD and (target.stat().st_mode & 0o777) == 0o777 & ~atomic._UMASK
    with pytest.raises(WorkbenchError, match=rf"^{target}: output already exists \(choose another --out"):
        with atomic_directory(target) as tmp:
            pytest.fail("the body must not run when the output exists")
    with atomic_directory(target, if_exists="keep") as tmp:
        _write(tmp, NEW)
    assert _read(target) == OLD
    with pytest.raises(ZeroDivisionError):
        with atomic_directory(target, if_exists="replace") as tmp:
            _write(tmp, NEW)
            1 / 0
    assert _read(target) == OLD and not temps_under(tmp_path)
    with pytest.raises(WorkbenchError, match="if_exists must be one of error, replace, keep"):
        with atomic_directory(target, if_exists="overwrite"):
            pass


# Renaming, replacing or moving files is done in io/atomic.py only. The two exceptions are not artifacts.
RENAMERS = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move"), ("os", "link"),
            ("tempfile", "mkdtemp"), ("tempfile", "mkstemp")}
NOT_ARTIFACTS = {
    ("workbench/evaluate/sandbox.py", "tempfile.mkdtemp"): "scratch directory for generated code, removed after",
    ("workbench/graph/lock.py", "tempfile.mkstemp"): "the lock file is created by a hard link, not a rename",
    ("workbench/graph/lock.py", "os.link"): "the same lock creation",
}


def _renames(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else None
            if (name, node.func.attr) in RENAMERS:
                found.append(f"{name}.{node.func.attr}")
            elif node.func.attr == "rename":  # Path.rename
                found.append(".rename")
    return found


def test_only_io_atomic_renames_files():
    offenders = []
    for path in sorted((ROOT / "workbench").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "workbench/io/atomic.py":
            continue
        offenders += [f"{rel}: {call}" for call in _renames(path) if (rel, call) not in NOT_ARTIFACTS]
    assert not offenders, "write through workbench.io.atomic instead: " + "; ".join(offenders)


def test_the_rename_scan_catches_what_it_must(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os, shutil, tempfile\nos.replace(a, b)\np.rename(q)\nshutil.move(a, b)\n"
                   "t = tempfile.mkdtemp()\ns = 'x'.replace('a', 'b')\n")
    assert _renames(bad) == ["os.replace", ".rename", "shutil.move", "tempfile.mkdtemp"]
