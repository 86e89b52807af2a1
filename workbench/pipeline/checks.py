"""Checks that need the whole pipeline: references, cycles, registered names, masks that must be disjoint.

Each check takes the stages that passed the schema (a stage that failed it is still a known *name*, so
references to it are not reported twice) and returns problems; none raises, so every error is
reported in one go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from workbench.errors import did_you_mean
from workbench.graph.scheduler import find_cycles, format_cycle
from workbench.pipeline import names, schema
from workbench.pipeline.problems import Problem, problem_at, schema_problems
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

    def referring(self):
        """(name, stage) for every stage whose references can be checked."""
        return [(n, s) for n, s in {**self.stages, **self.shadows}.items() if s is not None]


def all_checks(parts: Parts) -> list[Problem]:
    """Run every cross-stage check."""
    problems = []
    for check in (check_refs, check_cycles, check_tasks, check_custom_tasks, check_methods, check_merges,
                  check_scopes, check_disjoint):
        problems.extend(check(parts))
    return problems


def _ok(parts: Parts, kind: str | None = None):
    """(name, stage) for stages that passed the schema, optionally of one kind."""
    return [(n, s) for n, s in parts.stages.items() if s is not None and (kind is None or s.kind == kind)]


def _ref_paths(name: str, stage):
    """(path, referenced name) for every reference of a stage."""
    for field, refs in schema.refs_of(stage).items():
        value = getattr(stage, "from_" if field == "from" else field)
        for i, ref in enumerate(refs):
            yield (("stages", name, field, i) if isinstance(value, list) else ("stages", name, field)), ref


def check_refs(parts: Parts) -> list[Problem]:
    """Every reference names an existing stage of an allowed kind, and not the stage itself."""
    out = []
    for name, stage in parts.referring():
        for path, ref in _ref_paths(name, stage):
            allowed = schema.REF_FIELDS[stage.kind][path[2]]
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
        deps[n] = [r for _, r in _ref_paths(n, s) if r != n and r in parts.stages]
    return deps


def check_cycles(parts: Parts) -> list[Problem]:
    """A cycle is reported once, at its first stage, as ``a -> b -> a``."""
    return [problem_at(parts.located, ("stages", c[0]), f"cycle: {format_cycle(c)}")
            for c in find_cycles(dependencies(parts)) if len(c) > 1]


def _task_uses(parts: Parts):
    for name, stage in _ok(parts):
        if stage.kind in ("train", "continue"):
            yield ("stages", name, "task"), stage.task
        elif stage.kind == "evaluate":
            for i, t in enumerate(stage.tasks):
                yield ("stages", name, "tasks", i), t


def check_tasks(parts: Parts) -> list[Problem]:
    """Task names are registered or defined under ``tasks:`` (skipped while no task registry exists)."""
    registered = names.known_names("task")
    if registered is None:
        return []
    known = sorted(set(registered) | set(parts.tasks))
    return [problem_at(parts.located, path, f"unknown task '{t}'{did_you_mean(t, known)}; valid: {', '.join(known)}")
            for path, t in _task_uses(parts) if t not in known]


def is_local(path: str) -> bool:
    """Whether a custom task's ``path`` names a local file rather than a hub dataset id."""
    return Path(path).suffix in LOCAL_SUFFIXES or path.startswith(("/", ".", "~"))


