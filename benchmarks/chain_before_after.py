"""The quick chain before and after the cost cuts of docs/performance.md, measured one run after another:
wall time, the per-kind breakdown each run's ``summary.md`` ends with, and whether the forgetting
matrices (``report/forgetting.md``, ``report/forgetting-nll.md``) are identical to their printed precision.

``before`` turns the cuts off (``WORKBENCH_REUSE_BASE_EVAL=0``: the base evaluation computed by every
run; ``WORKBENCH_BASE_CACHE_MB=0``: the base model loaded by every stage, now also the default, since the
cache was measured not to pay). ``after`` is a first run with the defaults (a private, empty
base-evaluation index, so it computes its base evaluation and records it); ``rerun`` is the same chain in
a new directory with the same index (its base evaluation is adopted).

    .venv/bin/python benchmarks/chain_before_after.py --run runs/before-after   # three runs, ~20 min here
    .venv/bin/python benchmarks/chain_before_after.py --compare BEFORE AFTER [RERUN]  # existing run dirs

Prints Markdown (``--out FILE`` writes it too) and one ``RESULT chain_before_after ...`` line.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAIN = "safety->math->code"
OFF = {"WORKBENCH_BASE_CACHE_MB": "0", "WORKBENCH_REUSE_BASE_EVAL": "0"}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_chain(out: Path, env: dict, preset: str) -> tuple[float, float]:
    """One ``workbench run`` of the chain in a fresh process: its wall time and its CPU time (user +
    system, from the children's resource usage), in seconds. The CPU time of the same work varies between
    runs on a shared virtual machine too; it says how much of a wall-time difference is the machine."""
    cmd = [sys.executable, "-m", "workbench.cli", "run", CHAIN, "--preset", preset, "--out", str(out), "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", **env})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{out.name} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def time_section(run: Path) -> str:
    """The "Time by kind" section of a run's summary.md (both its tables)."""
    text = (run / "summary.md").read_text()
    start = text.index("## Time by kind")
    end = text.find("\n## ", start + 3)
    return text[start + len("## Time by kind"):end if end > 0 else None].strip()


def total_parts(run: Path) -> float:
    m = re.search(r"\| total \(parts\) \| ([\d.,]+) \|", time_section(run))
    return float(m.group(1).replace(",", "")) if m else float("nan")


def matrix_numbers(path: Path) -> list[str]:
    """Every number of a forgetting matrix file as printed (the table and the ACC/BWT line)."""
    return re.findall(r"-?\d+\.\d+", path.read_text())


def compare(runs: dict[str, Path], measured: dict[str, tuple[float, float]] | None = None) -> tuple[str, bool]:
    """Markdown of the runs side by side; and whether every forgetting matrix is the same in all."""
    lines = ["| run | wall s | CPU s (user + sys) | stage time s (parts) |", "|---|---|---|---|"]
    for name, run in runs.items():
        wall, cpu = (f"{x:.1f}" for x in measured[name]) if measured and name in measured else ("-", "-")
        lines.append(f"| {name} | {wall} | {cpu} | {total_parts(run):.1f} |")
    same_all = True
    for fname in ("forgetting.md", "forgetting-nll.md"):
        ref = matrix_numbers(next(iter(runs.values())) / "report" / fname)
        same = all(matrix_numbers(r / "report" / fname) == ref for r in runs.values())
        same_all &= same
        lines += ["", f"#### {fname}: numbers identical in {', '.join(runs)}: {same}", "",
                  (next(iter(runs.values())) / "report" / fname).read_text().strip()]
    for name, run in runs.items():
        lines += ["", f"#### {name}: time by kind ({run})", "", time_section(run)]
    return "\n".join(lines), same_all


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", type=Path, metavar="ROOT", help="run before, after and rerun under ROOT")
    g.add_argument("--compare", nargs="+", type=Path, metavar="RUN", help="existing run directories, before first")
    p.add_argument("--names", nargs="+", default=["before", "after", "rerun"], help="names of the --compare runs")
    p.add_argument("--preset", default="quick")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    walls = {}
    if args.run:
        root = args.run.resolve()
        index = {"WORKBENCH_BASE_EVAL_INDEX": str(root / "base-evals.json")}
        plan = {"before": OFF, "after": index, "rerun": index}
        runs = {name: root / name for name in plan}
        for name, env in plan.items():
            print(f"{name}: start, load {load()}", flush=True)
            walls[name] = run_chain(runs[name], env, args.preset)
            print(f"{name}: {walls[name][0]:.1f}s wall, {walls[name][1]:.1f}s CPU, load {load()}", flush=True)
    else:
        names = [*args.names, *(f"run{i}" for i in range(len(args.names), len(args.compare)))]
        runs = dict(zip(names, args.compare))
    text, same = compare(runs, walls)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    ratios = " ".join(f"{n}={walls[n][0]:.1f}s" for n in walls)
    print(f"RESULT chain_before_after identical_matrices={same} {ratios}".rstrip())


if __name__ == "__main__":
    main()
