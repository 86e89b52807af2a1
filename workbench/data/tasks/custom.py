"""User tasks from a local JSON / JSON-lines / CSV / parquet file or a Hugging Face hub dataset id.

The user names the columns: ``prompt_field`` (the instruction), optional ``input_field`` (joined to the
prompt after a blank line) and ``response_field``. Records whose prompt hashes into the held-out 10 %
(:func:`workbench.data.selection.is_heldout`) are kept out of training and serve as the ``heldout`` eval
split and the held-out pairs. Hub ids go through ``datasets.load_dataset`` (which needs the network
unless the dataset is cached; offline it fails with a one-line :class:`DataError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.data.readers import (JSON_SUFFIXES, TABLE_SUFFIXES, DataError, load_hf_dataset, read_records,
                                    read_table, report_bad)
from workbench.data.selection import join_instruction
from workbench.data.task import Task, pair
from workbench.data.tasks.common import split_heldout
from workbench.errors import ConfigError

LOCAL_SUFFIXES = JSON_SUFFIXES + tuple(TABLE_SUFFIXES)


def is_local(path_or_id: str) -> bool:
    """Whether ``path_or_id`` names a local file (existing, or shaped like a path) rather than a hub id."""
    text = str(path_or_id)
    return (Path(text).expanduser().exists() or Path(text).suffix in LOCAL_SUFFIXES
            or text.startswith(("/", ".", "~")))


@dataclass(frozen=True)
class CustomTask(Task):
    """A task read from one user file or hub dataset (see the module docstring).

    Attributes:
        path: local file path or hub dataset id.
        prompt_field, response_field: the columns holding the instruction and the answer.
        input_field: optional column appended to the prompt (Alpaca's ``input``).
        split: the hub split to load (ignored for local files).
    """

    path: str = ""
    prompt_field: str = "instruction"
    response_field: str = "output"
    input_field: str | None = None
    split: str = "train"

    def eval_splits(self, data_dir=None) -> list[str]:
        return ["heldout"]

    def raw_rows(self) -> list[tuple[str, dict]]:
        """``(where, record)`` pairs of the source, local or hub."""
        if is_local(self.path):
            path = Path(self.path).expanduser()
            if path.suffix in JSON_SUFFIXES:
                return read_records(path, self.on_error)
            if path.suffix in TABLE_SUFFIXES:
                return read_table(path)
            raise DataError(f"{path}: unsupported file type '{path.suffix}'; expected one of {', '.join(LOCAL_SUFFIXES)}")
        dataset = load_hf_dataset(self.path, split=self.split, what=f"hub dataset '{self.path}'")
        return [(f"{self.path}[{self.split}]:row {i}", row) for i, row in enumerate(dataset)]

    def check_columns(self, rows: list[tuple[str, dict]]) -> None:
        """Refuse a field mapping that names a column no record has.

        Raises:
            DataError: naming the column, the mapping field and the available columns.
        """
        available = sorted({key for _, record in rows for key in record})
        for role in ("prompt_field", "response_field", "input_field"):
            column = getattr(self, role)
            if column is not None and column not in available:
                raise DataError(f"{self.path}: {role} names missing column '{column}'; "
                                f"available: {', '.join(available) or 'none'}")

    def all_pairs(self) -> list[dict]:
        """Every usable pair in source order; malformed rows are skipped or refused per ``on_error``."""
        rows = self.raw_rows()
        if not rows:
            raise DataError(f"{self.path}: empty dataset (task '{self.name}')")
        self.check_columns(rows)
        out = []
        for where, record in rows:
            prompt, response = record.get(self.prompt_field), record.get(self.response_field)
            extra = record.get(self.input_field) if self.input_field else ""
            if not isinstance(prompt, str) or not isinstance(response, str) or not prompt.strip():
                report_bad(where, f"'{self.prompt_field}' and '{self.response_field}' must be non-empty text", self.on_error)
                continue
            out.append(pair(join_instruction(prompt, "" if extra is None else str(extra)), response))
        return out

    def load_train(self, root, seed, limit):
        return split_heldout(self.all_pairs(), heldout=False)

    def load_heldout(self, root):
        return split_heldout(self.all_pairs(), heldout=True)

    def load_eval(self, split, root):
        return self.load_heldout(root)


def custom_task(name: str, path_or_hub_id: str, prompt_field: str = "instruction", response_field: str = "output",
                input_field: str | None = None, kind: str = "custom", split: str = "train",
                on_error: str = "skip", description: str = "", license: str = "") -> CustomTask:
    """Define a task from a local file (.json, .jsonl, .csv, .parquet) or a hub dataset id.

    Args:
        name: the task name.
        path_or_hub_id: a local file or an id such as ``sahil2801/CodeAlpaca-20k``.
        prompt_field, response_field, input_field: the column mapping.
        kind: the task kind (any of ``workbench.data.task.KINDS``; evaluation is the ``heldout`` split).
        split: hub split to read.
        on_error: ``"skip"`` or ``"refuse"`` malformed rows.

    Returns:
        A :class:`CustomTask`; the source is read lazily, when records are asked for.

    Raises:
        ConfigError: empty name or path, bad kind or policy.
    """
    if not str(name).strip() or not str(path_or_hub_id).strip():
        raise ConfigError("custom task needs a non-empty name and path or hub id")
    return CustomTask(name=name, kind=kind, description=description or f"custom task from {path_or_hub_id}",
                      source=str(path_or_hub_id), license=license, on_error=on_error, path=str(path_or_hub_id),
                      prompt_field=prompt_field, response_field=response_field, input_field=input_field, split=split)
