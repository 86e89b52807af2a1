"""``workbench status RUN_DIR``: what each planned stage of a run directory has come to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.graph.store import MANIFEST, RunStore


@dataclass(frozen=True)
class StageStatus:
    """One row: ``status`` is done, failed, unfinished (a directory without an entry) or pending."""

    name: str
    kind: str
    status: str
    seconds: float | None
    key: str


def run_status(run_dir: str | os.PathLike) -> list[StageStatus]:
    """Rows for the stages of the last planned run, in execution order.

    Raises:
        WorkbenchError: ``run_dir`` has no manifest (not a run directory, or never started).
    """
    root = Path(run_dir)
    if not (root / MANIFEST).is_file():
        raise WorkbenchError(f"{root}: no {MANIFEST} here; is this a run directory?")
    store = RunStore(root)
    # every stage that failed in the last run (several with --jobs N); "failed" alone in older manifests
    failed = set(store.manifest.get("failures") or {}) | {(store.manifest.get("failed") or {}).get("stage")} - {None}
    rows = []
    for item in store.manifest.get("planned", []):
        name, key = item["name"], item["key"]
        entry = store.manifest["stages"].get(name) or {}
        if entry.get("key") == key and entry.get("status") == "done":
            status, seconds = "done", entry.get("seconds")
        else:
            status = "failed" if name in failed else "unfinished" if store.stage_dir(name, key).is_dir() else "pending"
            seconds = None
        rows.append(StageStatus(name, item.get("kind", "?"), status, seconds, key[:12]))
    return rows


def format_status(rows: list[StageStatus]) -> str:
    """A plain-text table of :func:`run_status` rows."""
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"{'stage':<{width}}  {'kind':<9}  {'status':<10}  {'seconds':>8}  key"]
    for r in rows:
        secs = f"{r.seconds:8.1f}" if r.seconds is not None else f"{'-':>8}"
        lines.append(f"{r.name:<{width}}  {r.kind:<9}  {r.status:<10}  {secs}  {r.key}")
    done = sum(r.status == "done" for r in rows)
    lines.append(f"{done}/{len(rows)} stages done")
    return "\n".join(lines)
