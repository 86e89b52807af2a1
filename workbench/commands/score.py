"""``workbench score humaneval SAMPLES.jsonl [--problems FILE]``: score completions from any generator.

The sample and results formats are openai/human-eval's (``workbench/evaluate/humaneval.py``); programs
run in the workbench sandbox and pass only when their tests ran to the end.
"""

from __future__ import annotations

HELP = "score model outputs with an official harness's rules (humaneval)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("score", help=HELP)
    sub = p.add_subparsers(dest="score_command", metavar="BENCHMARK", required=True)
    he = sub.add_parser("humaneval", help="pass@k of human-eval samples ({task_id, completion} per line)",
                        description="Run each sample's program (prompt + completion + tests) in the sandbox; "
                                    "write SAMPLES_results.jsonl (passed, result per sample) and "
                                    "SAMPLES_pass_at_k.json, and print pass@k.")
    he.add_argument("samples", metavar="SAMPLES.jsonl",
                    help="JSON lines with task_id and completion (.jsonl or .jsonl.gz)")
    he.add_argument("--problems", metavar="FILE", default=None,
                    help="HumanEval problems (.jsonl or .jsonl.gz; default: the 164 shipped problems)")
    he.add_argument("--k", default="1,10,100", metavar="K1,K2",
                    help="comma-separated k for pass@k (default 1,10,100; a k above any problem's sample count "
                         "is skipped)")
    he.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="wall-clock limit per program (default: the sandbox's 10 s; the official harness uses 3)")
    he.add_argument("--workers", type=int, default=None, help="programs run at once (default: CPU count, at most 8)")
    he.add_argument("--ignore-incomplete", action="store_true",
                    help="score even when some problems have no samples (refused by default, as the harness does)")
    he.set_defaults(func=run_humaneval)


def parse_ks(text: str) -> tuple[int, ...]:
    """``"1,10,100"`` -> ``(1, 10, 100)``.

    Raises:
        ConfigError: an entry that is not a positive integer.
    """
    from workbench.errors import ConfigError

    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        ks = ()
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"--k: expected comma-separated positive integers, got {text!r}")
    return ks


def run_humaneval(args) -> int:
    from workbench.errors import ConfigError
    from workbench.evaluate.humaneval import score_samples
    from workbench.evaluate.sandbox import SandboxLimits

    limits = None
    if args.timeout is not None:
        if args.timeout <= 0:
            raise ConfigError(f"--timeout must be positive, got {args.timeout}")
        limits = SandboxLimits(timeout=args.timeout)
    report = score_samples(args.samples, args.problems, parse_ks(args.k), limits=limits, workers=args.workers,
                           ignore_incomplete=args.ignore_incomplete)
    print(f"{report['passed']} of {report['samples']} samples passed ({report['problems']} problems)")
    for name, value in report["pass_at_k"].items():
        print(f"{name}: {value:.4f}")
    print(f"wrote {report['results']} and {report['summary']}")
    return 0
