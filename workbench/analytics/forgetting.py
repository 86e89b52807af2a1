"""The optional forgetting matrix: a task score after each continual-learning stage.

JSON: ``{"tasks": [...], "stages": [...], "matrix": [[...]], "metric": "..."}`` with one row per stage
and one column per task (``matrix[s][t]``: task t's score after stage s; null where not measured).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import FileFormatError


@dataclass(frozen=True)
class Forgetting:
    """A validated forgetting matrix (rows: stages, columns: tasks)."""

    tasks: list[str]
    stages: list[str]
    matrix: list[list[float | None]]
    metric: str

    def to_json(self) -> dict:
        return {"tasks": self.tasks, "stages": self.stages, "matrix": self.matrix, "metric": self.metric}


def _number(v, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise FileFormatError(f"{where}: expected a finite number or null, got {v!r}")
    return float(v)


def parse_forgetting(obj: dict, where: str = "forgetting") -> Forgetting:
    """Validate a forgetting dict.

    Raises:
        FileFormatError: a field is missing or has the wrong type, or the matrix is not stages x tasks.
    """
    if not isinstance(obj, dict):
        raise FileFormatError(f"{where}: expected a JSON object with tasks, stages, matrix, metric")
    for key in ("tasks", "stages", "matrix"):
        if not isinstance(obj.get(key), list):
            raise FileFormatError(f"{where}: field '{key}' must be a list")
    tasks, stages, rows = [str(t) for t in obj["tasks"]], [str(s) for s in obj["stages"]], obj["matrix"]
    if len(rows) != len(stages):
        raise FileFormatError(f"{where}: field 'matrix' has {len(rows)} rows, expected one per stage ({len(stages)})")
    matrix = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(tasks):
            raise FileFormatError(f"{where}: field 'matrix[{i}]' must be a list of {len(tasks)} values (one per task)")
        matrix.append([_number(v, f"{where}: field 'matrix[{i}][{j}]'") for j, v in enumerate(row)])
    return Forgetting(tasks, stages, matrix, str(obj.get("metric", "score")))


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
