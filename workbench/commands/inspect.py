"""``workbench inspect ADAPTER_DIR [--base MODEL]``: method, rank, parameter counts, fingerprint."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="describe an adapter directory")
    p.add_argument("adapter", metavar="ADAPTER_DIR")
    p.add_argument("--base", metavar="MODEL", default=None,
                   help="also check the adapter against this base (refused when it was trained on another)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.adapters.adapter import load_adapter
    from workbench.adapters.inspect import describe_adapter
    from workbench.adapters.registry import loadable_peft_types

    adapter = load_adapter(args.adapter, peft_types=loadable_peft_types())
    model = None
    if args.base is not None:
        from workbench.models.base import load_base

        model, _ = load_base(args.base, with_tokenizer=False)
    info = describe_adapter(adapter, model=model)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        for k, v in info.items():
            print(f"{k:>18}: {v}")
    return 0
