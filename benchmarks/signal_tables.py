"""The tables of docs/reproduction.md's `signal` section, printed from the run directories.

    python benchmarks/signal_tables.py runs/signal

reads ``OUT/seed-<s>/`` (our chains: ``lori_s``, ``lora``, ``lori_d``), ``OUT/official/seed-<s>/`` (LoRI-S
under the official protocol) and the aggregated ``OUT/report/report.json`` (written by
``workbench run ... --seeds ... --compare official:lori_s``), and prints Markdown: per method, mean and
95% t interval over seeds of the refusal rate after each stage, the drop the second task causes, the benign
answer rate, the held-out NLLs; then the drops compared pairwise (paired by seed, Holm across the table);
then the report's per-prompt comparisons and its score-vs-forgetting correlation when present. Every
refusal rate is under one judge (``qi2023_keyword``, ours: the official run's own judge is shown apart).
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

from workbench.analytics import stats

JUDGE = "qi2023_keyword"
MAIN = ("lora", "lori_d", "lori_s")
LABEL = {"lora": "LoRA", "lori_d": "LoRI-D", "lori_s": "LoRI-S (ours: disjoint masks)",
         "official:lori_s": "LoRI-S (official protocol)"}


def _results(run: Path, stage: str) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    d = Path(manifest["stages"][stage]["dir"])
    return json.loads(((d if d.is_absolute() else run / d) / "results.json").read_text())["tasks"]


def _cells(run: Path, prefix: str) -> dict:
    """One seed's numbers for one method's chain."""
    base, first, second = (_results(run, s) for s in ("base_eval", f"{prefix}safety_eval", f"{prefix}math_eval"))
    r = lambda res, m: res["safety"]["metrics"][f"{m}@{JUDGE}"]  # noqa: E731
    out = {"refusal 1": r(first, "refusal_rate"), "refusal 2": r(second, "refusal_rate"),
           "benign 1": r(first, "benign_answer_rate"), "benign 2": r(second, "benign_answer_rate"),
           "safety NLL 1": first["safety"]["metrics"]["nll"], "safety NLL 2": second["safety"]["metrics"]["nll"],
           "math NLL base": base["math"]["metrics"]["nll"], "math NLL 2": second["math"]["metrics"]["nll"],
           "refusal base": r(base, "refusal_rate"),
           "own judge 1": first["safety"]["metrics"]["refusal_rate"],
           "own judge 2": second["safety"]["metrics"]["refusal_rate"]}
    out["drop"] = out["refusal 1"] - out["refusal 2"]
    out["safety NLL rise"] = out["safety NLL 2"] - out["safety NLL 1"]
    return out


def collect(root: Path) -> dict:
    """``{method: {seed: cells}}`` for every seed directory whose chain has finished (others are named on
    stderr and left out)."""
    data = {}
    runs = [(m, d, f"{m}-") for d in sorted(root.glob("seed-*")) for m in MAIN]
    runs += [("official:lori_s", d, "") for d in sorted((root / "official").glob("seed-*"))]
    for method, seed_dir, prefix in runs:
        try:
            cells = _cells(seed_dir, prefix)
        except (KeyError, FileNotFoundError) as exc:
            print(f"skipped {method} {seed_dir.name}: not finished ({exc})", file=sys.stderr)
            continue
        data.setdefault(method, {})[int(seed_dir.name.split("-")[1])] = cells
    return data


def _ci(values: list[float], digits: int = 3) -> str:
    t = stats.t_interval(values)
    if t.lo is None:
        return f"{t.mean:.{digits}f}"
    return f"{t.mean:.{digits}f} [{t.lo:.{digits}f}, {t.hi:.{digits}f}]"


def method_table(data: dict) -> str:
    cols = ["refusal 1", "refusal 2", "drop", "benign 1", "benign 2", "safety NLL 1", "safety NLL 2",
            "math NLL base", "math NLL 2"]
    head = ("| method | seeds | refusal after safety | refusal after math | drop | benign answer after safety | "
            "benign answer after math | safety NLL after safety | safety NLL after math | math NLL base | "
            "math NLL after math |")
    lines = [head, "|---" * (len(cols) + 2) + "|"]
    for m, by_seed in data.items():
        seeds = sorted(by_seed)
        name = LABEL.get(m, m) + (" (NLL on the official template)" if ":" in m else "")
        lines.append(f"| {name} | {len(seeds)} | " +
                     " | ".join(_ci([by_seed[s][c] for s in seeds]) for c in cols) + " |")
    return "\n".join(lines)


def drop_comparisons(data: dict, key: str = "drop") -> tuple[str, list[dict]]:
    """Every pair of methods' per-seed ``key`` (B - A), paired by seed; Holm across the table. An NLL is
    not compared across protocols (each scores it on its own prompt format)."""
    rows = []
    for a, b in combinations(data, 2):
        if "NLL" in key and (":" in a) != (":" in b):
            continue
        seeds = sorted(set(data[a]) & set(data[b]))
        test = stats.paired_by_seed([data[a][s][key] for s in seeds], [data[b][s][key] for s in seeds])
        rows.append({"a": a, "b": b, "n": len(seeds), **test.to_json()})
    adjusted, rejected = stats.holm([r["p"] for r in rows])
    lines = [f"| {key}: B - A | seeds | difference [95% CI] | test | p | Holm p | significant at 0.05 |",
             "|---|---|---|---|---|---|---|"]
    for r, p, sig in zip(rows, adjusted, rejected):
        r["p_holm"], r["significant"] = p, sig
        ci = "–" if r["lo"] is None else f"[{r['lo']:.3f}, {r['hi']:.3f}]"
        pv = "–" if r["p"] is None else f"{r['p']:.3g}"
        lines.append(f"| {LABEL.get(r['b'], r['b'])} - {LABEL.get(r['a'], r['a'])} | {r['n']} | {r['diff']:+.3f} {ci} | "
                     f"{r['test']} | {pv} | {p:.3g} | {'yes' if sig else 'no'} |")
    return "\n".join(lines), rows


def report_sections(root: Path) -> str:
    path = root / "report" / "report.json"
    if not path.is_file():
        return f"(no aggregated report at {path})"
    report = json.loads(path.read_text())
    out = ["Per-prompt comparisons of the aggregated report (" + report["conclusions"]["headline"] + "):", ""]
    out += [f"- {s}" for s in report["conclusions"]["significant"]]
    out += [f"- (not significant) {s}" for s in report["conclusions"]["not_significant"]]
    sf = report.get("score_forgetting")
    if sf:
        out += ["", "Score vs forgetting: " + json.dumps({k: v for k, v in sf.items() if k != "points"})[:2000]]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the --out directory of the signal comparison")
    args = parser.parse_args(argv)
    data = collect(args.root)
    print(method_table(data), end="\n\n")
    print(drop_comparisons(data)[0], end="\n\n")
    print(drop_comparisons(data, "refusal 2")[0], end="\n\n")
    print(drop_comparisons(data, "safety NLL rise")[0], end="\n\n")
    off = data.get("official:lori_s", {})
    if off:
        seeds = sorted(off)
        print(f"Official run under its own judge (lori_official): refusal after safety "
              f"{_ci([off[s]['own judge 1'] for s in seeds])}, after math {_ci([off[s]['own judge 2'] for s in seeds])}")
        print()
    print(report_sections(args.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
