"""The task contract: a stage is a frozen, hashable value whose inputs are other stages.

Equality ignores the stage's *name*: two stages with the same kind, parameters, inputs and input files
are one piece of work, so a scheduler that puts tasks in a set runs it once (mergekit's ``Task``). The
identity (``digest``) is computed once at construction, so hashing a deep graph with diamonds stays
linear instead of re-walking every path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from workbench.hashing import sha256_text


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text whatever the key order.

    Raises:
        TypeError: a value is not JSON-serialisable (sets, objects): a spec must be plain data.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# Resolved parameters that say how a stage runs, not what it computes: left out of the run store's cache
# key (``Task.key_params``). ``launch`` (data-parallel processes, FSDP): N processes give the one-process
# result to float tolerance (workbench/stages/train_stage.py ``Launch``).
KEY_NEUTRAL_PARAMS = ("launch",)


@dataclass(frozen=True, eq=False)
class Task:
    """One stage of a run.

    Attributes:
        name: the stage name (a directory-safe identifier); not part of the identity.
        kind: which executor runs it (``train``, ``calibrate``, ...).
        params_json: the resolved parameters as canonical JSON (read them with :attr:`params`).
        inputs: ``(role, task)`` pairs, e.g. ``("from", probe)``, ``("adapters.1", math)``.
        files: paths of input files whose *content* is part of the cache key (data files).
    """

    name: str
    kind: str
    params_json: str
    inputs: tuple[tuple[str, "Task"], ...] = ()
    files: tuple[str, ...] = ()
    digest: str = field(init=False, repr=False)

    def __post_init__(self):
        body = {"kind": self.kind, "params": json.loads(self.params_json),
                "inputs": [[role, t.digest] for role, t in self.inputs], "files": sorted(self.files)}
        object.__setattr__(self, "digest", sha256_text(canonical_json(body)))

    @classmethod
    def make(cls, name: str, kind: str, params: Mapping, inputs=(), files=()) -> "Task":
        """Build a task from a plain params mapping (key order does not matter)."""
        return cls(name, kind, canonical_json(dict(params)), tuple(inputs), tuple(str(f) for f in files))

    @property
    def params(self) -> dict:
        """A fresh copy of the resolved parameters."""
        return json.loads(self.params_json)

    @property
    def key_params(self) -> dict:
        """The parameters that make the stage's cache key: :attr:`params` less ``KEY_NEUTRAL_PARAMS``."""
        return {k: v for k, v in self.params.items() if k not in KEY_NEUTRAL_PARAMS}

    def input(self, role: str) -> "Task | None":
        """The task bound to ``role`` (``"from"``, ``"mask"``), or None."""
        return next((t for r, t in self.inputs if r == role), None)

    def inputs_for(self, field_name: str) -> list["Task"]:
        """Tasks of a list field in order: ``inputs_for("adapters")`` -> roles adapters.0, adapters.1, ..."""
        single = self.input(field_name)
        if single is not None:
            return [single]
        prefix = field_name + "."
        return [t for r, t in self.inputs if r.startswith(prefix)]

    def __eq__(self, other) -> bool:
        return isinstance(other, Task) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)


@dataclass
class StageResult:
    """What an executor hands back: named artifact paths (files or directories) and JSON metrics."""

    artifacts: dict[str, Path] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
