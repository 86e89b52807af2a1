"""Protocols: named, complete bundles of setting values (data, not code paths).

A protocol says which value each setting takes when a pipeline does not set it: ``workbench`` (the
default: every setting's own default, ``workbench/settings.py`` and the stage kinds' defaults) or
``official`` (the official LoRI code, github.com/juzhengz/LoRI @ 9183468, setting by setting; each value
with its source line in ``docs/paper-protocol.md``). A pipeline chooses one with a top-level
``protocol: official`` (``workbench run/validate ... --protocol official`` sets it from the command line);
:func:`apply_protocol` then writes the bundle's values into the pipeline tree **under** what the file (and
``--set``) wrote: an explicit setting always wins, so every value of the bundle can still be chosen
individually.

A bundle has three parts:

- ``defaults``: values for ``defaults:`` (training, calibration and evaluation settings);
- ``epochs``: passes per task kind, written into each ``train``/``continue`` stage that sets neither
  ``steps`` nor ``epochs``, and only when ``defaults`` sets neither either (a preset's or a file's own
  budget, e.g. the quick preset's ``steps``, replaces the official epochs and keeps every other value);
- ``stages``: per stage kind, values for the stages of that kind that do not set them (the judge of
  ``evaluate`` stages).

Torch-free and weight-free: ``workbench validate`` imports it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from workbench.errors import ConfigError, unknown_name
from workbench.settings import default

DEFAULT_PROTOCOL = "workbench"
TRAINING_KINDS = ("train", "continue")


@dataclass(frozen=True)
class Protocol:
    """A named bundle of setting values (see the module docstring).

    Attributes:
        name: what ``protocol:`` and ``--protocol`` say.
        doc: one line for listings and the resolved pipeline.
        defaults: ``defaults:`` values.
        epochs: task kind -> passes over the data.
        stages: stage kind -> values for each stage of that kind.
    """

    name: str
    doc: str
    defaults: Mapping[str, object] = field(default_factory=dict)
    epochs: Mapping[str, float] = field(default_factory=dict)
    stages: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


WORKBENCH = Protocol(DEFAULT_PROTOCOL, "the workbench's own settings (each setting's default)")

OFFICIAL = Protocol(
    "official",
    "the official LoRI code (juzhengz/LoRI @ 9183468), setting by setting: docs/paper-protocol.md",
    defaults=MappingProxyType({
        "template": "lori_official",     # src/get_datasets.py prompts, no BOS, EOS appended
        "loss": "sequence_sum_mean",     # src/mask_trainers.py 294-307
        "clip": "per_tensor",            # grad_norm_strategy=even, src/apply_mask_in_backward.py 84-85
        "max_grad_norm": 1.0,            # scripts/*.sh grad_norm=1
        "dropout": 0.0,                  # disable_dropout, src/train_lori.py 107
        "scheduler": "constant",         # LambdaLR min(1, (step+1)/(warmup+1)), src/mask_trainers.py 321-322
        "warmup_ratio": 0.0,             # warmup_steps 0, config/config.yaml 87
        "batch_size": 32,                # sequences per optimizer step, scripts/*.sh batch_size=32
        "grad_accum": 1,                 # config/config.yaml 57
        "max_length": 512,               # config/config.yaml 63
        "weight_decay": 0.0,             # AdamW default of MaskedAdamW, src/apply_mask_in_backward.py 55
        "tie_rule": "official",          # src/extract_mask.py 81-89
        "sparsity": 0.9,                 # masks/0.9_mask.pt, scripts/*.sh LoRI-S
        "max_new_tokens": 512,           # src/eval_model.py max_new_tokens
        "pad_token": "add",              # <PAD> added, embeddings resized: src/train_lori.py 78-81, src/eval_model.py 278-281
    }),
    # scripts/gsm8k_*.sh, codealpaca_*.sh, saferpaca_*.sh, nlu_*.sh: n_epochs (line 13)
    epochs=MappingProxyType({"math": 3.0, "code": 2.0, "safety": 1.0, "nlu": 1.0}),
    stages=MappingProxyType({"evaluate": MappingProxyType({"judge": "lori_official"})}),  # src/eval_model.py 27-121
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (WORKBENCH, OFFICIAL)}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``.

    Raises:
        ConfigError: unknown name (with the valid ones and a did-you-mean).
    """
    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, tuple(PROTOCOLS))
    return PROTOCOLS[name]


def _task_kind(task, custom: Mapping) -> str | None:
    """The kind of a registered task (None for a custom or unknown one: validation reports the latter)."""
    if not isinstance(task, str) or task in custom:
        return None
    from workbench.data.registry import TASKS

    try:
        return getattr(TASKS.get(task), "kind", None)
    except (KeyError, ValueError, ConfigError):
        return None


def apply_protocol(tree: dict, name: str | None = None) -> tuple[dict, list[tuple]]:
    """A copy of a pipeline tree with its protocol's values written under the explicit ones.

    Args:
        tree: a pipeline tree (as read from YAML, after ``--set`` overrides).
        name: the protocol; default the tree's ``protocol`` key, else ``workbench`` (a no-op). A name
            given here is written into the copy's ``protocol``.

    Returns:
        ``(tree, written)``: the completed tree (``tree`` itself is not changed) and the paths the
        protocol wrote (so that a problem there is located at the protocol). A tree whose ``protocol`` is
        not a known name comes back unchanged apart from ``name``: the schema reports it, at its line.
    """
    out = copy.deepcopy(tree) if isinstance(tree, dict) else tree
    written: list[tuple] = []
    if not isinstance(out, dict):
        return out, written
    if name is not None:
        out["protocol"] = name
    chosen = out.get("protocol", DEFAULT_PROTOCOL)
    if not isinstance(chosen, str) or chosen not in PROTOCOLS:
        return out, written
    proto = PROTOCOLS[chosen]
    if out.get("defaults") is None:
        out["defaults"] = {}
    defaults = out["defaults"]
    if not isinstance(defaults, dict):
        return out, written
    explicit_length = "steps" in defaults or "epochs" in defaults
    for key, value in proto.defaults.items():
        if key not in defaults:
            defaults[key] = value
            written.append(("defaults", key))
    stages = out.get("stages") if isinstance(out.get("stages"), dict) else {}
    custom = out.get("tasks") if isinstance(out.get("tasks"), dict) else {}
    for stage_name, stage in stages.items():
        if not isinstance(stage, dict):
            continue
        for key, value in proto.stages.get(stage.get("kind"), {}).items():
            if key not in stage:
                stage[key] = value
                written.append(("stages", stage_name, key))
        if stage.get("kind") in TRAINING_KINDS and not explicit_length and "steps" not in stage \
                and "epochs" not in stage:
            epochs = proto.epochs.get(_task_kind(stage.get("task"), custom))
            if epochs is not None:
                stage["epochs"] = epochs
                written.append(("stages", stage_name, "epochs"))
    return out, written


def with_template(task, template: str):
    """``task`` (a name or Task) under the prompt template ``template`` (the ``template`` setting).

    Raises:
        ConfigError: a template other than the default for a task without the option (custom tasks
            format their own prompts), or an unknown task.
    """
    from workbench.data.registry import get_task

    task = get_task(task)
    if getattr(task, "template", default("template")) == template:
        return task
    if not hasattr(task, "template"):
        raise ConfigError(f"task '{task.name}' has no prompt template option (template: {template} applies to the "
                          "built-in tasks safety, math, code, nlu)")
    return task.with_options(template=template)
