"""Stage kinds: one :class:`StageKind` description per kind, from which everything else is built.

A description says what a kind's stages look like (a pydantic settings model), which of their fields name
other stages and of which kinds, how a stage resolves into the parameters of its graph task (its cache
key), which registered names it uses (tasks, methods, strategies: checked with a did-you-mean, and the
plugin files that define them join the key), its own cross-stage checks, the defaults it adds under
``defaults:``, its line in ``summary.md``, and its executor. The pipeline schema (``schema.py``), the
planner, the checks, the run summary and the engine's executors are all read from :data:`STAGE_KINDS`.

The built-in kinds are ``workbench/stages/<kind>_stage.py``, one file each, listed in the table
``workbench/stages/registry.py``; a plugin adds one with :func:`register_stage_kind`. A description
module must not import torch at module level (``workbench validate`` imports it): executors import
what they need when they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, create_model

from workbench.registry import Registry

STAGE_KINDS: Registry["StageKind"] = Registry("stage kind")
BUILTIN_TABLE = "workbench.stages.registry"  # the module whose import registers the built-in kinds
ADAPTER_KINDS = ("train", "continue", "merge")  # built-in kinds whose stages produce an adapter


class StageSettings(BaseModel):
    """Base of a stage kind's settings model: unknown keys are errors, stages are immutable values.

    The ``kind`` field is added by the registry (``kind: Literal["<name>"]``): do not declare it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _no_uses(stage, ctx) -> list:
    return []


def _no_summary(metrics: dict) -> str:
    return ""


@dataclass(frozen=True)
class StageKind:
    """Everything about one stage kind.

    Attributes:
        name: the YAML ``kind`` (snake_case, like the module file).
        settings: the stage's pydantic model (a :class:`StageSettings`; ``kind`` is added).
        execute: the executor, ``fn(task, inputs, out_dir, context) -> StageResult`` (see
            ``workbench.graph.engine``); imports heavy modules inside, not at module level.
        refs: YAML field -> the kinds a stage named there may have. A field holds a name, a list of names,
            or a mapping of group -> list of names; its graph-task roles are ``field``, ``field.i`` or
            ``field.group.i``.
        resolve: ``(stage, ctx) -> dict``: the resolved parameters (every default written out; the base
            model is added by the planner). ``ctx`` is the planner's Resolver (``ctx.stages``,
            ``ctx.defaults``, ``ctx.task_spec(name)``). Default: every field that is not a reference, as
            validated.
        uses: ``(stage, ctx) -> [(path, what, name)]``: registered names the stage depends on (``what`` a
            key of ``workbench.pipeline.names.SOURCES``: ``task``, ``method``, ``merge strategy``, ...).
            ``path`` (a tuple below the stage, e.g. ``("tasks", 1)``) is where it is written, so an unknown
            name is reported there; None for a name the stage inherits (it only joins the cache key).
        checks: ``(parts, name, stage) -> [Problem]`` cross-stage checks of this kind (see ``checks.py``).
        defaults: a pydantic model whose fields this kind adds under ``defaults:`` (with their defaults).
        summary: ``metrics -> str``: the stage's headline in ``summary.md``.
        doc: one line for listings.
    """

    name: str
    settings: type[BaseModel]
    execute: Callable
    refs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    resolve: Callable[[Any, Any], dict] | None = None
    uses: Callable[[Any, Any], list] = _no_uses
    checks: tuple[Callable, ...] = ()
    defaults: type[BaseModel] | None = None
    summary: Callable[[dict], str] = _no_summary
    doc: str = ""
    model: type[BaseModel] = field(init=False, repr=False, compare=False)
    attrs: dict = field(init=False, repr=False, compare=False)  # YAML field -> attribute name

    def __post_init__(self):
        fields = self.settings.model_fields
        if "kind" in fields:
            raise ValueError(f"stage kind '{self.name}': its settings model declares 'kind'; the registry adds it")
        attrs = {(f.alias or n): n for n, f in fields.items()}
        missing = sorted(set(self.refs) - set(attrs))
        if missing:
            raise ValueError(f"stage kind '{self.name}': reference field(s) {', '.join(missing)} are not "
                             f"fields of {self.settings.__name__}")
        model = create_model(f"{self.settings.__name__}Stage", __base__=self.settings,
                             kind=(Literal[self.name], ...))  # type: ignore[valid-type]
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "attrs", attrs)

    def value(self, stage, yaml_field: str):
        """A stage's value of a YAML field (``from`` reads the ``from_`` attribute)."""
        return getattr(stage, self.attrs.get(yaml_field, yaml_field), None)

    def ref_items(self, stage, yaml_field: str) -> list[tuple[tuple, str]]:
        """``[(sub-path, stage name)]`` of one reference field: ``()`` for a single name, ``(i,)`` in a list,
        ``(group, i)`` in a mapping of lists."""
        value = self.value(stage, yaml_field)
        if value is None:
            return []
        if isinstance(value, str):
            return [((), value)]
        if isinstance(value, Mapping):
            return [((g, i), r) for g, refs in value.items() for i, r in enumerate(refs or ())]
        return [((i,), r) for i, r in enumerate(value)]

    def resolved(self, stage, ctx) -> dict:
        """The stage's resolved parameters (without the base model)."""
        if self.resolve is not None:
            return self.resolve(stage, ctx)
        skip = {self.attrs[f] for f in self.refs} | {"kind"}
        return {n: v for n, v in stage.model_dump(mode="json").items() if n not in skip}


