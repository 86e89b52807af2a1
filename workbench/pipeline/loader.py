"""``load_pipeline`` and ``validate``: file or chain -> overrides -> schema -> cross checks -> tasks.

Nothing here loads a weight or creates a directory; a pipeline that fails reports every problem at once
as a :class:`~workbench.pipeline.problems.PipelineError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

from pydantic import TypeAdapter, ValidationError

from workbench.graph.task import Task
from workbench.pipeline import schema
from workbench.pipeline.chain import expand_chain
from workbench.pipeline.checks import Parts, all_checks
from workbench.pipeline.overrides import apply_overrides
from workbench.pipeline.planner import Resolver
from workbench.pipeline.plugins import load_plugins
from workbench.pipeline.problems import PipelineError, Problem, problem_at, schema_problems
from workbench.pipeline.yaml_load import Located, YamlSyntaxError, read_located

_STAGE = TypeAdapter(schema.Stage)


@dataclass
class LoadedPipeline:
    """A validated pipeline: the schema object, where it came from, and its graph tasks."""

    model: schema.Pipeline
    source: str
    base_dir: Path
    provides: dict = field(default_factory=dict)  # {what: {name: plugin file}} from the pipeline's plugins

    @property
    def name(self) -> str:
        return self.model.name or "pipeline"

    @cached_property
    def _resolver(self) -> Resolver:
        return Resolver(self.model, self.base_dir, self.provides)

    @cached_property
    def _tasks(self) -> dict[str, Task]:
        return self._resolver.tasks()

    def tasks(self) -> list[Task]:
        """Every stage as a graph task, dependencies first."""
        return list(self._tasks.values())

    def task(self, name: str) -> Task:
        return self._tasks[name]

    def order(self) -> list[str]:
        return list(self._tasks)

    def resolved(self) -> dict:
        """The pipeline with every default filled in (what ``pipeline.resolved.yaml`` holds)."""
        return self._resolver.resolved()


def looks_like_chain(text: str) -> bool:
    """A chain names tasks, not a file: no existing path, no YAML suffix, no directory separator."""
    p = Path(text)
    return not p.exists() and p.suffix not in (".yaml", ".yml") and os.sep not in text and "/" not in text


def load_pipeline(path_or_chain: str | os.PathLike, overrides: Iterable[str] = (), *, method: str = "lori_s",
                  preset: str = "quick", compare: Iterable[str] | None = None) -> LoadedPipeline:
    """Load and fully validate a pipeline file or a chain (``"safety->math->code"``).

    Args:
        path_or_chain: a YAML file, or a chain of task names (see ``workbench.pipeline.chain``).
        overrides: ``"stages.math.rank=16"`` strings applied before validation.
        method, preset, compare: chain options (ignored for files).

    Returns:
        The :class:`LoadedPipeline`.

    Raises:
        PipelineError: every problem found, one ``file:line: path: message`` per line.
        ConfigError: a malformed chain.
    """
    text = str(path_or_chain)
    if looks_like_chain(text):
        tree = expand_chain(text, method=method, preset=preset, compare=list(compare or ()))
        origin = f"chain '{text}'"
        located, base_dir, stem = Located(tree, {(): origin}, origin=origin), Path.cwd(), None
    else:
        try:
            located = read_located(text)
        except YamlSyntaxError as exc:
            raise PipelineError([Problem(exc.where, (), exc.message)]) from None
        base_dir, stem = Path(text).resolve().parent, Path(text).stem
    return load_tree(located, base_dir, overrides, default_name=stem, source=text)


def load_tree(located: Located, base_dir: Path, overrides: Iterable[str] = (), default_name: str | None = None,
              source: str = "<tree>") -> LoadedPipeline:
    """Validate an already parsed tree (a file's or a chain's). Raises PipelineError like load_pipeline."""
    problems = [Problem(i.where, i.path, i.message) for i in located.issues]
    problems += apply_overrides(located, overrides)
    tree = located.tree
    if not isinstance(tree, dict):
        raise PipelineError(problems + [problem_at(located, (), "a pipeline is a mapping with at least "
                                                               "'stages'; see workbench/pipeline/SCHEMA.md")])
    model = None
    try:
        model = schema.Pipeline.model_validate(tree)
    except ValidationError as exc:
        problems += schema_problems(exc, located)
    # before the name checks, which must see what the plugins register
    plugin_problems, provides = load_plugins(tree.get("plugins"), base_dir, located)
    problems += plugin_problems + all_checks(_parts(model, tree, located, base_dir))
    if problems:
        raise PipelineError(problems)
    if model.name is None and default_name:
        model = model.model_copy(update={"name": default_name})
    return LoadedPipeline(model, source, base_dir, provides)


def _parts(model: schema.Pipeline | None, tree: dict, located: Located, base_dir: Path) -> Parts:
    """What passed the schema; with a failed pipeline, each stage and section is tried on its own."""
    if model is not None:
        return Parts(dict(model.stages), model.defaults, dict(model.tasks), base_dir, located)
    raw_stages = tree.get("stages") if isinstance(tree.get("stages"), dict) else {}
    raw_tasks = tree.get("tasks") if isinstance(tree.get("tasks"), dict) else {}
    stages = {n: _try(_STAGE.validate_python, s) for n, s in raw_stages.items()}
    shadows = {n: _shadow(raw_stages[n]) for n, s in stages.items() if s is None}
    return Parts(stages, _try(schema.Defaults.model_validate, tree.get("defaults") or {}) or schema.Defaults(),
                 {n: _try(schema.CustomTask.model_validate, t) for n, t in raw_tasks.items()}, base_dir, located,
                 {n: s for n, s in shadows.items() if s is not None})


def _shadow(raw):
    """A failed stage's references, when they are well-formed, so they are still checked."""
    if not isinstance(raw, dict) or raw.get("kind") not in schema.KINDS:
        return None
    model = schema.KIND_MODELS[raw["kind"]]
    refs = {f: raw[f] for f in schema.REF_FIELDS[raw["kind"]] if f in raw}
    well_formed = all(isinstance(v, str) or v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v))
                      for v in refs.values())
    return model.model_construct(kind=raw["kind"], **refs) if well_formed else None


def _try(fn, value):
    try:
        return fn(value)
    except ValidationError:
        return None


@dataclass
class Validation:
    """What ``workbench validate`` shows: the pipeline and, when a run directory exists, its plan."""

    pipeline: LoadedPipeline
    plan: list | None = None


def validate(path_or_chain: str | os.PathLike, overrides: Iterable[str] = (), run_dir: str | os.PathLike | None = None,
             **chain_options) -> Validation:
    """Check everything without loading weights; with an existing ``run_dir``, also plan hits/misses.

    Raises:
        PipelineError: as :func:`load_pipeline`. Nothing is created on disk either way.
    """
    from workbench.graph.engine import plan

    pipeline = load_pipeline(path_or_chain, overrides, **chain_options)
    rows = plan(pipeline, run_dir) if run_dir is not None and Path(run_dir).is_dir() else None
    return Validation(pipeline, rows)
