"""``workbench export --compact ADAPTER_DIR --out DIR`` / ``workbench export --peft COMPACT_DIR --out DIR``.

With ``--base MODEL`` the adapter is first checked against that base (the one base-fingerprint check,
:func:`workbench.adapters.base_check.check_base`): nothing is written for an adapter of another base.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="convert between PEFT adapters and compact LoRI files")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compact", metavar="ADAPTER_DIR", help="PEFT adapter -> compact (A as seed, B bit-packed)")
    mode.add_argument("--peft", metavar="COMPACT_DIR", help="compact -> PEFT adapter (lossless)")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--base", metavar="MODEL", default=None,
                   help="refuse to export unless the adapter was trained on this base")
    p.set_defaults(func=run)


def _check_base(args) -> None:
    from workbench.adapters.base_check import check_base_named

    if args.compact:
        from workbench.adapters.adapter import load_adapter

        adapter = load_adapter(args.compact)
    else:
        from workbench.adapters.compact import load_compact

        adapter = load_compact(args.peft)
    check_base_named(adapter, args.base)


def run(args) -> int:
    from workbench.adapters.compact import dir_size, export_compact, export_peft

    if args.base is not None:
        _check_base(args)
    if args.compact:
        out = export_compact(args.compact, args.out)
        src = args.compact
    else:
        out = export_peft(args.peft, args.out)
        src = args.peft
    a, b = dir_size(src), dir_size(out)
    print(f"wrote {out} ({b:,} bytes; source {a:,} bytes; ratio {a / b:.2f}x)")
    return 0
