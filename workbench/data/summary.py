"""Per-task summaries for ``workbench tasks``: kind, record counts and source."""

from __future__ import annotations

from workbench.data.registry import TASKS, get_task
from workbench.data.task import Task, resolve_data_dir


def summarize(task: Task, data_dir=None) -> dict:
    """Counts of a task's training records, held-out pairs and each eval split.

    Args:
        task: the task.
        data_dir: full-data root (default: ``$WORKBENCH_DATA`` or the shipped samples).

    Returns:
        ``{"name", "kind", "train", "heldout", "eval": {split: n}, "source", "license", "description"}``.

    Raises:
        DataError: missing or unreadable files.
    """
    splits = task.eval_splits(data_dir)
    return {
        "name": task.name, "kind": task.kind, "description": task.description,
        "train": len(task.train_records(data_dir=data_dir)),
        "heldout": len(task.heldout_pairs(data_dir=data_dir)),
        "eval": {s: len(task.eval_records(s, data_dir=data_dir)) for s in splits},
        "source": task.source, "license": task.license,
    }


def render(rows: list[dict], verbose: bool = False) -> str:
    """A plain-text table of summaries (one line per task; with ``verbose``, description and licence too)."""
    header = f"{'task':<8} {'kind':<7} {'train':>6} {'heldout':>7}  eval"
    lines = [header]
    for row in rows:
        evals = " ".join(f"{k}={v}" for k, v in row["eval"].items())
        lines.append(f"{row['name']:<8} {row['kind']:<7} {row['train']:>6} {row['heldout']:>7}  {evals}")
        lines.append(f"{'':<8} source: {row['source']}")
        if verbose:
            lines.append(f"{'':<8} {row['description']}; licence: {row['license']}")
    return "\n".join(lines)


def tasks_report(names: list[str] | None = None, data_dir=None) -> str:
    """The text ``workbench tasks`` prints: every registered task (or ``names``) with its counts.

    Raises:
        ConfigError: an unknown task name (did-you-mean).
        DataError: missing data.
    """
    chosen = names or TASKS.names()
    tasks = [get_task(n) for n in chosen]  # validate every name before reading any file
    root = resolve_data_dir(data_dir)
    where = "shipped samples" if root is None else str(root)
    return f"data: {where}\n" + render([summarize(t, root) for t in tasks], verbose=bool(names))
