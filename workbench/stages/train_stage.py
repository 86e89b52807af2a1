"""The ``train`` stage kind: a new adapter on one task (a masked method such as LoRI-S trains inside ``mask``).

Its fields are every training setting (``workbench/settings.py``: shape and loop) plus ``task``, ``mask``;
a setting the stage leaves out comes from ``defaults``. The helpers here are shared with ``continue``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field, field_validator

from workbench.graph.task import StageResult
from workbench.pipeline.kinds import StageKind
from workbench.pipeline.schema import Loop, Ref, Shape, TaskName
from workbench.settings import LOOP_FIELDS, SHAPE_FIELDS, keyed, resolved_alpha
from workbench.stages.common import (adapter_spec, artifact, base_spec, public_summary, stage_tracker, task_of,
                                     train_config, training_headline)
from workbench.stages.timing import timed_stage

# resolved as one pair by `length`, not one by one
_PICKED_LOOP = tuple(f for f in LOOP_FIELDS if f not in ("steps", "epochs")) + ("max_samples",)


class Launch(BaseModel):
    """How a training stage runs: in how many data-parallel processes (``accelerate launch``), with FSDP or not.

    Not part of the stage's cache key (``workbench/graph/task.py`` ``KEY_NEUTRAL_PARAMS``): N processes
    compute the same global batches' gradients as one, equal to float tolerance (tests/test_launch.py,
    tests/test_train.py), so a stage trained on 8 GPUs is a cache hit for the same stage on one.
    ``mixed_precision``, which does change the result, is the stage's ``precision`` under accelerate's
    name: when given it sets ``precision``, which is in the key.
    """

    model_config = {"extra": "forbid", "frozen": True}

    processes: Annotated[int, Field(ge=1)] = Field(
        1, description="data-parallel processes (one per GPU; on CPU, gloo); `workbench run --processes N` overrides")
    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = Field(
        None, description="accelerate's name for the stage's precision (no = fp32); default: the stage's precision")
    fsdp: bool = Field(False, description="shard with FSDP instead of DDP (refused for now: see below)")

    @field_validator("fsdp")
    @classmethod
    def _no_fsdp_yet(cls, v: bool) -> bool:
        # The loop writes checkpoints and the adapter from the live parameters, which FSDP shards; until it
        # gathers them (accelerate's get_state_dict, tested on GPUs) a sharded run would write a partial
        # adapter. Refused here, while the file is validated, rather than after the model is loaded.
        if v:
            raise ValueError("fsdp: true is not supported yet (the loop does not gather FSDP-sharded parameters "
                             "for its checkpoints and adapter); use data parallel: processes: N")
        return v


class LaunchDefaults(BaseModel):
    """What train and continue stages take from ``defaults:`` besides the training settings."""

    launch: Launch = Field(Launch(), description="processes, mixed_precision, fsdp of every training stage")


class TrainStage(Loop, Shape):
    """Train a new adapter on one task (a LoRI-S adapter trains inside ``mask``)."""

    task: TaskName
    mask: Optional[Ref] = None
    launch: Optional[Launch] = None


def pick(stage, defaults, fields) -> dict:
    """Each field's stage value, else its default."""
    return {f: getattr(stage, f) if getattr(stage, f) is not None else getattr(defaults, f) for f in fields}


def length(stage, defaults) -> dict:
    """steps/epochs: the stage's pair if it sets either, else the defaults', else one epoch."""
    source = stage if (stage.steps is not None or stage.epochs is not None) else defaults
    steps, epochs = source.steps, source.epochs
    return {"steps": steps, "epochs": 1.0 if steps is None and epochs is None else epochs}


def method_of(stage, ctx, seen: frozenset = frozenset()) -> str | None:
    """The method a training stage trains with: its own, else (continue) its source's, else the default.

    ``ctx`` has ``stages`` (name -> validated stage, or None where it failed) and ``defaults``; None when
    the chain of ``from`` is broken or circular (other checks report that).
    """
    if stage is None or id(stage) in seen or stage.kind not in ("train", "continue"):
        return None
    if stage.method:
        return stage.method
    if stage.kind == "train":
        return ctx.defaults.method
    return method_of(ctx.stages.get(stage.from_), ctx, seen | {id(stage)})


