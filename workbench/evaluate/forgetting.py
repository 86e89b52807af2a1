"""The forgetting matrix of a continual-learning run and its usual summaries.

``matrix[i][j]`` is the metric on task j after stage i (stage i usually trains task i). Summaries
(Lopez-Paz & Ranzato 2017, GEM, arXiv:1706.08840; Chaudhry et al. 2018, RWalk, arXiv:1801.10112):

- average accuracy ``ACC = mean_j R[T-1, j]`` after the last stage;
- backward transfer ``BWT = mean_{j < T-1} (R[T-1, j] - R[learned(j), j])`` (negative = forgetting);
- average forgetting ``F = mean_{j < T-1} (max_{l < T-1} R[l, j] - R[T-1, j])``;
- forward transfer ``FWT = mean_{j > 0} (R[learned(j) - 1, j] - baseline_j)`` when the base model's
  scores are given.

For a lower-is-better metric (NLL) the differences are sign-flipped so that a positive BWT still means
improvement and a positive F still means forgetting.

Resumable: :class:`ForgettingMatrix` lives in a JSON file rewritten atomically after every cell, so a
killed evaluation recomputes only the missing cells.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable

from workbench.errors import FileFormatError, MismatchError
from workbench.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def rate_columns(metrics: dict, higher: dict, tasks: list[str]) -> list[int]:
    """The columns a primary-metric summary may average: tasks whose primary metric is a rate (higher is
    better), not a held-out NLL standing in for one (an evaluate stage's ``nll_only``): ACC over a refusal
    rate and an NLL would add numbers of different units and directions."""
    return [j for j, t in enumerate(tasks) if metrics.get(t) != "nll" and higher.get(t, True)]


def summarize_columns(matrix: list[list[float | None]], learned_at: list[int], columns: list[int]) -> dict:
    """:func:`summarize` (higher is better) over some columns only; every field None without any."""
    if not columns:
        return {"acc": None, "bwt": None, "forgetting": None, "fwt": None}
    return summarize([[row[j] for j in columns] for row in matrix], [learned_at[j] for j in columns], True)


def summarize(matrix: list[list[float | None]], learned_at: list[int] | None = None, higher_is_better: bool = True,
              baseline: list[float] | None = None) -> dict:
    """ACC, BWT, forgetting (and FWT with a baseline) of a stages x tasks matrix.

    Args:
        matrix: ``matrix[i][j]``; None marks a cell not evaluated (summaries needing it become None).
        learned_at: the stage that trains each task (default: task j at stage j).
        higher_is_better: direction of the metric.
        baseline: the base model's score on each task (for FWT).

    Returns:
        ``{"acc", "bwt", "forgetting", "fwt"}`` (None where undefined or a needed cell is missing).
    """
    stages, tasks = len(matrix), len(matrix[0]) if matrix else 0
    learned_at = learned_at if learned_at is not None else list(range(tasks))
    sign = 1.0 if higher_is_better else -1.0
    last = matrix[-1] if matrix else []
    acc = None if not last or any(v is None for v in last) else _mean(last)
    earlier = [j for j in range(tasks) if learned_at[j] < stages - 1]
    bwt_terms, forget_terms = [], []
    for j in earlier:
        column = [matrix[i][j] for i in range(stages)]
        if last[j] is None or column[learned_at[j]] is None or any(v is None for v in column[:-1]):
            return {"acc": acc, "bwt": None, "forgetting": None, "fwt": _fwt(matrix, learned_at, sign, baseline)}
        bwt_terms.append(sign * (last[j] - column[learned_at[j]]))
        best = max(sign * v for v in column[:-1])
        forget_terms.append(best - sign * last[j])
    return {"acc": acc, "bwt": _mean(bwt_terms), "forgetting": _mean(forget_terms),
            "fwt": _fwt(matrix, learned_at, sign, baseline)}


def _fwt(matrix, learned_at, sign, baseline) -> float | None:
    if baseline is None:
        return None
    terms = []
    for j, stage in enumerate(learned_at):
        if stage > 0:
            before = matrix[stage - 1][j]
            if before is None or baseline[j] is None:
                return None
            terms.append(sign * (before - baseline[j]))
    return _mean(terms)


class ForgettingMatrix:
    """A stages x tasks matrix of one metric, persisted cell by cell (see the module docstring)."""

    def __init__(self, tasks: list[str], stages: list[str], metric: str, higher_is_better: bool = True,
                 path: str | Path | None = None, learned_at: list[int] | None = None,
                 summary_columns: list[int] | None = None):
        self.tasks, self.stages, self.metric = list(tasks), list(stages), metric
        self.summary_columns = summary_columns  # None: every column (see rate_columns)
        self.higher_is_better, self.path = higher_is_better, Path(path) if path else None
        self.learned_at = learned_at if learned_at is not None else _default_learned_at(self.tasks, self.stages)
        self.matrix: list[list[float | None]] = [[None] * len(self.tasks) for _ in self.stages]
        self.cells: dict[str, dict] = {}  # "stage/task" -> settings and details of that number
        self.baseline: list[float | None] | None = None

    @classmethod
    def open(cls, path: str | Path, tasks: list[str], stages: list[str], metric: str, **kw) -> "ForgettingMatrix":
        """Load ``path`` when it exists (checking it describes the same run), else start an empty matrix.

        Raises:
            MismatchError: the file holds other tasks, stages or metric.
            FileFormatError: the file is not a forgetting-matrix JSON.
        """
        fm = cls(tasks, stages, metric, path=path, **kw)
        if not Path(path).is_file():
            return fm
        data = _read_json(Path(path))
        for field, want in (("tasks", fm.tasks), ("stages", fm.stages), ("metric", metric)):
            if data.get(field) != want:
                raise MismatchError(f"{path}: field '{field}' is {data.get(field)!r}, this run has {want!r}; "
                                    "use another output file or delete it")
        if len(data["matrix"]) != len(fm.stages) or any(len(r) != len(fm.tasks) for r in data["matrix"]):
            raise FileFormatError(f"{path}: matrix is not {len(fm.stages)} x {len(fm.tasks)}")
        fm.matrix = [[None if v is None else float(v) for v in row] for row in data["matrix"]]
        fm.cells, fm.baseline = data.get("cells", {}), data.get("baseline")
        return fm

    def get(self, stage: str, task: str) -> float | None:
        return self.matrix[self.stages.index(stage)][self.tasks.index(task)]

    def set(self, stage: str, task: str, value: float, info: dict | None = None) -> None:
        """Record one cell and save the file atomically (when the matrix has a path)."""
        self.matrix[self.stages.index(stage)][self.tasks.index(task)] = float(value)
        self.cells[f"{stage}/{task}"] = info or {}
        self.save()

    def missing(self) -> list[tuple[str, str]]:
        """Cells not evaluated yet, stage-major."""
        return [(s, t) for i, s in enumerate(self.stages) for j, t in enumerate(self.tasks) if self.matrix[i][j] is None]

    def fill(self, evaluate: Callable[[str, str], float | tuple[float, dict]]) -> "ForgettingMatrix":
        """Evaluate every missing cell with ``evaluate(stage, task)`` (a value, or ``(value, info)``),
        saving after each one."""
        for stage, task in self.missing():
            result = evaluate(stage, task)
            value, info = result if isinstance(result, tuple) else (result, {})
            self.set(stage, task, value, info)
        return self

    def summary(self) -> dict:
        if self.summary_columns is not None:
            return summarize_columns(self.matrix, self.learned_at, self.summary_columns)
        return summarize(self.matrix, self.learned_at, self.higher_is_better, self.baseline)

    def to_dict(self) -> dict:
        return {"tasks": self.tasks, "stages": self.stages, "matrix": self.matrix, "metric": self.metric,
                "higher_is_better": self.higher_is_better, "learned_at": self.learned_at,
                "baseline": self.baseline, "summary": self.summary(), "cells": self.cells}

    def save(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.to_dict())

    def to_markdown(self, digits: int = 3) -> str:
        """A Markdown table (rows: after each stage; columns: tasks) followed by the summaries."""
        fmt = lambda v: "-" if v is None else f"{v:.{digits}f}"  # noqa: E731
        lines = [f"| after stage \\ {self.metric} | " + " | ".join(self.tasks) + " |",
                 "|---" * (len(self.tasks) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(fmt(v) for v in row) + " |" for s, row in zip(self.stages, self.matrix)]
        summary = self.summary()
        lines += ["", ", ".join(f"{k.upper()} {fmt(v)}" for k, v in summary.items() if k != "fwt" or v is not None)]
        return "\n".join(lines) + "\n"

    def write_markdown(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_markdown())

    def write_heatmap(self, path: str | Path) -> Path:
        """A PNG heatmap of the matrix (missing cells blank), written atomically."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        values = [[math.nan if v is None else v for v in row] for row in self.matrix]
        fig, ax = plt.subplots(figsize=(1.2 * len(self.tasks) + 2, 0.8 * len(self.stages) + 1.5))
        image = ax.imshow(values, cmap="viridis" if self.higher_is_better else "viridis_r", aspect="auto")
        ax.set_xticks(range(len(self.tasks)), self.tasks)
        ax.set_yticks(range(len(self.stages)), [f"after {s}" for s in self.stages])
        for i, row in enumerate(self.matrix):
            for j, v in enumerate(row):
                if v is not None:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white", fontsize=8)
        fig.colorbar(image, ax=ax, label=self.metric)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        return atomic_write_bytes(path, buf.getvalue())


def _default_learned_at(tasks: list[str], stages: list[str]) -> list[int]:
    # A task trained by a stage of the same name; otherwise task j is learned at stage j (capped).
    return [stages.index(t) if t in stages else min(j, len(stages) - 1) for j, t in enumerate(tasks)]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: not a readable forgetting-matrix JSON ({exc})") from None
    if not isinstance(data, dict) or "matrix" not in data:
        raise FileFormatError(f"{path}: not a forgetting-matrix JSON (no 'matrix' field)")
    return data
