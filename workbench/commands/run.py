"""``workbench run PIPELINE_OR_CHAIN [--out DIR] [--set k=v ...] [--preset quick|default|paper]``."""

from __future__ import annotations

import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a pipeline file or a quoted chain such as 'safety->math->code'")
    p.add_argument("pipeline", metavar="PIPELINE_OR_CHAIN")
    p.add_argument("--out", help="run directory (default runs/<pipeline name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value before validation, e.g. --set stages.math.lr=1e-3")
    p.add_argument("--preset", default="quick", choices=["quick", "default", "paper"], help="chain only")
    p.add_argument("--method", default="lori_s", help="chain only: lori_s (LoRI chain) or e.g. lora (baseline)")
    p.add_argument("--compare", action="append", default=[], metavar="METHOD",
                   help="chain only: also run this method and compare in one report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from workbench.stages.run import stream

    t0 = time.perf_counter()
    for name, result in stream(args.pipeline, args.out, args.overrides, method=args.method, preset=args.preset,
                               compare=args.compare, progress=not args.quiet):
        print(f"[{time.perf_counter() - t0:7.1f}s] done: {name}", file=sys.stderr, flush=True)
    print(f"finished in {time.perf_counter() - t0:.1f}s")
    return 0
