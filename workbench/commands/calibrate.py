"""``workbench calibrate ADAPTER_DIR --sparsity 0.9 --out MASK``: a LoRI-S mask from a LoRI-D adapter."""

from __future__ import annotations

from workbench.masking.scopes import SCOPES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="calibrate a sparse LoRI-S mask from an adapter's |B|",
                              description="Keep the top (1 - sparsity) fraction of |B| entries (ties by lowest "
                                          "flat index) and write a mask file (format in masks/README.md).")
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="adapter directory (PEFT format)")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of B entries frozen, in [0, 1) (LoRI: 0.9)")
    p.add_argument("--scope", default="global", choices=SCOPES.names(),
                   help="entries ranked together (default: global, one threshold across all layers)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="MASK",
                   help="masks of earlier tasks: their entries are not chosen (disjoint allocation)")
    p.add_argument("--out", required=True, metavar="MASK", help="mask file to write (must not exist)")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.masking.calibrate import calibrate_to_file

    mask = calibrate_to_file(args.adapter_dir, args.out, args.sparsity, args.scope, args.exclude)
    print(f"wrote {args.out}: kept {mask.kept()} of {mask.total()} entries (density {mask.density():.4%})")
    return 0