def role(yaml_field: str, sub: tuple) -> str:
    """The graph-task role of a reference: ``from``, ``adapters.1``, ``forgetting.lora.2``."""
    return ".".join([yaml_field, *(str(s) for s in sub)])


def add_stage_kind(kind: StageKind) -> StageKind:
    """Register a description and its executor (the engine's ``EXECUTORS``).

    Raises:
        ValueError: the name is taken by another description or executor, or a field of its ``defaults``
            is already a training setting or another kind's default.
    """
    from workbench.graph.engine import EXECUTORS
    from workbench.settings import TrainSettings

    if kind.name in STAGE_KINDS and STAGE_KINDS.get(kind.name) is not kind:
        raise ValueError(f"stage kind '{kind.name}' is already registered")
    if kind.name in EXECUTORS and EXECUTORS.get(kind.name) is not kind.execute:
        raise ValueError(f"stage kind '{kind.name}': another executor is registered under that name")
    taken = {n: "a training setting" for n in TrainSettings.model_fields}
    for other in STAGE_KINDS:
        taken.update({n: f"stage kind '{other}'" for n in _defaults_of(STAGE_KINDS.get(other)) if other != kind.name})
    clash = sorted(n for n in _defaults_of(kind) if n in taken)
    if clash:
        raise ValueError(f"stage kind '{kind.name}': defaults {', '.join(clash)} already belong to "
                         f"{', '.join(sorted({taken[n] for n in clash}))}")
    STAGE_KINDS.add(kind.name, kind, params=kind.model, reference=kind.doc)
    if kind.name not in EXECUTORS:
        EXECUTORS.add(kind.name, kind.execute)
    return kind


def _defaults_of(kind: StageKind) -> tuple[str, ...]:
    return tuple(kind.defaults.model_fields) if kind.defaults is not None else ()


def register_stage_kind(name: str, settings: type[BaseModel], *, refs: Mapping[str, tuple[str, ...]] | None = None,
                        resolve: Callable | None = None, uses: Callable | None = None, checks=(),
                        defaults: type[BaseModel] | None = None, summary: Callable[[dict], str] | None = None,
                        doc: str = "") -> Callable[[Callable], Callable]:
    """Decorator registering a stage kind whose executor is the decorated function.

    Example (a plugin file named under ``plugins:``)::

        import workbench

        class NormsSettings(workbench.StageSettings):
            adapter: str                 # a stage name: a reference field
            top: int = 5

        @workbench.register_stage_kind("norms", NormsSettings, refs={"adapter": ("train", "continue", "merge")},
                                       summary=lambda m: f"largest norm {m['largest']:.3f}")
        def run_norms(task, inputs, out_dir, context):
            ...
            return workbench.StageResult(artifacts={...}, metrics={"largest": ...})

    Args:
        name: the YAML ``kind``.
        settings: the stage's fields (a :class:`StageSettings` subclass; ``kind`` is added).
        refs, resolve, uses, checks, defaults, summary, doc: as the :class:`StageKind` attributes.

    Returns:
        A decorator that registers the kind and returns the executor unchanged.

    Raises:
        ValueError: the name is already a stage kind, or ``refs`` names a field the model lacks.
    """

    def wrap(execute: Callable) -> Callable:
        add_stage_kind(StageKind(name, settings, execute, refs=dict(refs or {}), resolve=resolve,
                                 uses=uses or _no_uses, checks=tuple(checks), defaults=defaults,
                                 summary=summary or _no_summary, doc=doc or (execute.__doc__ or "").strip()))
        return execute

    return wrap


def stage_kinds() -> Registry[StageKind]:
    """The registry with the built-in kinds loaded."""
    import importlib

    importlib.import_module(BUILTIN_TABLE)
    return STAGE_KINDS


def get_kind(name: str) -> StageKind:
    """The description of a kind.

    Raises:
        ConfigError: unknown kind (with the valid names and a did-you-mean).
    """
    return stage_kinds().get(name)
