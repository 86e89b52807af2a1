"""``workbench status RUN_DIR``: a table of the run's stages, their status and timing."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("status", help="show the stages of a run directory and what became of them")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds manifest.json)")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from workbench.graph.status import format_status, run_status

    print(format_status(run_status(args.run_dir)))
    return 0
