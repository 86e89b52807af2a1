"""``workbench tasks``: list the registered tasks with their kind, record counts and source."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    """Add the ``tasks`` subcommand."""
    p = subparsers.add_parser("tasks", help="list tasks, their record counts and sources",
                              description="List the registered tasks with kind, train/held-out/eval counts of "
                                          "the shipped samples (or of --data-dir) and their source.")
    p.add_argument("names", nargs="*", metavar="TASK", help="only these tasks (shown with description and licence)")
    p.add_argument("--data-dir", default=None,
                   help="count the full copies in this directory (default: $WORKBENCH_DATA or the shipped samples)")
    p.set_defaults(func=handler)


def handler(args) -> int:
    """Print the task table; errors surface as WorkbenchError (exit 2)."""
    from workbench.data.summary import tasks_report

    print(tasks_report(args.names, args.data_dir))
    return 0