def training_params(stage, ctx) -> dict:
    """What train and continue stages resolve alike: the task, the method, the loop settings, ``launch``
    (the stage's block, else the defaults'; its ``mixed_precision`` sets ``precision``)."""
    out = {"task": stage.task, "task_spec": ctx.task_spec(stage.task), "method": method_of(stage, ctx),
           **{k: v for k, v in pick(stage, ctx.defaults, _PICKED_LOOP).items() if keyed(k, v)},  # KEYED_WHEN_SET
           **length(stage, ctx.defaults)}
    launch = stage.launch or getattr(ctx.defaults, "launch", None) or Launch()
    if launch.mixed_precision is not None:
        out["precision"] = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[launch.mixed_precision]
    return {**out, "launch": launch.model_dump()}


def resolve(stage, ctx) -> dict:
    """Every loop and shape setting written out; alpha defaults to 2 x rank and a_seed to seed."""
    out = training_params(stage, ctx)
    shape = pick(stage, ctx.defaults, SHAPE_FIELDS)
    shape["alpha"] = resolved_alpha(shape["alpha"], shape["rank"])
    if shape["a_seed"] is None:  # a probe and its LoRI-S adapter share A through the shared seed
        shape["a_seed"] = out["seed"]
    return {**out, **shape}


def training_uses(stage, ctx) -> list:
    """The task, and the method (where the stage names it; else inherited, for the key only)."""
    return [(("task",), "task", stage.task),
            (("method",) if stage.method else None, "method", method_of(stage, ctx))]


def check_mask(parts, name: str, stage) -> list:
    """A masked method has a mask, an unmasked one none."""
    from workbench.pipeline.names import uses_mask
    from workbench.pipeline.problems import problem_at

    method = method_of(stage, parts)
    needs = uses_mask(method) if method else None
    if needs and stage.mask is None:
        return [problem_at(parts.located, ("stages", name),
                           f"method {method} trains inside a sparse mask: add 'mask: <a calibrate stage>'")]
    if needs is False and stage.mask is not None:
        return [problem_at(parts.located, ("stages", name, "mask"),
                           f"method {method} takes no mask; use a masked method (e.g. lori_s) or drop 'mask'")]
    return []


def check_options(parts, name: str, stage) -> list:
    """The method's ``Options`` model accepts the stage's options (or the defaults' ones it inherits):
    ``p.yaml:7: stages.a.options.lr_ratoi: Extra inputs are not permitted (method 'lora_plus' takes: lr_ratio)``.
    A method that is not registered (unknown, or from a plugin that was only read) is left to the name check."""
    from pydantic import ValidationError

    from workbench.adapters.method import option_message
    from workbench.pipeline.names import registry
    from workbench.pipeline.problems import problem_at

    method = method_of(stage, parts)
    reg = registry("method")
    if method is None or method not in reg:
        return []
    where = ("stages", name) if stage.options is not None else ("defaults",)
    raw = stage.options if stage.options is not None else parts.defaults.options
    rank = stage.rank if stage.rank is not None else parts.defaults.rank
    try:
        reg.get(method).parse_options(raw or {}, rank=rank)
    except ValidationError as exc:
        model = reg.get(method).Options
        return [problem_at(parts.located, (*where, "options", *err["loc"]), option_message(method, err, model))
                for err in exc.errors()]
    return []


@timed_stage("train")
def run_train(task, inputs, out_dir: Path, context) -> StageResult:
    """A new adapter on one task (inside a mask for masked methods); with ``launch.processes`` > 1 (or
    ``--processes``), in that many processes under ``accelerate launch`` (workbench/stages/launch.py)."""
    from workbench.stages.train import train_task
    from workbench.stages.launch import processes_for, run_launched

    processes = processes_for(task, context)
    if processes > 1:  # data parallel: the workers run this very function, in-process
        return run_launched(task, inputs, out_dir, context, processes)

    from workbench.tracking import step_logger

    p = task.params
    with stage_tracker(task, context) as tracker:
        result = train_task(base_spec(p), task_of(p), adapter_spec(p), train_config(p), out_dir,
                            mask=artifact(inputs, task, "mask", "mask"), limit=p.get("max_samples"),
                            progress=context.options.get("progress", True), log_step=step_logger(tracker, task.name))
    return StageResult(artifacts={"adapter": result.adapter_path}, metrics=public_summary(result.summary))


KIND = StageKind("train", TrainStage, run_train, refs={"mask": ("calibrate",)}, resolve=resolve,
                 uses=training_uses, checks=(check_mask, check_options), defaults=LaunchDefaults,
                 summary=training_headline,
                 doc="train a new adapter on one task")
