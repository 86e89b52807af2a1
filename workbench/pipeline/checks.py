"""Checks that need the whole pipeline: references, cycles, registered names, and each kind's own checks.

Each check takes the stages that passed the schema (a stage that failed it is still a known *name*, so
references to it are not reported twice) and returns problems; none raises, so every error is
reported in one go. What a kind references, which names it uses and its own checks (a masked method
needs a mask, masks that must be disjoint, merge params) come from its description
(``workbench/pipeline/kinds.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import ConfigError, did_you_mean
from workbench.graph.scheduler import find_cycles, format_cycle
from workbench.pipeline import names, schema
from workbench.pipeline.kinds import stage_kinds
from workbench.pipeline.plugin_scan import NeededName
from workbench.pipeline.problems import Problem, problem_at
from workbench.pipeline.yaml_load import Located

LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".tsv")


@dataclass
class Parts:
    """What the schema accepted: stages by name (None where a stage failed), defaults, custom tasks."""

    stages: dict
    defaults: schema.Defaults
    tasks: dict
    base_dir: Path
    located: Located
    shadows: dict = field(default_factory=dict)  # failed stages whose references are still checkable
    plugin_reads: list = field(default_factory=list)  # plugins read, not run (plugin_scan.PluginRead)
    needs: list = field(default_factory=list)  # NeededName, filled by the name checks from plugin_reads

    def referring(self):
        """(name, stage) for every stage whose references can be checked."""
        return [(n, s) for n, s in {**self.stages, **self.shadows}.items() if s is not None]

    def known(self, what: str) -> list[str] | None:
        """Registered ``what`` names plus those the plugins were read to register; None: check skipped."""
        registered = names.known_names(what)
        if registered is None:
            return None
        return sorted(set(registered).union(*(r.names.get(what, ()) for r in self.plugin_reads)))

    def unknown(self, path: tuple, what: str, name: str) -> bool:
        """Whether using ``name`` is an error. A name only plugins that were read (not run) provide, or
        may still provide, is not: it is recorded in :attr:`needs` (found, or unchecked) instead."""
        registered = names.known_names(what)
        if registered is None or name in registered:
            return False
        found = tuple(str(r.path) for r in self.plugin_reads if name in r.names.get(what, ()))
        maybe = found or tuple(str(r.path) for r in self.plugin_reads if r.may_register(what))
        if maybe:
            self.needs.append(NeededName(tuple(path), what, name, maybe, bool(found)))
        return not maybe


def all_checks(parts: Parts) -> list[Problem]:
    """Run every cross-stage check, then each stage's kind checks."""
    problems = []
    for check in (check_refs, check_cycles, check_names, check_custom_tasks, check_kinds):
        problems.extend(check(parts))
    return problems


def _ok(parts: Parts):
    """(name, stage, kind description) for stages that passed the schema and whose kind is registered."""
    kinds = stage_kinds()
    return [(n, s, kinds.get(s.kind)) for n, s in parts.stages.items() if s is not None and s.kind in kinds]


def _ref_paths(name: str, stage):
    """(path, referenced name) for every reference of a stage."""
    kinds = stage_kinds()
    if stage.kind not in kinds:
        return
    kind = kinds.get(stage.kind)
    for f in kind.refs:
        for sub, ref in kind.ref_items(stage, f):
            yield ("stages", name, f, *sub), ref


def check_refs(parts: Parts) -> list[Problem]:
    """Every reference names an existing stage of an allowed kind, and not the stage itself."""
    out = []
    for name, stage in parts.referring():
        for path, ref in _ref_paths(name, stage):
            allowed = stage_kinds().get(stage.kind).refs[path[2]]
            target = parts.stages.get(ref)
            if ref == name:
                msg = f"stage '{name}' refers to itself: {format_cycle([name])}"
            elif ref not in parts.stages:
                msg = f"unknown stage '{ref}'{did_you_mean(ref, parts.stages)}"
            elif target is not None and target.kind not in allowed:
                msg = f"'{ref}' is a {target.kind} stage; {path[2]} needs a {' or '.join(allowed)} stage"
            else:
                continue
            out.append(problem_at(parts.located, path, msg))
    return out


