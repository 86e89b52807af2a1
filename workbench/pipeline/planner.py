"""From a validated pipeline to graph tasks: fill in defaults, bind references, name the data files.

Each stage's task carries its *resolved* parameters (every default written out, the base model
included), so the run store's key changes exactly when something that affects the stage changes.
Reference fields become task inputs (roles ``from``, ``mask``, ``exclude.0``, ``adapters.1``,
``forgetting.lora.2``, ...). What a kind resolves, references and uses is its description's
(``workbench/pipeline/kinds.py``); nothing here is written per kind.
"""

from __future__ import annotations

from pathlib import Path

from workbench.graph.scheduler import check_dependencies
from workbench.graph.task import Task
from workbench.pipeline.checks import is_local, resolve_path
from workbench.pipeline.kinds import role, stage_kinds


class Resolver:
    """Resolves stages of one validated pipeline (``base_dir``: where relative data paths start).

    What a kind's ``resolve`` and ``uses`` may read: ``stages`` (name -> stage), ``defaults``,
    :meth:`task_spec`.
    """

    def __init__(self, pipe, base_dir: Path, provides: dict | None = None):
        self.pipe, self.base_dir, self.provides = pipe, Path(base_dir), provides or {}
        self.stages, self.defaults = dict(pipe.stages), pipe.defaults

    def task_spec(self, name: str) -> dict | None:
        """A custom task's definition with its path made absolute, ``{"options": ...}`` for a registered task
        the file gives options, None for a registered task as it is."""
        custom = self.pipe.tasks.get(name)
        if custom is None or (custom.path is None and not custom.options):
            return None
        if custom.path is None:
            return {"options": dict(custom.options)}
        spec = custom.model_dump(exclude={"options"})
        if is_local(custom.path):
            spec["path"] = str(resolve_path(custom.path, self.base_dir).resolve())
        return spec

    def files(self, task_names) -> list[str]:
        specs = [self.task_spec(t) for t in task_names]
        return [s["path"] for s in specs if s and s.get("path") and is_local(s["path"])]

    def _kind(self, name: str):
        """The stage's kind description; None for a kind only a plugin that was read (not run) defines."""
        kinds = stage_kinds()
        kind = self.stages[name].kind
        return kinds.get(kind) if kind in kinds else None

    def uses(self, name: str) -> list[tuple]:
        """``(path, what, registered name)`` the stage depends on."""
        kind = self._kind(name)
        return [] if kind is None else [u for u in kind.uses(self.stages[name], self) if u[2] is not None]

    def task_names(self, name: str) -> list[str]:
        return [n for _, what, n in self.uses(name) if what == "task"]

    def plugin_files(self, name: str) -> list[str]:
        """The plugin files that define the kind, method, strategy or tasks a stage uses: part of its key."""
        used = [("stage kind", self.stages[name].kind), *((what, n) for _, what, n in self.uses(name))]
        return sorted({self.provides[what][n] for what, n in used if n in self.provides.get(what, {})})

    def params(self, name: str) -> dict:
        """The resolved parameters of one stage (no references: those are inputs)."""
        stage, kind = self.stages[name], self._kind(name)
        own = stage.model_dump(mode="json", exclude={"kind"}) if kind is None else kind.resolved(stage, self)
        return {"base": self.pipe.base.model_dump(), **own}

    def roles(self, name: str) -> list[tuple[str, str]]:
        """(role, referenced stage) pairs: ``field``, ``field.i`` in a list, ``field.group.i`` in a mapping."""
        stage, kind = self.stages[name], self._kind(name)
        if kind is None:
            return []
        return [(role(f, sub), ref) for f in kind.refs for sub, ref in kind.ref_items(stage, f)]

    def tasks(self) -> dict[str, Task]:
        """Every stage as a :class:`Task`, built dependencies first.

        Raises:
            GraphError: a cycle or dangling reference (validation reports these earlier, with lines).
        """
        order = check_dependencies((n, list(dict.fromkeys(r for _, r in self.roles(n)))) for n in self.stages)
        built: dict[str, Task] = {}
        for name in order:
            inputs = [(r, built[ref]) for r, ref in self.roles(name)]
            built[name] = Task.make(name, self.stages[name].kind, self.params(name), inputs,
                                    self.files(self.task_names(name)) + self.plugin_files(name))
        return built

    def resolved(self) -> dict:
        """The pipeline as it will run, for ``pipeline.resolved.yaml``."""
        head = self.pipe.model_dump(mode="json", by_alias=True, exclude={"stages"})
        stages = {}
        for name, stage in self.stages.items():
            params = self.params(name)
            params.pop("base")
            kind = self._kind(name)
            refs = {f: kind.value(stage, f) for f in kind.refs} if kind is not None else {}
            stages[name] = {"kind": stage.kind, **refs, **params}
        return {**head, "stages": stages}
