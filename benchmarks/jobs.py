"""Parallel stages: one ``workbench run`` chain comparison with ``--jobs 1`` and with ``--jobs 2``, wall
time of each and their ratio, and a check that both runs' artifacts are the same bytes (the SHA-256 of
every non-JSON artifact file in the two manifests; tensor files are written in a canonical form,
``workbench.io.tensors.canonical_metadata``, so a worker process writes the engine's bytes).

Default: ``'safety->math' --compare lora --compare lori_d`` on the embedded model with the quick preset,
shortened by ``--set defaults.steps=4 defaults.eval_limit=4`` so that both runs fit in minutes on a
2-core machine. The machine's load (``uptime``) is printed before and after: on a shared machine the
ratio says as much about the neighbours as about ``--jobs``.

    .venv/bin/python benchmarks/jobs.py [--jobs 2] [--set KEY=VALUE ...] [--chain 'safety->math']

Prints ``RESULT jobs ratio=<jobs-1 wall / jobs-N wall> ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    """The 1/5/15-minute load averages (what ``uptime`` prints)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_once(chain: str, compare: list[str], sets: list[str], jobs: int, out: Path) -> float:
    """One ``workbench run`` in a fresh process; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "workbench.cli", "run", chain, "--out", str(out), "--jobs", str(jobs), "--quiet"]
    for m in compare:
        cmd += ["--compare", m]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          # no base evaluation reused from the other run (workbench/stages/reuse.py): each run
                          # computes every stage, or the second would skip one
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                               "WORKBENCH_REUSE_BASE_EVAL": "0"})
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"--jobs {jobs} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def tensor_hashes(run: Path) -> dict:
    """``(stage, artifact, file) -> sha256`` of every non-JSON artifact file the manifest recorded."""
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    return {(n, a, f): h for n, e in stages.items() for a, rec in e["artifacts"].items()
            for f, h in rec["sha256"].items() if not (f or rec["path"]).endswith(".json")}


def overlap_s(run: Path) -> float:
    """Seconds during which at least two stages ran at once (from the manifest's start/end times)."""
    stages = json.loads((run / "manifest.json").read_text())["stages"].values()
    # equal stages under two names share one directory and one piece of work: count it once
    spans = sorted({e["dir"]: (e["started"], e["finished"]) for e in stages}.values())
    events = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])
    total, depth, last = 0.0, 0, None
    for t, d in events:
        if depth >= 2 and last is not None:
            total += t - last
        depth, last = depth + d, t
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chain", default="safety->math")
    p.add_argument("--compare", action="append", default=None)
    p.add_argument("--set", dest="sets", action="append", default=None)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    compare = args.compare or ["lora", "lori_d"]
    sets = args.sets or ["defaults.steps=4", "defaults.eval_limit=4"]
    print(f"load before (1/5/15 min): {load()}; cores: {os.cpu_count()}")
    walls, hashes, overlaps = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, args.jobs):
            out = Path(tmp) / f"jobs{jobs}"
            walls[jobs] = run_once(args.chain, compare, sets, jobs, out)
            hashes[jobs], overlaps[jobs] = tensor_hashes(out), overlap_s(out)
            print(f"--jobs {jobs}: {walls[jobs]:.1f}s wall, {overlaps[jobs]:.1f}s with two or more stages at once "
                  f"(load now {load()})", flush=True)
        differing = [k for k in hashes[1] if hashes[1][k] != hashes[args.jobs].get(k)]
        same = sorted(hashes[1]) == sorted(hashes[args.jobs]) and not differing
    ratio = walls[1] / walls[args.jobs]
    print(f"load after (1/5/15 min): {load()}")
    print(f"RESULT jobs ratio={ratio:.2f} jobs1={walls[1]:.1f}s jobs{args.jobs}={walls[args.jobs]:.1f}s "
          f"bytes_equal={same} bytes_differ={len(differing)}/{len(hashes[1])} chain={args.chain!r} compare={','.join(compare)} "
          f"set={','.join(sets)}")


if __name__ == "__main__":
    main()