def resolve_path(path: str, base_dir: Path) -> Path:
    """A data path as written, relative to the pipeline file's directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def check_custom_tasks(parts: Parts) -> list[Problem]:
    """Local data files exist; a custom task does not shadow a registered one."""
    out, registered = [], names.known_names("task") or []
    for tname, task in parts.tasks.items():
        if tname in registered:
            out.append(problem_at(parts.located, ("tasks", tname),
                                  f"task '{tname}' is already a registered task; choose another name"))
        if task is not None and is_local(task.path) and not resolve_path(task.path, parts.base_dir).is_file():
            out.append(problem_at(parts.located, ("tasks", tname, "path"),
                                  f"file not found: {resolve_path(task.path, parts.base_dir)}"))
    return out


def resolved_method(parts: Parts, name: str, seen: frozenset = frozenset()) -> str | None:
    """A stage's method: its own, else (continue) its source's, else (train) the default."""
    stage = parts.stages.get(name)
    if stage is None or name in seen or stage.kind not in ("train", "continue"):
        return None
    if stage.method:
        return stage.method
    if stage.kind == "train":
        return parts.defaults.method
    return resolved_method(parts, stage.from_, seen | {name})


def uses_mask(method: str) -> bool | None:
    """Whether a method trains inside a mask (from its registry entry; by name without a registry)."""
    reg = names.registry("method")
    if reg is None:
        return method == "lori_s"
    return getattr(reg.get(method), "uses_mask", None) if method in reg else None


def check_methods(parts: Parts) -> list[Problem]:
    """Method names are registered; a masked method has a mask, an unmasked one none."""
    out, known = [], names.known_names("method")
    if known is not None and parts.defaults.method not in known:
        m = parts.defaults.method
        out.append(problem_at(parts.located, ("defaults", "method"),
                              f"unknown method '{m}'{did_you_mean(m, known)}; valid: {', '.join(known)}"))
    for name, stage in _ok(parts):
        if stage.kind not in ("train", "continue"):
            continue
        if known is not None and stage.method and stage.method not in known:
            out.append(problem_at(parts.located, ("stages", name, "method"), f"unknown method '{stage.method}'"
                                  f"{did_you_mean(stage.method, known)}; valid: {', '.join(known)}"))
            continue
        out.extend(_mask_problem(parts, name, stage))
    return out


def _mask_problem(parts: Parts, name: str, stage) -> list[Problem]:
    method = resolved_method(parts, name)
    needs = uses_mask(method) if method else None
    if needs and stage.mask is None:
        return [problem_at(parts.located, ("stages", name),
                           f"method {method} trains inside a sparse mask: add 'mask: <a calibrate stage>'")]
    if needs is False and stage.mask is not None:
        return [problem_at(parts.located, ("stages", name, "mask"),
                           f"method {method} takes no mask; use a masked method (e.g. lori_s) or drop 'mask'")]
    return []


def check_merges(parts: Parts) -> list[Problem]:
    """Merge strategies are registered and their params fit the strategy's params model."""
    out, known = [], names.known_names("merge strategy")
    for name, stage in _ok(parts, "merge"):
        if known is not None and stage.strategy not in known:
            out.append(problem_at(parts.located, ("stages", name, "strategy"), f"unknown merge strategy "
                                  f"'{stage.strategy}'{did_you_mean(stage.strategy, known)}; valid: {', '.join(known)}"))
            continue
        model = names.params_model("merge strategy", stage.strategy)
        if model is not None:
            try:
                model.model_validate(stage.params)
            except ValidationError as exc:
                out.extend(schema_problems(exc, parts.located, ("stages", name, "params")))
    return out


def check_scopes(parts: Parts) -> list[Problem]:
    """Calibration scopes are registered mask scopes."""
    known = names.known_names("mask scope")
    if known is None:
        return []
    return [problem_at(parts.located, ("stages", n, "scope"),
                       f"unknown mask scope '{s.scope}'{did_you_mean(s.scope, known)}; valid: {', '.join(known)}")
            for n, s in _ok(parts, "calibrate") if s.scope not in known]


def density(parts: Parts, name: str) -> float:
    """The fraction of positions a calibrate stage keeps (1 - sparsity)."""
    stage = parts.stages[name]
    return 1.0 - (stage.sparsity if stage.sparsity is not None else parts.defaults.sparsity)


def _exclusion_closure(parts: Parts, name: str) -> list[str]:
    """Every calibrate stage that ``name`` must be disjoint from, directly or through its exclusions."""
    seen, stack = [], list(parts.stages[name].exclude)
    while stack:
        ref = stack.pop()
        target = parts.stages.get(ref)
        if ref in seen or ref == name or target is None or target.kind != "calibrate":
            continue
        seen.append(ref)
        stack.extend(target.exclude)
    return seen


def check_disjoint(parts: Parts) -> list[Problem]:
    """Disjoint masks cannot together keep more than every position: their densities must sum to <= 1."""
    out = []
    for name, _ in _ok(parts, "calibrate"):
        group = [name, *_exclusion_closure(parts, name)]
        total = sum(density(parts, n) for n in group)
        if len(group) > 1 and total > 1.0 + 1e-9:
            parts_text = ", ".join(f"{n} {density(parts, n):.2f}" for n in group)
            out.append(problem_at(parts.located, ("stages", name, "exclude"),
                                  f"masks cannot be disjoint: densities ({parts_text}) add up to {total:.2f} > 1; "
                                  "raise the sparsity"))
    return out
