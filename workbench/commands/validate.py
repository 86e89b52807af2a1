"""``workbench validate PIPELINE``: check a pipeline file or chain without loading a weight.

Prints the stages in execution order; with ``--out RUN_DIR`` (an existing run), also which stages are
cached (hit) and which would run (miss). Every error is printed at once as ``file:line: path: message``.
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("validate", help="check a pipeline (file or chain) without loading weights")
    p.add_argument("pipeline", metavar="PIPELINE",
                   help="a pipeline YAML file, or a quoted chain such as 'safety->math->code'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value before validation, e.g. --set stages.math.rank=16 (repeatable)")
    p.add_argument("--out", metavar="RUN_DIR", help="an existing run directory: show cache hits and misses")
    p.add_argument("--method", default="lori_s", help="chain only: adapter method (default lori_s)")
    p.add_argument("--preset", default="quick", choices=["quick", "default", "paper"], help="chain only")
    p.add_argument("--compare", action="append", default=[], metavar="METHOD",
                   help="chain only: also run this method on the same chain (repeatable)")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from workbench.pipeline import validate

    result = validate(args.pipeline, args.overrides, run_dir=args.out, method=args.method,
                      preset=args.preset, compare=args.compare)
    print(format_validation(result))
    return 0


def format_validation(result) -> str:
    """``ok: <source> (<name>): N stages`` and one line per stage, with hit/miss when planned."""
    pipe = result.pipeline
    lines = [f"ok: {pipe.source} ({pipe.name}): {len(pipe.order())} stages"]
    status = {row.task.name: (row.status, row.key[:12]) for row in result.plan or []}
    width = max(len(n) for n in pipe.order())
    for i, name in enumerate(pipe.order(), 1):
        task = pipe.task(name)
        extra = f"  {status[name][0]:<4}  {status[name][1]}" if name in status else ""
        lines.append(f"{i:3d}. {name:<{width}}  {task.kind:<9}{extra}")
    return "\n".join(lines)
