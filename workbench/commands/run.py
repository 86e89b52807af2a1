"""``workbench run PIPELINE_OR_CHAIN [--out DIR] [--set k=v ...] [--preset quick|default|signal|paper]
[--protocol workbench|official] [--seeds 0,1,2] [--jobs N] [--executor local|ray] [--address ADDR] [--allow-plugins] [--trust-remote-code]``."""

from __future__ import annotations

from workbench.commands import add_allow_plugins, add_list_option, add_protocol, add_trust_remote_code

import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a pipeline file or a quoted chain such as 'safety->math->code'")
    p.add_argument("pipeline", metavar="PIPELINE_OR_CHAIN")
    p.add_argument("--out", help="run directory (default runs/<pipeline name>)")
    add_list_option(p, "--set", dest="overrides", metavar="KEY=VALUE",
                   help="override a value before validation, e.g. --set stages.math.lr=1e-3")
    p.add_argument("--preset", default="quick", choices=["quick", "default", "signal", "paper"], help="chain only")
    p.add_argument("--method", default="lori_s", help="chain only: lori_s (LoRI chain) or e.g. lora (baseline)")
    add_list_option(p, "--compare", metavar="METHOD",
                   help="chain only: also run this method and compare in one report; with --seeds, PROTOCOL:METHOD (e.g. official:lori_s) runs it under that protocol beside the others")
    p.add_argument("--seeds", metavar="S,S,...",
                   help="run once per seed (defaults.seed: data order and every A) into OUT/seed-<s>/, stages that do "
                        "not depend on the seed once, and write one report with intervals and paired tests to OUT/report/")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--processes", type=_positive, metavar="N",
                   help="run each train/continue/evaluate stage in N data-parallel processes (accelerate launch; one per "
                        "GPU, gloo on CPU); overrides the pipeline's launch.processes, not part of the cache key")
    add_list_option(p, "--log-with", metavar="TRACKER",
                    help="experiment trackers (accelerate's: tensorboard, wandb, mlflow, trackio, ...); adds to the "
                         "pipeline's tracking: section")
    p.add_argument("--jobs", type=_positive, default=1, metavar="N",
                   help="run up to N independent stages at the same time, each in its own process (GPUs split "
                        "with CUDA_VISIBLE_DEVICES, CPU threads split N ways); artifacts equal --jobs 1's")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help='where stages run: here, or as Ray tasks (pip install "workbench[ray]"; the run '
                        "directory must be on storage every node sees)")
    p.add_argument("--address", metavar="ADDR",
                   help="with --executor ray: the cluster to join (auto, ray://HOST:10001); default a local Ray")
    add_protocol(p)
    add_allow_plugins(p)
    add_trust_remote_code(p, pipeline=True)
    p.set_defaults(func=handler)


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def handler(args) -> int:
    from workbench.stages.run import stream
    from workbench.stages.seeds import parse_seeds, stream_seeds

    t0 = time.perf_counter()
    options = dict(method=args.method, preset=args.preset, compare=args.compare, progress=not args.quiet,
                   allow_plugins=args.allow_plugins, trust_remote_code=args.trust_remote_code,
                   log_with=args.log_with, protocol=args.protocol, processes=args.processes)
    where = dict(jobs=args.jobs, executor=args.executor, address=args.address)
    runs = (stream_seeds(args.pipeline, args.out, args.overrides, parse_seeds(args.seeds), **options, **where)
            if args.seeds
            else stream(args.pipeline, args.out, args.overrides, **options, **where))
    for name, result in runs:
        print(f"[{time.perf_counter() - t0:7.1f}s] done: {name}", file=sys.stderr, flush=True)
    print(f"finished in {time.perf_counter() - t0:.1f}s")
    return 0
