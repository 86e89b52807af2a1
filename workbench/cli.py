"""The ``workbench`` command line: thin, each command one call into the API.

Each command lives in ``workbench/commands/<name>.py`` exposing ``add_parser(subparsers)``; the parser's
``func(args) -> int`` runs it. Errors meant for the user (:class:`WorkbenchError`) print as one line and
exit with code 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from workbench.errors import WorkbenchError

COMMANDS = ["run", "validate", "status", "ls", "train", "calibrate", "masks", "inspect", "export",
            "merge", "eval", "report", "tasks"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Continual learning and merging of LoRA-family adapters (LoRI).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"workbench.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"workbench.commands.{name}":
                raise
            continue  # command not built yet in this checkout
        module.add_parser(sub)
    return parser


def _quiet_third_party() -> None:
    # Noise a user cannot act on: bitsandbytes asks for the hub-only `kernels` package on every import,
    # transformers warns about its own renamed internals.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_third_party()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from workbench import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
