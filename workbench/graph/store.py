"""The content-addressed run store: stage directories keyed by what went in, and the manifest.

Layout::

    RUN_DIR/.lock                       one writer at a time (lock.py)
    RUN_DIR/manifest.json               planned stages, and one entry per finished stage
    RUN_DIR/pipeline.resolved.yaml      the pipeline as run (defaults filled in)
    RUN_DIR/stages/<name>-<key[:12]>/   one stage's outputs

A stage's key hashes its kind, resolved parameters, its inputs' keys and the *content* of the data
files it names: touching a file reruns nothing, changing a byte reruns its consumers. A stage counts as
done only when its manifest entry, with the SHA-256 of every artifact file, is written last and the
hashes still verify; a directory without an entry is an interrupted stage and is never trusted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable

from workbench.errors import FileFormatError, WorkbenchError
from workbench.graph.task import StageResult, Task, canonical_json
from workbench.hashing import sha256_file, sha256_text
from workbench.io.atomic import atomic_write_json

MANIFEST = "manifest.json"
RESOLVED = "pipeline.resolved.yaml"
KEY_VERSION = 1
log = logging.getLogger("workbench.graph")


def hash_path(path: Path) -> dict[str, str]:
    """``{relative file: sha256}`` for a file (key ``""``) or every file under a directory."""
    if path.is_file():
        return {"": sha256_file(path)}
    return {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


class FileHasher:
    """Content hashes of input files, each computed once per plan."""

    def __init__(self):
        self.cache: dict[str, str] = {}

    def __call__(self, task: Task, path: str) -> str:
        if path not in self.cache:
            p = Path(path)
            if not p.exists():
                raise WorkbenchError(f"stage '{task.name}': input file {p} not found")
            self.cache[path] = sha256_text(canonical_json(hash_path(p)))
        return self.cache[path]


def compute_keys(groups: Iterable[list[Task]], hasher: FileHasher | None = None) -> dict[Task, str]:
    """The cache key of every task, given groups in topological order (inputs before consumers)."""
    hasher = hasher or FileHasher()
    keys: dict[Task, str] = {}
    for group in groups:
        task = group[0]
        body = {"v": KEY_VERSION, "kind": task.kind, "params": task.key_params,
                "inputs": {role: keys[dep] for role, dep in task.inputs},
                "files": [hasher(task, f) for f in task.files]}
        keys[task] = sha256_text(canonical_json(body))
    return keys


class RunStore:
    """Reads and writes one run directory's manifest and stage directories (hold the lock to write)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.root = Path(run_dir)
        self.manifest = self._read_manifest()

    @property
    def stages_dir(self) -> Path:
        return self.root / "stages"

    def _read_manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.exists():
            return {"version": 1, "stages": {}}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FileFormatError(f"{path}: not a readable manifest ({exc}); move it away to start over") from None
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            raise FileFormatError(f"{path}: not a workbench manifest (no 'stages' mapping)")
        return data

    def stage_dir(self, name: str, key: str) -> Path:
        return self.stages_dir / f"{name}-{key[:12]}"

    def lookup(self, name: str, key: str) -> StageResult | None:
        """The recorded result when ``name`` finished with this key and its artifacts verify, else None."""
        entry = self.manifest["stages"].get(name)
        if not entry or entry.get("key") != key or entry.get("status") != "done":
            return None
        artifacts = {}
        for art, rec in entry.get("artifacts", {}).items():
            path = self._abs(rec["path"])
            if not path.exists() or hash_path(path) != rec["sha256"]:
                log.warning("stage %s: artifact %s changed or is missing; it will be re-run", name, path)
                return None
            artifacts[art] = path
        return StageResult(artifacts, entry.get("metrics", {}))

    def _abs(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    def _rel(self, path: Path) -> str:
        path = Path(path).absolute()
        try:
            return path.relative_to(self.root.absolute()).as_posix()
        except ValueError:
            return str(path)

    def record(self, name: str, task: Task, key: str, result: StageResult, started: float,
               out_dir: Path | None = None, finished: float | None = None) -> dict:
        """Hash the artifacts and write the stage's manifest entry (the last step of a stage).

        ``out_dir`` defaults to this stage's own directory; an equal stage that shared another's
        work passes that one. ``finished`` is when the stage's work ended (default: now); with
        ``--jobs N`` a worker reports it, so overlapping stages show overlapping times.
        """
        if not isinstance(result, StageResult):
            raise WorkbenchError(f"stage '{name}': the {task.kind} executor returned {type(result).__name__}, "
                                 "not a StageResult")
        artifacts = {}
        for art, path in result.artifacts.items():
            path = Path(path)
            if not path.exists():
                raise WorkbenchError(f"stage '{name}': artifact '{art}' ({path}) was not written")
            artifacts[art] = {"path": self._rel(path), "sha256": hash_path(path)}
        finished = time.time() if finished is None else finished
        entry = {"kind": task.kind, "key": key, "status": "done", "dir": self._rel(out_dir or self.stage_dir(name, key)),
                 "started": started, "finished": finished, "seconds": round(finished - started, 3),
                 "artifacts": artifacts, "metrics": result.metrics}
        self.manifest["stages"][name] = entry
        self._clear_failure(name)  # only this stage's: another stage that failed meanwhile stays failed
        self.write()
        return entry

    def _clear_failure(self, name: str) -> None:
        failures = self.manifest.pop("failures", None) or {}
        failures.pop(name, None)
        self.manifest.pop("failed", None)
        if failures:
            first = next(iter(failures))
            self.manifest["failures"] = failures
            self.manifest["failed"] = {"stage": first, **failures[first]}

    def record_failure(self, name: str, error: BaseException) -> None:
        """Note the failing stage for ``workbench status`` (no stage entry: it is not done).

        ``failures`` keeps every stage that failed in this run (several can, with ``--jobs N``);
        ``failed`` is the first of them (what older readers look at).
        """
        note = {"error": f"{type(error).__name__}: {error}"[:500], "time": time.time()}
        failures = self.manifest.setdefault("failures", {})
        failures[name] = note
        self.manifest.setdefault("failed", {"stage": name, **note})
        self.write()

    def set_plan(self, pipeline_name: str | None, planned: list[dict]) -> None:
        """Record what this run will do; failures of an earlier run are forgotten (their stages rerun)."""
        self.manifest.pop("failed", None)
        self.manifest.pop("failures", None)
        self.manifest["pipeline"] = pipeline_name
        self.manifest["planned"] = planned
        self.write()

    def write(self) -> None:
        atomic_write_json(self.root / MANIFEST, self.manifest)

    def orphan_dirs(self) -> list[Path]:
        """Stage directories no manifest entry vouches for (interrupted or superseded stages)."""
        if not self.stages_dir.is_dir():
            return []
        owned = {self._abs(e["dir"]).name for e in self.manifest["stages"].values() if "dir" in e}
        return sorted(p for p in self.stages_dir.iterdir() if p.is_dir() and p.name not in owned)
