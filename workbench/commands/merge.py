"""``workbench merge``: merge adapter directories into one adapter, or into a base model's weights."""

from __future__ import annotations

from workbench.commands import add_list_option, add_trust_remote_code

import argparse

from workbench.errors import ConfigError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``merge`` subcommand."""
    from workbench.merges import MERGES

    p = subparsers.add_parser(
        "merge", help="merge LoRA adapters (concat, linear, ties, dare, svd, lori_disjoint, ...)",
        description="Merge adapter directories into one PEFT adapter, or with --into-base into a model directory. "
                    "What a weight means depends on the strategy: see workbench/merges/README.md.")
    p.add_argument("adapters", nargs="+", metavar="ADAPTER_DIR", help="adapter directories (PEFT format)")
    p.add_argument("--strategy", default="concat", help=f"one of {', '.join(MERGES.names())} (default: concat)")
    add_list_option(p, "--weights", type=float, default=None, help="one weight per adapter (default: 1 each)")
    p.add_argument("--density", type=float, help="fraction of entries kept (ties, dare_*, magnitude_prune)")
    p.add_argument("--rank", type=int, help="output rank (svd; delta-space strategies)")
    p.add_argument("--seed", type=int, help="seed of the random masks (dare_*)")
    p.add_argument("--space", choices=["factor", "delta"],
                   help="factor: PEFT's semantics on A and B (default); delta: mergekit's on dense updates")
    p.add_argument("--majority-sign-method", choices=["total", "frequency"], help="sign election (ties, dare_ties)")
    p.add_argument("--into-base", action="store_true", help="write a merged model directory instead of an adapter")
    p.add_argument("--base", help="base model for --into-base (name, hub id, directory or .gguf)")
    add_trust_remote_code(p, "the --into-base model")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.set_defaults(func=handler)
    return p


def handler(args) -> int:
    """Run the merge; prints the output path."""
    from workbench.merges import merge_to_dir

    if args.into_base != (args.base is not None):
        raise ConfigError("--into-base and --base MODEL go together" if args.into_base
                          else "--base is only used with --into-base")
    if args.trust_remote_code and not args.into_base:
        raise ConfigError("--trust-remote-code is only used with --into-base (merging adapters loads no model)")
    names = ("density", "rank", "seed", "space", "majority_sign_method")
    params = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    out = merge_to_dir(args.adapters, args.out, strategy=args.strategy, weights=args.weights, base=args.base,
                       trust_remote_code=args.trust_remote_code, **params)
    print(out)
    return 0
