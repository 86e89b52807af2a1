"""The base-model evaluation shared across run directories, found by its cache key.

An ``evaluate`` stage with ``adapter: null`` scores the base model alone: its result depends only on its
resolved parameters (base model, tasks, limit, decoding), which its cache key hashes, never on anything a
run trained. Every chain on one base and one evaluation budget starts with the same one (~40 s on the
quick preset), so a user-level index remembers where each such stage was computed::

    $WORKBENCH_CACHE/base-evals.json    {stage key: {"run": run dir, "dir": stage dir, "code": fingerprint}}

Before a run, a base evaluation the run store misses but the index knows is *adopted* as seeds adopt
(``workbench.stages.seeds``): its manifest entry is recorded in this run pointing at the donor's stage
directory, with the artifact hashes read from the donor's manifest, which the engine checks like any cache
hit. After a base evaluation executes, its directory is added to the index. Trained stages are never
shared this way: a second identical run in a new directory still trains.

Two guards keep a reused number the number a fresh run would compute:

* ``code``: the stage key hashes what the stage was asked, not the code that answered; the index entry also
  holds a fingerprint of the workbench package files and the torch/transformers/peft versions, and an
  entry written by other code is not adopted (a new run directory after a metric fix recomputes).
* a stale entry (donor gone, manifest without that key, an artifact changed) is ignored and dropped.

The index is written whole to a temporary file and renamed over the old one, after re-reading and merging
what another process may have written meanwhile; two writers racing lose at most an entry (a cache miss),
never the file.

Switches (environment):
    ``WORKBENCH_REUSE_BASE_EVAL=0``: neither adopt nor record (every run evaluates the base itself).
    ``WORKBENCH_BASE_EVAL_INDEX=PATH``: the index file (default ``$WORKBENCH_CACHE/base-evals.json``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("workbench.stages")
SWITCH = "WORKBENCH_REUSE_BASE_EVAL"
INDEX_ENV = "WORKBENCH_BASE_EVAL_INDEX"
INDEX_NAME = "base-evals.json"
# libraries whose version can move a generated token or a logit
LIBRARIES = ("torch", "transformers", "peft")


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip() != "0"


def index_path() -> Path:
    """The index file: ``$WORKBENCH_BASE_EVAL_INDEX``, else ``base-evals.json`` in the workbench cache."""
    from workbench.models.base import cache_dir

    return Path(os.environ.get(INDEX_ENV) or cache_dir() / INDEX_NAME)


def is_base_eval(task) -> bool:
    """An evaluate stage on the base model alone: ``adapter: null`` leaves it without inputs."""
    return task.kind == "evaluate" and not task.inputs


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 over the workbench package's files (not their byte-code caches) and :data:`LIBRARIES`' versions.

    The whole package rather than the evaluation modules: what a base evaluation runs reaches the data
    layer, the prompt formats and the model loader, and a broader hash only costs a recomputation.
    """
    from workbench.hashing import sha256_file, sha256_text

    root = Path(__file__).resolve().parents[1]  # the workbench package (importing it would climb the layers)
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    lines = [f"{p.relative_to(root).as_posix()}:{sha256_file(p)}" for p in files]
    lines += [f"{lib}=={_version(lib)}" for lib in LIBRARIES]
    return sha256_text("\n".join(lines))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def read_index(path: Path | None = None) -> dict:
    """The index as a dict; a missing or unreadable file is an empty index (it is only a cache)."""
    path = path or index_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the base-evaluation index %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def update_index(add: dict | None = None, drop=(), path: Path | None = None) -> None:
    """Merge ``add`` into the index and remove the keys in ``drop``, re-reading it first so that entries
    another process wrote meanwhile survive; written to a temporary file and renamed (atomic)."""
    from workbench.io.atomic import atomic_write_json

    path = path or index_path()
    index = read_index(path)
    for key in drop:
        index.pop(key, None)
    index.update(add or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, index)


def adopt_base_evals(pipeline, run_dir: Path) -> tuple[list[str], set[str]]:
    """Adopt every base evaluation of ``pipeline`` this run misses and the index knows (switch on).

    Args:
        pipeline: the loaded pipeline of this run.
        run_dir: this run's directory (created when something is adopted).

    Returns:
        ``(adopted stage names, names of the base evaluations that will execute in this run)``; the
        second set is what :func:`remember` records after the run commits them.

    Raises:
        RunLockedError: another process is writing to ``run_dir``.
    """
    if not enabled():
        return [], set()
    from workbench.graph.engine import plan

    misses = [row for row in plan(pipeline, run_dir) if row.status == "miss" and is_base_eval(row.task)]
    if not misses:
        return [], set()
    index = read_index()
    adopted, stale = _adopt(run_dir, [row for row in misses if row.key in index], index)
    if stale:
        try:
            update_index(drop=stale)
        except OSError as exc:  # a read-only cache: the stale entries are ignored again next time
            log.warning("could not drop stale entries from the base-evaluation index: %s", exc)
    return adopted, {row.task.name for row in misses if row.task.name not in adopted}


def _adopt(run_dir: Path, rows, index: dict) -> tuple[list[str], set[str]]:
    """Record the rows whose index entry still verifies; returns (adopted names, stale keys)."""
    from workbench.graph.lock import RunLock
    from workbench.graph.store import RunStore
    from workbench.stages.seeds import _find_by_key

    adopted, stale = [], set()
    if not rows:
        return adopted, stale
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        dest = RunStore(run_dir)
        for row in rows:
            entry = index[row.key]
            if entry.get("code") != code_fingerprint():
                log.info("%s: not reusing %s (computed by other workbench code or libraries)", row.task.name,
                         entry.get("dir"))
                continue
            donor = Path(entry.get("run", ""))
            found = _find_by_key([RunStore(donor)], row.key) if (donor / "manifest.json").is_file() else None
            if found is None:
                stale.add(row.key)
                continue
            store, donor_entry, result = found
            # the donor's own times, so the run summary shows what the work took then, not hours of waiting
            dest.record(row.task.name, row.task, row.key, result, donor_entry["started"],
                        store._abs(donor_entry["dir"]), finished=donor_entry.get("finished"))
            log.info("%s: reused from %s (same key)", row.task.name, store._abs(donor_entry["dir"]))
            adopted.append(row.task.name)
    return adopted, stale


def remember(run_dir: Path, name: str) -> None:
    """Add a base evaluation this run just executed and committed to the index (switch on)."""
    if not enabled():
        return
    from workbench.graph.store import RunStore

    store = RunStore(run_dir)
    entry = store.manifest["stages"].get(name)
    if not entry or entry.get("status") != "done":
        return
    record = {"run": str(Path(run_dir).resolve()), "dir": str(store._abs(entry["dir"]).resolve()),
              "code": code_fingerprint()}
    try:
        update_index({entry["key"]: record})
    except OSError as exc:  # a read-only cache must not fail a finished run
        log.warning("could not record %s in the base-evaluation index: %s", name, exc)
