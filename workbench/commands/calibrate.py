"""``workbench calibrate ADAPTER_DIR --sparsity 0.9 --out MASK``: a LoRI-S mask from a LoRI-D adapter.

``--sparsity 0.5 0.9 0.99 --out-dir DIR`` writes one mask per sparsity from one ranking (as the official
``extract_mask.py`` does), each equal to what the single-sparsity call writes.
"""

from __future__ import annotations

from workbench.commands import add_list_option
from workbench.masking.calibration import TIE_RULES
from workbench.masking.scopes import SCOPES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="calibrate a sparse LoRI-S mask from an adapter's |B|",
                              description="Keep the top (1 - sparsity) fraction of |B| entries (ties by lowest "
                                          "flat index) and write a mask file (format in masks/README.md).")
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="adapter directory (PEFT format)")
    add_list_option(p, "--sparsity", type=float, required=True, metavar="S",
                    help="fraction of B entries frozen, in [0, 1) (LoRI: 0.9); several with --out-dir")
    p.add_argument("--scope", default="global", choices=SCOPES.names(),
                   help="entries ranked together (default: global, one threshold across all layers)")
    add_list_option(p, "--exclude", metavar="MASK",
                    help="masks of earlier tasks: their entries are not chosen (disjoint allocation)")
    p.add_argument("--tie-rule", default="exact", choices=TIE_RULES,
                   help="exact: exactly round((1 - s) * n) entries, ties by lowest index (default); official: "
                        "LoRI's extract_mask.py, k = floor((1 - s) * n) and every |B| >= the k-th largest kept")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="MASK", help="mask file to write (must not exist); one sparsity")
    out.add_argument("--out-dir", metavar="DIR", help="directory for one sparsity_<s>.mask.safetensors per sparsity")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.errors import ConfigError
    from workbench.masking.calibration import calibrate_to_dir, calibrate_to_file

    if args.out is not None:
        if len(args.sparsity) != 1:
            raise ConfigError(f"--out takes one --sparsity, got {len(args.sparsity)}; use --out-dir DIR for several")
        mask = calibrate_to_file(args.adapter_dir, args.out, args.sparsity[0], args.scope, args.exclude, args.tie_rule)
        print(f"wrote {args.out}: kept {mask.kept()} of {mask.total()} entries (density {mask.density():.4%})")
        return 0
    written = calibrate_to_dir(args.adapter_dir, args.out_dir, args.sparsity, args.scope, args.exclude, args.tie_rule)
    for sparsity, (path, mask) in written.items():
        print(f"wrote {path}: sparsity {sparsity:g}, kept {mask.kept()} of {mask.total()} entries "
              f"(density {mask.density():.4%})")
    return 0
