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
from workbench.pipeline.kinds import stage_kinds
from workbench.pipeline.overrides import apply_overrides
from workbench.pipeline.planner import Resolver
from workbench.pipeline.plugins import load_plugins, plugins_allowed
from workbench.pipeline.problems import PipelineError, Problem, problem_at, schema_problems
from workbench.pipeline.yaml_load import Located, YamlSyntaxError, read_located
from workbench.protocols import apply_protocol
from workbench.settings import MASKED_METHOD


@dataclass
class LoadedPipeline:
    """A validated pipeline: the schema object, where it came from, and its graph tasks."""

    model: schema.Pipeline
    source: str
    base_dir: Path
    provides: dict = field(default_factory=dict)  # {what: {name: plugin file}} from the pipeline's plugins
    # plugins read but not run (not allowed): each file's PluginRead, and the names the stages need from them
    plugin_reads: list = field(default_factory=list)
    plugin_needs: list = field(default_factory=list)

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


def load_pipeline(path_or_chain: str | os.PathLike, overrides: Iterable[str] = (), *, method: str = MASKED_METHOD,
                  preset: str = "quick", compare: Iterable[str] | None = None, allow_plugins: bool | None = None,
                  trust_remote_code: bool = False, protocol: str | None = None) -> LoadedPipeline:
    """Load and fully validate a pipeline file or a chain (``"safety->math->code"``).

    Args:
        path_or_chain: a YAML file, or a chain of task names (see ``workbench.pipeline.chain``).
        overrides: ``"stages.math.rank=16"`` strings applied before validation.
        method, preset, compare: chain options (ignored for files).
        allow_plugins: import the files under ``plugins:`` (their code runs). False reads them without
            running anything (``plugin_reads``; a name only they provide is checked against what was
            read, or left unchecked); None (default) defers to ``WORKBENCH_ALLOW_PLUGINS=1``.
        trust_remote_code: the caller's consent to ``base.trust_remote_code: true``; without it a file
            that sets it is refused (a pipeline file alone cannot turn on code from a model repository).
        protocol: a protocol name (``workbench.protocols``) replacing the file's ``protocol:``; for a
            chain, ``official`` also expands the official continual protocol (``workbench.pipeline.chain``).

    Returns:
        The :class:`LoadedPipeline`.

    Raises:
        PipelineError: every problem found, one ``file:line: path: message`` per line.
        ConfigError: a malformed chain.
    """
    text = str(path_or_chain)
    if looks_like_chain(text):
        tree = expand_chain(text, method=method, preset=preset, compare=list(compare or ()), protocol=protocol)
        origin = f"chain '{text}'"
        located, base_dir, stem = Located(tree, {(): origin}, origin=origin), Path.cwd(), None
    else:
        try:
            located = read_located(text)
        except YamlSyntaxError as exc:
            raise PipelineError([Problem(exc.where, (), exc.message)]) from None
        base_dir, stem = Path(text).resolve().parent, Path(text).stem
    return load_tree(located, base_dir, overrides, default_name=stem, source=text, allow_plugins=allow_plugins,
                     trust_remote_code=trust_remote_code, protocol=protocol)


def load_tree(located: Located, base_dir: Path, overrides: Iterable[str] = (), default_name: str | None = None,
              source: str = "<tree>", *, allow_plugins: bool | None = None,
              trust_remote_code: bool = False, protocol: str | None = None) -> LoadedPipeline:
    """Validate an already parsed tree (a file's or a chain's). Raises PipelineError like load_pipeline."""
    problems = [Problem(i.where, i.path, i.message) for i in located.issues]
    problems += apply_overrides(located, overrides)
    # the protocol's values go under the file's and the overrides' (explicit settings win)
    located.tree, written = apply_protocol(located.tree, protocol)
    if protocol is not None:
        located.locs[("protocol",)] = "--protocol"
    for path in written:
        located.locs.setdefault(path, f"protocol {located.tree.get('protocol')} ({'.'.join(map(str, path))})")
    tree = located.tree
    if not isinstance(tree, dict):
        raise PipelineError(problems + [problem_at(located, (), "a pipeline is a mapping with at least "
                                                               "'stages'; see workbench/pipeline/SCHEMA.md")])
    # before the schema, which must know the stage kinds the plugins register, and the name checks
    plugin_problems, provides, reads = load_plugins(tree.get("plugins"), base_dir, located,
                                                    allow=plugins_allowed(allow_plugins))
    opaque = _opaque_kinds(tree, reads)
    model = None
    try:
        model = schema.pipeline_model(opaque).model_validate(tree)
    except ValidationError as exc:
        problems += schema_problems(exc, located)
    parts = _parts(model, tree, located, base_dir, opaque)
    parts.plugin_reads = reads
    for name, stage in parts.stages.items():  # recorded as needed from the plugins (found or unchecked)
        if stage is not None and stage.kind in opaque:
            parts.unknown(("stages", name, "kind"), "stage kind", stage.kind)
    problems += plugin_problems + all_checks(parts) + _remote_code(model, tree, located, trust_remote_code)
    if problems:
        raise PipelineError(problems)
    if model.name is None and default_name:
        model = model.model_copy(update={"name": default_name})
    return LoadedPipeline(model, source, base_dir, provides, reads, parts.needs)


