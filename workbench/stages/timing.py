"""Where a stage's time goes: load, train, evaluate, calibrate, merge, analyze, store (and its peak memory).

An executor decorated with :func:`timed_stage` counts its whole run under the kind's own phase (train,
evaluate, ...); code inside it that loads weights or writes artifacts marks that with :func:`phase`, and
the time of an inner phase is taken out of the enclosing one, so the parts add up to the executor's wall
time exactly. The breakdown and the stage's peak resident memory go to ``OUT/timing.json`` (beside the
artifacts, not among them: the cache key and artifact hashes ignore it). Whatever the manifest's stage time
holds after the executor returned (its ``finished`` minus the executor's end: the hand-back from a worker
process, and the commit where the engine times it) is counted as ``store`` by the run summary; writing
the adapter itself happens inside training and counts there.

Written here rather than taken from a profiler because the phases are the workbench's own notions (a
profiler reports functions), and a stack of perf_counter marks costs nothing when no stage is running.
"""

from __future__ import annotations

import functools
import json
import time
from contextlib import contextmanager
from pathlib import Path

from workbench.graph.memory import peak_rss_mb, reset_peak_rss, rss_mb

PHASES = ("load", "train", "evaluate", "calibrate", "merge", "analyze", "store")
TIMING_FILE = "timing.json"

# the open phases of the running stage, innermost last: [name, started, time of inner phases]
_stack: list[list] = []
_totals: dict[str, float] = {}


@contextmanager
def phase(name: str):
    """Count the enclosed time under ``name`` (one of :data:`PHASES`), minus any inner phase's time.

    Outside a timed stage (the API called directly) it only measures and discards.
    """
    if name not in PHASES:
        raise ValueError(f"unknown phase '{name}' (choose from {', '.join(PHASES)})")
    entry = [name, time.perf_counter(), 0.0]
    _stack.append(entry)
    try:
        yield
    finally:
        _stack.pop()
        spent = time.perf_counter() - entry[1]
        _totals[name] = _totals.get(name, 0.0) + spent - entry[2]
        if _stack:
            _stack[-1][2] += spent


def timed_stage(kind_phase: str):
    """Decorate a stage executor ``fn(task, inputs, out_dir, context)``: its time is counted under
    ``kind_phase`` (inner :func:`phase` blocks apart), its peak RSS measured from a reset high-water mark,
    and both written to ``out_dir/timing.json``. A training stage's ``peak_rss_mb`` metric is replaced by
    that peak (the loop samples RSS once per step and misses the load and the save)."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(task, inputs, out_dir, context):
            _totals.clear()
            start_rss = rss_mb()
            reset = reset_peak_rss()
            t0 = time.time()
            with phase(kind_phase):
                result = fn(task, inputs, out_dir, context)
            peak = peak_rss_mb() if reset else None
            if peak is not None and "peak_rss_mb" in result.metrics:
                result.metrics["peak_rss_mb"] = round(peak, 1)
            _write(Path(out_dir), {"started": t0, "ended": time.time(),
                                   "phases": {k: round(v, 3) for k, v in _totals.items()},
                                   "rss_start_mb": _round(start_rss), "peak_rss_mb": _round(peak)})
            return result
        return run
    return wrap


def _round(v):
    return None if v is None else round(v, 1)


def _write(out_dir: Path, data: dict) -> None:
    from workbench.io.atomic import atomic_write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / TIMING_FILE, data)


def read_timing(stage_dir: Path) -> dict | None:
    """A stage directory's ``timing.json``, or None (a run from before it existed, a plugin's kind)."""
    path = Path(stage_dir) / TIMING_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stage_breakdowns(run_dir: Path, names) -> list[dict]:
    """One row per stage directory among ``names`` (equal stages share one): ``{"stage", "kind", "seconds"
    (the manifest's), "phases" (store includes the commit after the executor), "peak_rss_mb",
    "rss_start_mb"}``, in the given order. A stage without ``timing.json`` counts wholly as ``other``."""
    from workbench.graph.store import MANIFEST

    try:
        stages = json.loads((Path(run_dir) / MANIFEST).read_text()).get("stages", {})
    except (OSError, ValueError):
        return []
    rows, seen = [], set()
    for name in names:
        entry = stages.get(name)
        if not entry or entry.get("status") != "done" or entry.get("dir") in seen:
            continue
        seen.add(entry.get("dir"))
        rows.append(_row(name, entry, read_timing(Path(run_dir) / entry.get("dir", ""))))
    return rows


def _row(name: str, entry: dict, timing: dict | None) -> dict:
    seconds = float(entry.get("seconds") or 0.0)
    if timing is None:
        return {"stage": name, "kind": entry.get("kind"), "seconds": seconds, "phases": {"other": seconds},
                "peak_rss_mb": None, "rss_start_mb": None}
    phases = dict(timing.get("phases", {}))
    # recorded after the executor returned: a worker's hand-back, the commit where the engine times it
    commit = max(0.0, float(entry.get("finished", 0.0)) - float(timing.get("ended", 0.0)))
    phases["store"] = phases.get("store", 0.0) + commit
    return {"stage": name, "kind": entry.get("kind"), "seconds": seconds, "phases": phases,
            "peak_rss_mb": timing.get("peak_rss_mb"), "rss_start_mb": timing.get("rss_start_mb")}


def breakdown_markdown(rows: list[dict]) -> str:
    """The summary's time tables: per phase kind (seconds, share of the stages' recorded time) and per
    stage (its phases and peak RSS). Empty when no stage has a recorded time."""
    total = sum(r["seconds"] for r in rows)
    if not rows or total <= 0:
        return ""
    sums: dict[str, float] = {}
    for r in rows:
        for k, v in r["phases"].items():
            sums[k] = sums.get(k, 0.0) + v
    order = [k for k in (*PHASES, "other") if k in sums]
    out = ["", "## Time by kind", "",
           f"Stage times recorded in the manifest: {total:.1f} s over {len(rows)} stages (a stage reused from an "
           "earlier run counts with the time it took then). Store: the recorded time after each executor returned.", "",
           "| kind | seconds | share |", "|---|---|---|"]
    out += [f"| {k} | {sums[k]:.1f} | {100 * sums[k] / total:.1f}% |" for k in order]
    out += [f"| total (parts) | {sum(sums.values()):.1f} | {100 * sum(sums.values()) / total:.1f}% |", "",
            "| stage | seconds | " + " | ".join(order) + " | peak RSS MB | RSS at start MB |",
            "|---|---|" + "---|" * len(order) + "---|---|"]
    for r in rows:
        cells = " | ".join(f"{r['phases'].get(k, 0.0):.1f}" for k in order)
        out.append(f"| {r['stage']} | {r['seconds']:.1f} | {cells} | {_mb(r['peak_rss_mb'])} | {_mb(r['rss_start_mb'])} |")
    return "\n".join(out) + "\n"


def _mb(v) -> str:
    return "-" if v is None else f"{v:,.0f}"
