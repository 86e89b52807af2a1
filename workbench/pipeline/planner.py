"""From a validated pipeline to graph tasks: fill in defaults, bind references, name the data files.

Each stage's task carries its *resolved* parameters (every default written out, the base model
included), so the run store's key changes exactly when something that affects the stage changes.
Reference fields become task inputs (roles ``from``, ``mask``, ``exclude.0``, ``adapters.1``, ...).
"""

from __future__ import annotations

from pathlib import Path

from workbench.graph.scheduler import check_dependencies
from workbench.graph.task import Task
from workbench.pipeline import schema
from workbench.pipeline.checks import is_local, resolve_path

_LOOP = ("lr", "batch_size", "grad_accum", "max_length", "max_samples", "warmup_ratio", "weight_decay",
         "scheduler", "seed", "checkpoint_every")
_SHAPE = ("rank", "alpha", "dropout", "target_modules", "options")


def _pick(stage, defaults: schema.Defaults, fields) -> dict:
    return {f: getattr(stage, f) if getattr(stage, f) is not None else getattr(defaults, f) for f in fields}


def _length(stage, defaults: schema.Defaults) -> dict:
    """steps/epochs: the stage's pair if it sets either, else the defaults', else one epoch."""
    source = stage if (stage.steps is not None or stage.epochs is not None) else defaults
    steps, epochs = source.steps, source.epochs
    return {"steps": steps, "epochs": 1.0 if steps is None and epochs is None else epochs}


class Resolver:
    """Resolves stages of one validated pipeline (``base_dir``: where relative data paths start)."""

    def __init__(self, pipe: schema.Pipeline, base_dir: Path, provides: dict | None = None):
        self.pipe, self.base_dir, self.provides = pipe, Path(base_dir), provides or {}

    def task_spec(self, name: str) -> dict | None:
        """A custom task's definition with its path made absolute; None for a registered task."""
        custom = self.pipe.tasks.get(name)
        if custom is None:
            return None
        spec = custom.model_dump()
        if is_local(custom.path):
            spec["path"] = str(resolve_path(custom.path, self.base_dir).resolve())
        return spec

    def files(self, task_names) -> list[str]:
        specs = [self.task_spec(t) for t in task_names]
        return [s["path"] for s in specs if s and is_local(s["path"])]

    def plugin_files(self, name: str) -> list[str]:
        """The plugin files that define the method, strategy or tasks a stage uses: part of its key."""
        stage = self.pipe.stages[name]
        used = {"task": self.task_names(name)}
        if stage.kind in ("train", "continue"):
            used["method"] = [self.method(name)]
        if stage.kind == "merge":
            used["merge strategy"] = [stage.strategy]
        return sorted({self.provides[what][n] for what, ns in used.items() for n in ns
                       if n in self.provides.get(what, {})})

    def method(self, name: str) -> str:
        stage = self.pipe.stages[name]
        if stage.method:
            return stage.method
        return self.pipe.defaults.method if stage.kind == "train" else self.method(stage.from_)

    def params(self, name: str) -> dict:
        """The resolved parameters of one stage (no references: those are inputs)."""
        stage, d = self.pipe.stages[name], self.pipe.defaults
        out = {"base": self.pipe.base.model_dump()}
        if stage.kind in ("train", "continue"):
            out.update(task=stage.task, task_spec=self.task_spec(stage.task), method=self.method(name),
                       **_pick(stage, d, _LOOP), **_length(stage, d))
        if stage.kind == "train":
            out.update(_pick(stage, d, _SHAPE), a_seed=stage.a_seed if stage.a_seed is not None else out["seed"])
        elif stage.kind == "calibrate":
            out.update(sparsity=stage.sparsity if stage.sparsity is not None else d.sparsity, scope=stage.scope)
        elif stage.kind == "merge":
            out.update(strategy=stage.strategy, weights=stage.weights, params=stage.params)
        elif stage.kind == "evaluate":
            out.update(tasks=list(stage.tasks), task_specs={t: self.task_spec(t) for t in stage.tasks
                                                            if t in self.pipe.tasks},
                       limit=stage.limit if stage.limit is not None else d.eval_limit,
                       max_new_tokens=stage.max_new_tokens or d.max_new_tokens)
        elif stage.kind == "analyze":
            out.update(compare=stage.compare)
        return out

    def roles(self, name: str) -> list[tuple[str, str]]:
        """(role, referenced stage) pairs; list fields get ``field.i`` roles."""
        stage = self.pipe.stages[name]
        out = []
        for field, refs in schema.refs_of(stage).items():
            is_list = isinstance(getattr(stage, "from_" if field == "from" else field), list)
            out.extend(((f"{field}.{i}" if is_list else field), r) for i, r in enumerate(refs))
        return out

    def task_names(self, name: str) -> list[str]:
        stage = self.pipe.stages[name]
        return [stage.task] if stage.kind in ("train", "continue") else list(getattr(stage, "tasks", []))

    def tasks(self) -> dict[str, Task]:
        """Every stage as a :class:`Task`, built dependencies first.

        Raises:
            GraphError: a cycle or dangling reference (validation reports these earlier, with lines).
        """
        order = check_dependencies((n, [r for _, r in self.roles(n)]) for n in self.pipe.stages)
        built: dict[str, Task] = {}
        for name in order:
            inputs = [(role, built[ref]) for role, ref in self.roles(name)]
            built[name] = Task.make(name, self.pipe.stages[name].kind, self.params(name), inputs,
                                    self.files(self.task_names(name)) + self.plugin_files(name))
        return built

    def resolved(self) -> dict:
        """The pipeline as it will run, for ``pipeline.resolved.yaml``."""
        head = self.pipe.model_dump(mode="json", by_alias=True, exclude={"stages"})
        stages = {}
        for name in self.pipe.stages:
            params = self.params(name)
            params.pop("base")
            stage = self.pipe.stages[name]
            refs = {f: getattr(stage, "from_" if f == "from" else f) for f in schema.REF_FIELDS[stage.kind]}
            stages[name] = {"kind": stage.kind, **refs, **params}
        return {**head, "stages": stages}
