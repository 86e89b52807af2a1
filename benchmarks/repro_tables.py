"""Tables for docs/reproduction.md, read from finished run directories (every number measured by a run).

    .venv/bin/python benchmarks/repro_tables.py --continual runs/repro-safety-math runs/repro-safety-code \\
        --merge runs/repro-merge
    .venv/bin/python benchmarks/repro_tables.py --seeds runs/repro-safety-math runs/repro-safety-math-s1 ...
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from pathlib import Path

METHODS = ("lora", "lori_d", "lori_s")


def _f(v, digits=3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _stage_metrics(run: Path, name: str) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    return manifest["stages"][name]["metrics"]


def continual_table(run: Path) -> str:
    """Per method: after stage 1 and after stage 2, the first task's refusal rate and NLL, the second
    task's metric and NLL, and the first task's NLL forgetting."""
    rows = ["| method | safety refusal after 1 / 2 | safety NLL after 1 / 2 | 2nd task | 2nd metric after 2 | 2nd NLL base / after 2 |",
            "|---|---|---|---|---|---|"]
    for m in METHODS:
        path = run / "report" / f"forgetting-{m}.json"
        if not path.is_file():
            continue
        f = json.loads(path.read_text())
        t1, t2 = f["tasks"][0], f["tasks"][1]
        mat, nll = f["matrix"], f["nll"]
        rows.append(f"| {m} | {_f(mat[1][0])} / {_f(mat[2][0])} | {_f(nll[1][0])} / {_f(nll[2][0])} | {t2} | "
                    f"{_f(mat[2][1])} ({f['metric'][t2]}) | {_f(nll[0][1])} / {_f(nll[2][1])} |")
    return "\n".join(rows)


def _mean_sd(values: list[float], sign: str = "+") -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{sign}.3f} ± {sd:.3f}"


def seeds_table(runs: list[Path]) -> str:
    """The same chain run with several seeds: per method, mean ± sample standard deviation over the runs
    of the first task's NLL forgetting (after stage 2 minus after stage 1), its refusal rate after stage 2,
    the second task's NLL gain (base minus after stage 2), and forgetting divided by that gain (the cost
    of what was learned). Per-seed forgetting values follow."""
    rows = [f"| method | safety NLL forgetting (mean ± sd, n={len(runs)}) | per seed | "
            "safety refusal after 2 | 2nd task NLL gain | forgetting per nat gained |", "|---|---|---|---|---|---|"]
    for m in METHODS:
        forget, refusal, gain = [], [], []
        for run in runs:
            path = run / "report" / f"forgetting-{m}.json"
            if not path.is_file():
                continue
            f = json.loads(path.read_text())
            nll, mat = f["nll"], f["matrix"]
            forget.append(nll[2][0] - nll[1][0])
            refusal.append(mat[2][0])
            gain.append(nll[0][1] - nll[2][1])
        if forget:
            per_seed = ", ".join(f"{x:+.3f}" for x in forget)
            # a method that learns the second task less can forget less for that reason alone
            ratio = [f / g for f, g in zip(forget, gain) if g > 0]
            rows.append(f"| {m} | {_mean_sd(forget)} | {per_seed} | {_mean_sd(refusal, sign='')} | {_mean_sd(gain)} | "
                        f"{_mean_sd(ratio)} |")
    return "\n".join(rows)


def merge_table(run: Path) -> str:
    """Per method and strategy: each task's NLL and primary metric, merged vs its single-task adapter."""
    tasks = ("safety", "math", "code", "nlu")
    head = "| method | merge | " + " | ".join(f"{t} ΔNLL (metric single→merged)" for t in tasks) + " | mean ΔNLL |"
    rows = [head, "|" + "---|" * (3 + len(tasks))]
    for m in METHODS:
        singles = {t: _stage_metrics(run, f"{m}-{t}-eval").get(t, {}) for t in tasks}
        for strat in ("concat", "linear"):
            merged = _stage_metrics(run, f"{m}-{strat}-eval")
            cells, deltas = [], []
            for t in tasks:
                s, g = singles[t], merged.get(t, {})
                d = None if s.get("nll") is None or g.get("nll") is None else g["nll"] - s["nll"]
                deltas.append(d)
                cells.append(f"{_f(d)} ({_f(s.get('value'), 2)}→{_f(g.get('value'), 2)})")
            mean = sum(x for x in deltas if x is not None) / max(1, sum(x is not None for x in deltas))
            rows.append(f"| {m} | {strat} | " + " | ".join(cells) + f" | {_f(mean)} |")
    return "\n".join(rows)


def overlap_table(run: Path) -> str:
    """A- and B-subspace overlap between separately trained adapters (mean over pairs and modules)."""
    rows = ["| method | A mean sq cos | random baseline | B mean sq cos | delta cosine |", "|---|---|---|---|---|"]
    for m in METHODS:
        hits = glob.glob(str(run / "stages" / f"{m}-analyze-*" / "report.json"))
        if not hits:
            continue
        pairs = json.loads(Path(hits[0]).read_text())["pairs"]
        mean = lambda k: sum(p["summary"]["means"][k] for p in pairs) / len(pairs)  # noqa: E731
        rows.append(f"| {m} | {_f(mean('a_mean_sq_cos'), 4)} | {_f(mean('a_random_baseline'), 4)} | "
                    f"{_f(mean('b_mean_sq_cos'), 4)} | {_f(mean('delta_cosine'), 4)} |")
    return "\n".join(rows)


def methods_table(run: Path) -> str:
    """pipelines/methods-compare.yaml: per method, trainable parameters, tokens/s, peak RSS, held-out NLL
    and refusal rate on the safety task after training."""
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    base = None
    rows = ["| method | trainable params | tokens/s | peak RSS (MB) | safety held-out NLL | refusal rate |",
            "|---|---|---|---|---|---|"]
    for name, st in stages.items():
        if st["kind"] != "train":
            continue
        ev = stages.get(f"{name}_eval", {}).get("metrics", {}).get("safety", {})
        m = st["metrics"]
        rows.append(f"| {name} | {m.get('trainable_params'):,} | {_f(m.get('tokens_per_s'), 1)} | "
                    f"{_f(m.get('peak_rss_mb'), 0)} | {_f(ev.get('nll'))} | {_f(ev.get('value'))} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--continual", nargs="*", default=[])
    p.add_argument("--seeds", nargs="*", default=[], help="run dirs of one chain with different seeds")
    p.add_argument("--merge", default=None)
    p.add_argument("--methods", default=None)
    a = p.parse_args()
    for run in a.continual:
        print(f"\n### Continual: {run}\n\n{continual_table(Path(run))}")
    if a.seeds:
        print(f"\n### Seeds: {', '.join(a.seeds)}\n\n{seeds_table([Path(r) for r in a.seeds])}")
    if a.methods:
        print(f"\n### Methods: {a.methods}\n\n{methods_table(Path(a.methods))}")
    if a.merge:
        print(f"\n### Merging: {a.merge}\n\n{merge_table(Path(a.merge))}")
        print(f"\n### Subspace overlap between separately trained adapters: {a.merge}\n\n{overlap_table(Path(a.merge))}")


if __name__ == "__main__":
    main()
