"""The pipeline file schema (pydantic v2). Field-by-field documentation: ``workbench/pipeline/SCHEMA.md``.

Every model forbids unknown keys; stage kinds are a discriminated union on ``kind``. Validators raise
``ValueError`` (pydantic turns it into a located error; a ``RuntimeError`` would lose the location).
Checks that need the whole pipeline (references, registries, mask densities) live in ``checks.py``.

Nothing here is written per stage kind or per training setting: the training fields (``defaults``,
``train``, ``continue``) are generated from ``workbench/settings.py``, and the stage union, ``defaults``
and the reference table from the stage-kind descriptions (``workbench/pipeline/kinds.py``). Because a
plugin can add a kind, those models are built on first use and rebuilt when the set of kinds changes
(:func:`pipeline_model`); ``schema.Pipeline``, ``schema.Defaults``, ``schema.KIND_MODELS``,
``schema.REF_FIELDS`` and ``schema.KINDS`` read the current ones.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from workbench.pipeline.kinds import StageSettings, stage_kinds
from workbench.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from workbench.settings import LOOP_FIELDS, RUN_FIELDS, SHAPE_FIELDS, TrainSettings
from workbench.tracking import Tracking

STAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,79}$")
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def check_stage_name(name: str) -> str:
    """Stage names become directory names: letters, digits, '_' and '-', starting with a letter."""
    if not STAGE_NAME.match(name):
        raise ValueError(f"stage name '{name}' is not allowed: use letters, digits, '_' and '-', "
                         "starting with a letter (at most 80 characters)")
    return name


def check_task_name(name: str) -> str:
    """Task names appear in file names and reports: no '/', no leading '.'."""
    if not TASK_NAME.match(name):
        raise ValueError(f"task name '{name}' is not allowed: use letters, digits, '_', '.' and '-', "
                         "starting with a letter or digit")
    return name


StageName = Annotated[str, AfterValidator(check_stage_name)]
TaskName = Annotated[str, AfterValidator(check_task_name)]
Ref = str  # a stage reference; existence and kind are checked in checks.py with a did-you-mean
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Strict = StageSettings  # every section: unknown keys are errors, values are not silently coerced into strings


class Base(Strict):
    """The base model every stage of the pipeline uses."""

    model: str = "smollm2-135m-instruct"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantize: Optional[Literal["nf4"]] = None
    trust_remote_code: bool = False


class _OneLength(Strict):
    """``steps`` and ``epochs`` are two ways to give one length."""

    @model_validator(mode="after")
    def _steps_or_epochs(self):
        if getattr(self, "steps", None) is not None and getattr(self, "epochs", None) is not None:
            raise ValueError("set either steps or epochs, not both")
        return self


def _setting(name: str, default, optional: bool):
    """A training setting as a schema field: its type, checks, help and accepted spellings; ``default``."""
    info = TrainSettings.model_fields[name]
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    if optional:
        annotation = Optional[annotation]
    return annotation, Field(default, description=info.description, validation_alias=info.validation_alias)


def _settings_model(name: str, doc: str, fields, defaults: bool):
    """A schema model of training settings: with their defaults (``defaults:``), or all None (a stage's
    own values; None means "take it from defaults")."""
    spec = {}
    for f in fields:
        length = f in ("steps", "epochs")  # unset means one epoch; a stage that sets either replaces both
        default = TrainSettings.model_fields[f].get_default(call_default_factory=True)
        spec[f] = _setting(f, None if length or not defaults else default, optional=length or not defaults)
    model = create_model(name, __base__=_OneLength, **spec)
    model.__doc__ = doc
    return model


Loop = _settings_model("Loop", "Training-loop settings shared by ``train`` and ``continue`` (None: take it from "
                               "``defaults``).", (*LOOP_FIELDS, *RUN_FIELDS), defaults=False)
Shape = _settings_model("Shape", "Adapter shape settings (only where an adapter is created: ``train``).",
                        SHAPE_FIELDS, defaults=False)
TrainingDefaults = _settings_model("TrainingDefaults", "The training settings every stage inherits unless it "
                                                       "sets its own.", tuple(TrainSettings.model_fields),
                                   defaults=True)


class CustomTask(Strict):
    """A task read from a local JSON / JSON-lines / CSV / parquet file (or a hub dataset id), or, under a
    registered task's name and without ``path``, that task's options (``safety: {options: {safety_fraction:
    0.5}}``; the fields ``workbench tasks`` lists per task, as ``workbench train --task-option``)."""

    path: Optional[str] = None
    options: dict[str, Any] = {}
    prompt_field: str = "instruction"
    response_field: str = "output"
    input_field: Optional[str] = None
    split: str = "train"
    on_error: Literal["skip", "refuse"] = "skip"


class _Opaque(BaseModel):
    """A stage of a kind only a plugin that was read (not run) defines: its fields cannot be checked."""

    model_config = ConfigDict(extra="allow", frozen=True)


@lru_cache(maxsize=None)
def _build(kind_names: tuple[str, ...], opaque: tuple[str, ...]) -> dict:
    kinds = {n: stage_kinds().get(n) for n in kind_names}
    extra = {}
    for k in kinds.values():
        if k.defaults is not None:
            extra.update({n: (f.annotation, f) for n, f in k.defaults.model_fields.items()})
    defaults = create_model("Defaults", __base__=TrainingDefaults, **extra)
    defaults.__doc__ = "Values every stage inherits unless it sets its own."
    models = {n: k.model for n, k in kinds.items()}
    for n in opaque:
        models[n] = create_model(f"Opaque_{n}", __base__=_Opaque, kind=(Literal[n], ...))
    stage = Annotated[Union[tuple(models.values())], Field(discriminator="kind")]
    pipeline = create_model(
        "Pipeline", __base__=Strict,
        name=(Optional[str], None), description=(str, ""), base=(Base, Base()), defaults=(defaults, defaults()),
        tasks=(dict[TaskName, CustomTask], {}),
        # Python files (relative to the pipeline file) imported before names are checked: they register merge
        # strategies, methods, tasks or stage kinds the stages can then name (workbench/pipeline/plugins.py).
        plugins=(list[str], []),
        # a named bundle of setting values written under the file's own (workbench/protocols.py)
        protocol=(Literal[tuple(PROTOCOLS)], DEFAULT_PROTOCOL),
        # experiment trackers (accelerate's): workbench/tracking.py
        tracking=(Optional[Tracking], None),
        stages=(Annotated[dict[StageName, stage], Field(min_length=1)], ...))
    pipeline.__doc__ = "A whole pipeline file."
    return {"Pipeline": pipeline, "Defaults": defaults, "Stage": stage, "KIND_MODELS": models,
            "KINDS": tuple(models), "REF_FIELDS": {n: dict(k.refs) for n, k in kinds.items()}}


def current(opaque: tuple[str, ...] = ()) -> dict:
    """The models for the kinds registered now (plus ``opaque`` kinds, accepted unchecked)."""
    return _build(tuple(stage_kinds().names()), tuple(sorted(set(opaque) - set(stage_kinds().names()))))


def pipeline_model(opaque: tuple[str, ...] = ()) -> type[BaseModel]:
    """The ``Pipeline`` model for the kinds registered now (see :func:`current`)."""
    return current(opaque)["Pipeline"]


def __getattr__(name: str):
    if name in ("Pipeline", "Defaults", "Stage", "KIND_MODELS", "KINDS", "REF_FIELDS"):
        return current()[name]
    raise AttributeError(f"module 'workbench.pipeline.schema' has no attribute '{name}'")


def refs_of(stage) -> dict[str, list[str]]:
    """``{field: [stage names]}`` for the reference fields of a validated stage (YAML field names)."""
    kinds = stage_kinds()
    if stage.kind not in kinds:
        return {}
    kind = kinds.get(stage.kind)
    return {f: [r for _, r in kind.ref_items(stage, f)] for f in kind.refs}
