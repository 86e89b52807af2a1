"""``workbench inspect ADAPTER_DIR``: method, rank, parameter counts, fingerprint."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="describe an adapter directory")
    p.add_argument("adapter", metavar="ADAPTER_DIR")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.adapters.inspect import describe_adapter
    from workbench.adapters.adapter import load_adapter

    info = describe_adapter(load_adapter(args.adapter))
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        for k, v in info.items():
            print(f"{k:>18}: {v}")
    return 0