def dependencies(parts: Parts) -> dict[str, list[str]]:
    """name -> referenced existing stage names (self-references left out: check_refs reports them)."""
    deps = {n: [] for n in parts.stages}
    for n, s in parts.referring():
        deps[n] = list(dict.fromkeys(r for _, r in _ref_paths(n, s) if r != n and r in parts.stages))
    return deps


def check_cycles(parts: Parts) -> list[Problem]:
    """A cycle is reported once, at its first stage, as ``a -> b -> a``."""
    return [problem_at(parts.located, ("stages", c[0]), f"cycle: {format_cycle(c)}")
            for c in find_cycles(dependencies(parts)) if len(c) > 1]


def _unknown_name(parts: Parts, path: tuple, what: str, name: str) -> list[Problem]:
    """The problem for a name that is not registered (custom tasks count as tasks), or none."""
    if what == "task" and name in parts.tasks or not parts.unknown(path, what, name):
        return []
    known = sorted(set(parts.known(what)) | (set(parts.tasks) if what == "task" else set()))
    return [problem_at(parts.located, path, f"unknown {what} '{name}'{did_you_mean(name, known)}; "
                                            f"valid: {', '.join(known)}")]


def check_names(parts: Parts) -> list[Problem]:
    """Registered names (tasks, methods, merge strategies, mask scopes) exist, where a stage writes them."""
    out = _unknown_name(parts, ("defaults", "method"), "method", parts.defaults.method)
    for name, stage, kind in _ok(parts):
        for path, what, used in kind.uses(stage, parts):
            if path is not None and used is not None:
                out.extend(_unknown_name(parts, ("stages", name, *path), what, used))
    return out


def check_kinds(parts: Parts) -> list[Problem]:
    """Each stage's own checks (its kind's ``checks``)."""
    return [p for name, stage, kind in _ok(parts) for check in kind.checks for p in check(parts, name, stage)]


def is_local(path: str) -> bool:
    """Whether a custom task's ``path`` names a local file rather than a hub dataset id."""
    return Path(path).suffix in LOCAL_SUFFIXES or path.startswith(("/", ".", "~"))


def resolve_path(path: str, base_dir: Path) -> Path:
    """A data path as written, relative to the pipeline file's directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def check_custom_tasks(parts: Parts) -> list[Problem]:
    """A custom task has a path whose local file exists; a registered task's name carries only options,
    and they are options that task has."""
    out, registered = [], names.known_names("task")
    for tname, task in parts.tasks.items():
        if task is None:
            continue
        if tname in registered:
            out += _builtin_task_problems(parts, tname, task)
        elif task.path is None:
            out.append(problem_at(parts.located, ("tasks", tname),
                                  f"custom task '{tname}' needs a path (a data file or hub dataset id); "
                                  f"registered tasks that take options: {', '.join(sorted(registered))}"))
        elif task.options:
            out.append(problem_at(parts.located, ("tasks", tname, "options"),
                                  "options are for registered tasks; a custom task is set by its own fields"))
        elif is_local(task.path) and not resolve_path(task.path, parts.base_dir).is_file():
            out.append(problem_at(parts.located, ("tasks", tname, "path"),
                                  f"file not found: {resolve_path(task.path, parts.base_dir)}"))
    return out


def _builtin_task_problems(parts: Parts, tname: str, task) -> list[Problem]:
    """Under a registered task's name only ``options`` may be given, each one the task has."""
    from workbench.data.registry import get_task

    # the resolved pipeline a run writes spells every field out at its default: that is still options alone
    given = [f for f, info in type(task).model_fields.items() if f != "options" and getattr(task, f) != info.default]
    if given:
        return [problem_at(parts.located, ("tasks", tname),
                           f"task '{tname}' is already a registered task: give it only 'options' (or choose "
                           f"another name for a custom task)")]
    try:
        get_task(tname, **task.options)
    except ConfigError as exc:
        return [problem_at(parts.located, ("tasks", tname, "options"), str(exc))]
    return []
