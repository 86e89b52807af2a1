"""``workbench report ADAPTER_DIR... [--masks MASK...] [--forgetting FILE.json] [--data TASK...] --out DIR``."""

from __future__ import annotations

from workbench.commands import add_list_option


def add_parser(subparsers) -> None:
    """Register the ``report`` command."""
    p = subparsers.add_parser(
        "report", help="subspace angles, interference and mask overlap between adapters (md, html, json, png)",
        description="Compare adapters pairwise on every shared module, from their low-rank factors, and write "
                    "report.json, report.md, report.html and PNG figures into --out.")
    p.add_argument("adapters", nargs="+", metavar="ADAPTER_DIR", help="adapter directories (PEFT format)")
    add_list_option(p, "--masks", metavar="MASK", default=None,
                   help="LoRI-S mask files, one per adapter in the same order ('-' for an adapter without one)")
    p.add_argument("--forgetting", metavar="FILE.json", default=None,
                   help='forgetting matrix JSON: {"tasks": [...], "stages": [...], "matrix": [[...]], "metric": ...}')
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--top", type=int, default=10, help="how many most-interfering modules to list (default 10)")
    add_list_option(p, "--data", metavar="TASK", default=None,
                    help="data-aware interference on these tasks' held-out inputs: task names (each adapter whose "
                         "workbench.json records the task gets a row) or ADAPTER=TASK; input moments are collected "
                         "on the base once per task and cached")
    p.add_argument("--base", default=None, help="base model for --data (default: the adapters' recorded base)")
    p.add_argument("--data-limit", type=int, default=None, metavar="N",
                   help="held-out pairs per task for --data (default: data_moments.DEFAULT_LIMIT, 32)")
    p.set_defaults(func=handler)


def handler(args) -> int:
    """Build the report and print where it went."""
    from workbench.analytics.report import build_report

    masks = None if args.masks is None else [None if m == "-" else m for m in args.masks]
    report = build_report(args.adapters, masks=masks, forgetting=args.forgetting, out_dir=args.out, top_k=args.top,
                          data=args.data, base=args.base, data_limit=args.data_limit)
    for p in report["pairs"]:
        m = p["summary"]["means"]
        print(f"{p['a']} / {p['b']}: A mean cos² {_f(m['a_mean_sq_cos'])} (random {_f(m['a_random_baseline'])}), "
              f"B mean cos² {_f(m['b_mean_sq_cos'])}, ΔW cosine {_f(m['delta_cosine'])}, "
              f"degenerate modules {p['summary']['n_degenerate']}/{p['summary']['n_modules']}")
    for p in (report.get("data_aware") or {}).get("pairs", []):
        print(f"{p['update']} on {p['inputs_of']}'s {p['task']} inputs: energy ratio {_f(p['energy_ratio'])} "
              f"(random {_f(p['energy_ratio_baseline'])}), overlap {_f(p['overlap'])}")
    print(f"report written to {args.out}/report.html (and report.md, report.json)")
    return 0


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