REMOTE_CODE_REFUSAL = ("refused: true would run Python code from the model's repository, and a pipeline file "
                       "cannot turn that on by itself; if you trust that repository, pass --trust-remote-code on "
                       "the command line (Python API: trust_remote_code=True)")


def _remote_code(model, tree: dict, located: Located, consent: bool) -> list[Problem]:
    """The file asks for remote model code without the caller's consent: one located problem."""
    base = tree.get("base")
    asked = model.base.trust_remote_code if model is not None else (
        isinstance(base, dict) and base.get("trust_remote_code") is True)
    return [] if consent or not asked else [problem_at(located, ("base", "trust_remote_code"), REMOTE_CODE_REFUSAL)]


def _opaque_kinds(tree: dict, reads: list) -> tuple[str, ...]:
    """Stage kinds no registered description has that a plugin read (not run) registers or may register:
    their stages are accepted unchecked (running the plugin decides)."""
    raw = tree.get("stages") if isinstance(tree.get("stages"), dict) else {}
    used = {s.get("kind") for s in raw.values() if isinstance(s, dict) and isinstance(s.get("kind"), str)}
    return tuple(sorted(k for k in used - set(stage_kinds().names())
                        if any(k in r.names.get("stage kind", ()) or r.may_register("stage kind") for r in reads)))


def _parts(model, tree: dict, located: Located, base_dir: Path, opaque: tuple[str, ...] = ()) -> Parts:
    """What passed the schema; with a failed pipeline, each stage and section is tried on its own."""
    if model is not None:
        return Parts(dict(model.stages), model.defaults, dict(model.tasks), base_dir, located)
    models = schema.current(opaque)
    stage_model = TypeAdapter(models["Stage"])
    raw_stages = tree.get("stages") if isinstance(tree.get("stages"), dict) else {}
    raw_tasks = tree.get("tasks") if isinstance(tree.get("tasks"), dict) else {}
    stages = {n: _try(stage_model.validate_python, s) for n, s in raw_stages.items()}
    shadows = {n: _shadow(raw_stages[n]) for n, s in stages.items() if s is None}
    defaults = models["Defaults"]
    return Parts(stages, _try(defaults.model_validate, tree.get("defaults") or {}) or defaults(),
                 {n: _try(schema.CustomTask.model_validate, t) for n, t in raw_tasks.items()}, base_dir, located,
                 {n: s for n, s in shadows.items() if s is not None})


def _names(v) -> bool:
    """A well-formed reference value: a name, null, a list of names, or a mapping of lists of names."""
    if isinstance(v, dict):
        return all(isinstance(x, list) and all(isinstance(y, str) for y in x) for x in v.values())
    return isinstance(v, str) or v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v))


def _shadow(raw):
    """A failed stage's references, when they are well-formed, so they are still checked."""
    kinds = stage_kinds()
    if not isinstance(raw, dict) or raw.get("kind") not in kinds:
        return None
    kind = kinds.get(raw["kind"])
    refs = {kind.attrs[f]: raw[f] for f in kind.refs if f in raw}
    return kind.model.model_construct(kind=raw["kind"], **refs) if all(_names(v) for v in refs.values()) else None


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
             **options) -> Validation:
    """Check everything without loading weights; with an existing ``run_dir``, also plan hits/misses.

    Args:
        options: chain options, ``allow_plugins`` and ``trust_remote_code``, as for :func:`load_pipeline`
            (plugins not allowed are read, never run: see ``Validation.pipeline.plugin_needs``).

    Raises:
        PipelineError: as :func:`load_pipeline`. Nothing is created on disk either way.
    """
    from workbench.graph.engine import plan

    pipeline = load_pipeline(path_or_chain, overrides, **options)
    rows = plan(pipeline, run_dir) if run_dir is not None and Path(run_dir).is_dir() else None
    return Validation(pipeline, rows)
