"""The optional forgetting matrix: a task score after each continual-learning stage.

JSON: ``{"tasks": [...], "stages": [...], "matrix": [[...]], "metric": "..."}`` with one row per stage
and one column per task (``matrix[s][t]``: task t's score after stage s; null where not measured).
Optional, all validated here (what the ``analyze`` stage's ``forgetting.json`` carries):

- ``nll``: the held-out NLL matrix of the same shape (lower is better; it moves where a small model's
  primary metric is 0 everywhere);
- ``learned_at``: per task, the row that learned it (null: not trained in this run);
- ``metric`` may be a ``{task: metric name}`` mapping (each task scored by its own primary metric);
- ``higher_is_better``: ``{task: bool}`` for the primary metric (default true);
- ``row_adapters``: per row, the stage whose adapter it scores (null: the base model);
- ``interval`` / ``nll_interval``: per cell ``[low, high]`` (e.g. over seeds) or null.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import FileFormatError

OPTIONAL = ("nll", "learned_at", "metrics", "higher_is_better", "row_adapters", "interval", "nll_interval")


@dataclass(frozen=True)
class Forgetting:
    """A validated forgetting matrix (rows: stages, columns: tasks); optional fields as in the module doc."""

    tasks: list[str]
    stages: list[str]
    matrix: list[list[float | None]]
    metric: str
    nll: list[list[float | None]] | None = None
    learned_at: list[int | None] | None = None
    metrics: dict[str, str] | None = None
    higher_is_better: dict[str, bool] | None = None
    row_adapters: list[str | None] | None = None
    interval: list[list[list[float] | None]] | None = None
    nll_interval: list[list[list[float] | None]] | None = None

    def to_json(self) -> dict:
        out = {"tasks": self.tasks, "stages": self.stages, "matrix": self.matrix, "metric": self.metric}
        out.update({k: getattr(self, k) for k in OPTIONAL if getattr(self, k) is not None})
        return out


def _number(v, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise FileFormatError(f"{where}: expected a finite number or null, got {v!r}")
    return float(v)


def _grid(rows, n_rows: int, n_cols: int, key: str, where: str, cell) -> list[list]:
    """A stages x tasks list of lists, each cell checked by ``cell(value, where)``."""
    if not isinstance(rows, list) or len(rows) != n_rows:
        got = len(rows) if isinstance(rows, list) else type(rows).__name__
        raise FileFormatError(f"{where}: field '{key}' has {got} rows, expected one per stage ({n_rows})")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_cols:
            raise FileFormatError(f"{where}: field '{key}[{i}]' must be a list of {n_cols} values (one per task)")
        out.append([cell(v, f"{where}: field '{key}[{i}][{j}]'") for j, v in enumerate(row)])
    return out


def _interval(v, where: str) -> list[float] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2:
        raise FileFormatError(f"{where}: expected [low, high] or null, got {v!r}")
    lo, hi = _number(v[0], where), _number(v[1], where)
    if lo is None or hi is None or lo > hi:
        raise FileFormatError(f"{where}: expected [low, high] with low <= high, got {v!r}")
    return [lo, hi]


def _per_task(obj: dict, key: str, tasks: list[str], kind: type, where: str) -> dict | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, dict) or not all(isinstance(x, kind) for x in v.values()):
        raise FileFormatError(f"{where}: field '{key}' must map task names to {kind.__name__} values")
    unknown = sorted(set(v) - set(tasks))
    if unknown:
        raise FileFormatError(f"{where}: field '{key}' names tasks {unknown} not in 'tasks' {tasks}")
    return {str(k): x for k, x in v.items()}


def _per_row(obj: dict, key: str, n: int, where: str, cell) -> list | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != n:
        raise FileFormatError(f"{where}: field '{key}' must be a list with one entry per {'task' if key == 'learned_at' else 'stage'} ({n})")
    return [cell(x, f"{where}: field '{key}[{i}]'") for i, x in enumerate(v)]


def _row_index(n_rows: int):
    def check(v, where: str) -> int | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n_rows:
            raise FileFormatError(f"{where}: expected a row index in 0..{n_rows - 1} or null, got {v!r}")
        return v
    return check


def _name(v, where: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise FileFormatError(f"{where}: expected a stage name or null, got {v!r}")
    return v


def parse_forgetting(obj: dict, where: str = "forgetting") -> Forgetting:
    """Validate a forgetting dict (fields in the module docstring).

    Raises:
        FileFormatError: a field is missing or has the wrong type, or a matrix is not stages x tasks.
    """
    if not isinstance(obj, dict):
        raise FileFormatError(f"{where}: expected a JSON object with tasks, stages, matrix, metric")
    for key in ("tasks", "stages", "matrix"):
        if not isinstance(obj.get(key), list):
            raise FileFormatError(f"{where}: field '{key}' must be a list")
    tasks, stages = [str(t) for t in obj["tasks"]], [str(s) for s in obj["stages"]]
    shape = (len(stages), len(tasks))
    grid = {k: _grid(obj[k], *shape, k, where, _number if k in ("matrix", "nll") else _interval)
            for k in ("matrix", "nll", "interval", "nll_interval") if obj.get(k) is not None or k == "matrix"}
    metric = obj.get("metric", "score")
    metrics = _per_task({"metric": metric}, "metric", tasks, str, where) if isinstance(metric, dict) else None
    return Forgetting(tasks, stages, grid["matrix"], "primary metric per task" if metrics else str(metric),
                      nll=grid.get("nll"), learned_at=_per_row(obj, "learned_at", len(tasks), where, _row_index(len(stages))),
                      metrics=metrics, higher_is_better=_per_task(obj, "higher_is_better", tasks, bool, where),
                      row_adapters=_per_row(obj, "row_adapters", len(stages), where, _name),
                      interval=grid.get("interval"), nll_interval=grid.get("nll_interval"))


def load_forgetting(source) -> Forgetting:
    """A :class:`Forgetting` from a path to a JSON file, a dict, or a :class:`Forgetting`.

    Raises:
        FileFormatError: the file is missing, not JSON, or not a valid forgetting matrix.
    """
    if isinstance(source, Forgetting):
        return source
    if isinstance(source, (str, os.PathLike)):
        from workbench.io.adapter_dir import read_json

        return parse_forgetting(read_json(Path(source)), str(source))
    return parse_forgetting(source)
