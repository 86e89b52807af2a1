"""``workbench masks show|import``: inspect mask files; convert an official LoRI ``.pt`` mask."""

from __future__ import annotations

from workbench.commands import add_list_option


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("masks", help="inspect mask files, import official LoRI .pt masks")
    sub = p.add_subparsers(dest="masks_command", metavar="SUBCOMMAND", required=True)
    show = sub.add_parser("show", help="density overall and per layer x projection; overlap with other masks")
    show.add_argument("mask", metavar="MASK", help="mask file (.safetensors)")
    add_list_option(show, "--vs", metavar="MASK", help="masks to compare against")
    show.set_defaults(func=run_show)
    imp = sub.add_parser("import", help="convert an official LoRI .pt mask (loaded with weights_only=True)")
    imp.add_argument("pt", metavar="MASK_PT", help="the official .pt mask")
    imp.add_argument("--adapter", required=True, metavar="ADAPTER_DIR", help="the adapter the mask belongs to")
    imp.add_argument("--out", required=True, metavar="MASK", help="mask file to write (must not exist)")
    imp.add_argument("--invert", action="store_true", help="the .pt marks frozen entries with 1 (lottery-ticket style)")
    imp.set_defaults(func=run_import)


def run_show(args) -> int:
    from workbench.masking.show import show_mask_files

    print(show_mask_files(args.mask, args.vs))
    return 0


def run_import(args) -> int:
    from workbench.masking.file import import_pt_to_file

    mask = import_pt_to_file(args.pt, args.adapter, args.out, invert=args.invert)
    print(f"wrote {args.out}: kept {mask.kept()} of {mask.total()} entries (density {mask.density():.4%})")
    return 0
