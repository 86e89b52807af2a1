"""The ``workbench`` command line: thin, each command one call into the API.

Each command lives in ``workbench/commands/<name>.py`` exposing ``add_parser(subparsers)``; the parser's
``func(args) -> int`` runs it. Errors meant for the user (:class:`WorkbenchError`) print as one line and
exit with code 2, never with a traceback.

Only the module of the command being run is imported (:data:`COMMANDS` holds the one-line help of the
others for ``workbench --help``), so ``validate``, ``status``, ``ls`` and ``--version`` start without
torch; ``tests/test_cli.py`` checks both that and that this table matches what each module registers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from workbench.errors import WorkbenchError
from workbench.progress import quiet_third_party

# name -> the help line ``workbench --help`` shows; each module registers its parser with the same text.
COMMANDS = {
    "run": "run a pipeline file or a quoted chain such as 'safety->math->code'",
    "validate": "check a pipeline (file or chain) without loading weights",
    "status": "show the stages of a run directory and what became of them",
    "ls": "list pipelines, adapter methods, merge strategies, tasks or mask scopes",
    "train": "train an adapter on a task",
    "calibrate": "calibrate a sparse LoRI-S mask from an adapter's |B|",
    "masks": "inspect mask files, import official LoRI .pt masks",
    "inspect": "describe an adapter directory",
    "export": "convert between PEFT adapters and compact LoRI files",
    "merge": "merge LoRA adapters (concat, linear, ties, dare, svd, lori_disjoint, ...)",
    "eval": "evaluate an adapter (or the base model) on tasks",
    "score": "score model outputs with an official harness's rules (humaneval)",
    "report": "subspace angles, interference and mask overlap between adapters (md, html, json, png)",
    "tasks": "list tasks, their record counts and sources",
}


def build_parser(only: str | None = "*") -> argparse.ArgumentParser:
    """The argument parser.

    Args:
        only: the command whose module is imported and whose full parser is built; ``"*"`` imports every
            command module, None none (the others appear in ``--help`` with their line from
            :data:`COMMANDS`).
    """
    parser = argparse.ArgumentParser(prog="workbench", description="Continual learning and merging of LoRA-family adapters (LoRI).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_line in COMMANDS.items():
        if only == "*" or name == only:
            importlib.import_module(f"workbench.commands.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The command named on the command line (the first word that is not an option), if it is one."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_third_party()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=command_of(argv))
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
    except BrokenPipeError:  # `workbench ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
