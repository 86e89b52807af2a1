"""``workbench eval ADAPTER_DIR --task safety [--task math ...]``: evaluate an adapter (or the base alone)."""

from __future__ import annotations

import math

from workbench.errors import ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate an adapter (or the base model) on tasks",
                              description="Evaluate a PEFT adapter on top of its base model, or the base alone.")
    p.add_argument("adapter", nargs="?", metavar="ADAPTER_DIR", help="adapter directory (omit with --base-only)")
    p.add_argument("--task", action="append", required=True, metavar="NAME",
                   help="task to evaluate (repeat for several): safety, math, code, nlu, or a registered custom task")
    p.add_argument("--base", default=None, help="base model (default: the adapter's recorded base, else the embedded model)")
    p.add_argument("--base-only", action="store_true", help="evaluate the base model without an adapter")
    p.add_argument("--limit", type=int, default=None, help="records per evaluation split (a seeded subset)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; several give mean and std (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: per task kind")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--temperature", type=float, default=None, help="sample at this temperature (default: greedy)")
    p.add_argument("--no-merge", action="store_true", help="keep the adapter unmerged while generating")
    p.add_argument("--nlu-mode", choices=("generate", "loglik"), default="generate",
                   help="NLU answer: the paper's label extraction from generated text, or option log-likelihood")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--out", default=None, metavar="FILE", help="write the full result JSON here")
    p.set_defaults(func=run)


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got '{text}'") from None


def _check(args) -> None:
    if args.base_only and args.adapter:
        raise ConfigError("give either ADAPTER_DIR or --base-only, not both")
    if not args.base_only and not args.adapter:
        raise ConfigError("ADAPTER_DIR is required (or pass --base-only to evaluate the base model)")
    if args.limit is not None and args.limit <= 0:
        raise ConfigError(f"--limit must be positive, got {args.limit}")
    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")


def print_table(report: dict) -> None:
    """One line per task and metric: value, and ± std when several seeds ran."""
    print(f"{'task':<10} {'metric':<28} value")
    for name, result in report["tasks"].items():
        for metric, value in result["metrics"].items():
            std = result["std"].get(metric, 0.0)
            spread = f" ± {std:.4f}" if std and not math.isnan(std) else ""
            mark = " *" if metric == result["primary"] else ""
            print(f"{name:<10} {metric + mark:<28} {value:.4f}{spread}")


def run(args) -> int:
    from workbench.evaluate.api import evaluate_adapter
    from workbench.evaluate.generate import GenerationConfig

    _check(args)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           do_sample=args.temperature is not None, temperature=args.temperature or 1.0,
                           merge_adapter=not args.no_merge)
    report = evaluate_adapter(None if args.base_only else args.adapter, args.task, base=args.base, limit=args.limit,
                              seeds=_seeds(args.seeds), gen=gen, out=args.out, nlu_mode=args.nlu_mode,
                              device=args.device)
    print_table(report)
    if args.out:
        print(f"wrote {args.out}")
    return 0
