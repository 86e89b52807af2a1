"""The :class:`Task` value: where a task's training, evaluation and held-out records come from.

A task is a frozen dataclass (hashable, so a pipeline stage can carry it). Each kind (safety, math, code,
nlu, custom) is a subclass in ``workbench/data/tasks/<kind>.py`` that says how to read its sources; the
shuffling, limiting, dataset conversion and split checks live here once.

Data location: by default the small subsets shipped in ``workbench/data/samples/<task>/`` are read. Pass
``data_dir=`` (or set ``WORKBENCH_DATA``) to point at full copies laid out like ``../shared/data``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.data.readers import DataError, check_policy, require_file
from workbench.data.selection import shuffled, take
from workbench.errors import ConfigError, unknown_name

KINDS = ("safety", "math", "code", "nlu", "custom")
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
DATA_ENV = "WORKBENCH_DATA"
IDENTITY_FIELDS = ("name", "kind", "description", "source", "license")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The full-data root to read: ``data_dir``, else ``$WORKBENCH_DATA``, else None (shipped samples).

    Raises:
        DataError: when the chosen directory does not exist.
    """
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_ENV) or None
    if chosen is None:
        return None
    root = Path(chosen).expanduser()
    if not root.is_dir():
        origin = "data_dir" if data_dir not in (None, "") else DATA_ENV
        raise DataError(f"{root}: data directory not found ({origin})")
    return root


@dataclass(frozen=True)
class Task:
    """A named task: training pairs, evaluation splits and held-out pairs.

    Attributes:
        name: the registry name (``safety``, ``math``, ...).
        kind: one of ``safety``, ``math``, ``code``, ``nlu``, ``custom``.
        description: one line for ``workbench tasks``.
        source: where the data comes from (repository @ commit : path).
        license: the licence as the source states it.
        on_error: malformed-record policy, ``"skip"`` (warn) or ``"refuse"`` (raise :class:`DataError`).
    """

    name: str
    kind: str
    description: str = ""
    source: str = ""
    license: str = ""
    on_error: str = "skip"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise unknown_name("task kind", self.kind, KINDS)
        check_policy(self.on_error)

    # -- what subclasses provide -------------------------------------------------------------------
    def load_train(self, root: Path | None, seed: int, limit: int | None) -> list[dict]:
        """All training pairs in a deterministic order (subclasses may use seed/limit, e.g. to mix)."""
        raise NotImplementedError

    def load_eval(self, split: str, root: Path | None) -> list[dict]:
        """All records of one evaluation split (``split`` already checked)."""
        raise NotImplementedError

    def load_heldout(self, root: Path | None) -> list[dict]:
        """All held-out ``{"prompt", "response"}`` pairs, never used in training."""
        raise NotImplementedError

    def eval_splits(self, data_dir: str | os.PathLike | None = None) -> list[str]:
        """The names accepted by :meth:`eval_records`."""
        raise NotImplementedError

    # -- public API --------------------------------------------------------------------------------
    def train_records(self, limit: int | None = None, seed: int = 0, data_dir=None) -> list[dict]:
        """Training pairs ``{"prompt": str, "response": str}``, shuffled by ``seed``, at most ``limit``.

        Args:
            limit: how many records (None: all available).
            seed: the shuffle seed; the same seed gives the same records in the same order.
            data_dir: full-data root (default: ``$WORKBENCH_DATA`` or the shipped samples).

        Raises:
            DataError: missing files, malformed records under ``on_error="refuse"``, no records.
        """
        check_limit(limit)
        root = resolve_data_dir(data_dir)
        records = take(shuffled(self.load_train(root, seed, limit), seed), limit)
        return self._nonempty(records, "training records", root)

    def train_dataset(self, limit: int | None = None, seed: int = 0, data_dir=None):
        """:meth:`train_records` as a ``datasets.Dataset`` with columns ``prompt`` and ``response``."""
        import datasets

        return datasets.Dataset.from_list(self.train_records(limit=limit, seed=seed, data_dir=data_dir))

    def eval_records(self, split: str, limit: int | None = None, data_dir=None) -> list[dict]:
        """The first ``limit`` records of an evaluation split (fields depend on the kind; see module docs).

        Raises:
            ConfigError: unknown split (with the valid ones and a did-you-mean).
            DataError: missing files or no records.
        """
        splits = self.eval_splits(data_dir)
        if split not in splits:
            raise unknown_name(f"eval split of task '{self.name}'", split, splits)
        check_limit(limit)
        root = resolve_data_dir(data_dir)
        return self._nonempty(take(self.load_eval(split, root), limit), f"'{split}' records", root)

    def heldout_pairs(self, limit: int | None = None, data_dir=None) -> list[dict]:
        """Held-out ``{"prompt", "response"}`` pairs (not used in training) for the mean-NLL metric."""
        check_limit(limit)
        root = resolve_data_dir(data_dir)
        return self._nonempty(take(self.load_heldout(root), limit), "held-out pairs", root)

    def with_options(self, **options) -> "Task":
        """A copy with some fields changed (``safety_fraction=0.2``, ``on_error="refuse"``, ...).

        Raises:
            ConfigError: an option this task does not have (with a did-you-mean).
        """
        allowed = [f.name for f in dataclasses.fields(self) if f.name not in IDENTITY_FIELDS]
        for key in options:
            if key not in allowed:
                raise unknown_name(f"option of task '{self.name}'", key, allowed)
        return dataclasses.replace(self, **options)

    # -- helpers for subclasses --------------------------------------------------------------------
    def source_file(self, root: Path | None, sample_rel: str, full_rel: str) -> Path:
        """The file to read: ``samples/<sample_rel>`` without a data root, ``root/<full_rel>`` with one.

        Raises:
            DataError: the file does not exist.
        """
        path = SAMPLES_DIR / sample_rel if root is None else root / full_rel
        try:
            return require_file(path)
        except DataError:
            where = "shipped samples" if root is None else f"data directory {root}"
            raise DataError(f"{path}: file not found (task '{self.name}', {where})") from None

    def _nonempty(self, records: list[dict], what: str, root: Path | None) -> list[dict]:
        if not records:
            where = "shipped samples" if root is None else str(root)
            raise DataError(f"task '{self.name}': no {what} ({where})")
        return records


def pair(prompt: str, response: str) -> dict:
    """A training or held-out pair record."""
    return {"prompt": prompt, "response": response}


def check_limit(limit) -> None:
    """Refuse a negative or non-integer limit.

    Raises:
        ConfigError: when ``limit`` is not None and not a non-negative integer.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, got {limit!r}")
