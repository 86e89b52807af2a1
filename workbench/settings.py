"""One settings model for training: every adapter-shape and loop setting, with its one name, default and help.

Everything else is derived from the models here (litgpt's single config; STYLE "one settings model"):
the pipeline schema's ``defaults``/``train``/``continue`` fields (``workbench/pipeline/schema.py``), the
``workbench train`` flags and their help text (``workbench/commands/train.py``), :class:`TrainConfig`
(``workbench/train/config.py``) and :class:`AdapterSpec`'s defaults (``workbench/adapters/spec.py``). A
setting is added here once and appears everywhere; two defaults for one setting cannot happen.

Groups: :class:`ShapeSettings` is what an adapter is made of (set where an adapter is created: a
pipeline's ``train`` stages; a continued adapter keeps its own); :class:`LoopSettings` is one training run
(``TrainConfig``); :class:`TrainSettings` is both plus the method and the data cap. Torch-free (pydantic
only): ``workbench validate`` imports this.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

DEFAULT_METHOD = "lori_d"
# The method that trains inside a mask: the LoRI chain's (workbench run 'safety->math->code'), and what a
# probe on the positions earlier masks leave free trains as (stages/continue_stage.py).
MASKED_METHOD = "lori_s"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCHEDULERS = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
BATCHING = ("padded", "packed")
LOSS_FORMS = ("token_mean", "sequence_sum_mean")
CLIP_MODES = ("global_norm", "per_tensor")
TEMPLATES = ("workbench", "lori_official")  # workbench.data.prompts.TEMPLATES (tests/test_protocol.py checks)
PAD_TOKENS = ("eos", "add")  # workbench.models.base.PAD_TOKENS (tests/test_pad_token.py checks)
# Settings added after run caches and checkpoints existed: a stage's resolved params and a checkpoint's
# identity carry them only when they differ from the default, so a run cached (or checkpointed) before
# the setting existed is still found; any other value joins both.
KEYED_WHEN_SET = ("pad_token",)

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
OptionValue = Union[int, float, str, bool]


class Settings(BaseModel):
    """Base of the settings groups: unknown names are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ShapeSettings(Settings):
    """What an adapter is made of."""

    rank: Annotated[int, Field(ge=1, le=4096)] = Field(32, description="LoRA rank r")
    alpha: Optional[Annotated[float, Field(gt=0.0)]] = Field(
        None, description="LoRA alpha (updates are scaled by alpha / rank); default: 2 x rank")
    dropout: Fraction = Field(0.0, description="LoRA dropout on the adapter's input")
    target_modules: Annotated[list[str], Field(min_length=1)] = Field(
        list(DEFAULT_TARGETS), description="projections to adapt (all attention and MLP projections)")
    a_seed: Optional[int] = Field(
        None, description="seed of A's random init (LoRI freezes this A: a probe and its LoRI-S adapter need "
                          "the same one); default: seed")
    options: dict[str, OptionValue] = Field(
        {}, description="method options, e.g. lr_ratio: 16 for lora_plus (docs/methods.md)")


class LoopSettings(Settings):
    """One training run: what :class:`~workbench.train.config.TrainConfig` holds."""

    lr: Annotated[float, Field(gt=0.0, le=1.0)] = Field(5e-4, description="peak learning rate")
    steps: Annotated[int, Field(ge=0)] = Field(0, description="optimizer steps; 0: epochs decide")
    epochs: Annotated[float, Field(gt=0.0)] = Field(1.0, description="passes over the data (when steps is 0)")
    batch_size: Annotated[int, Field(ge=1)] = Field(
        8, description="sequences per optimizer step, over every process and accumulation step")
    grad_accum: Annotated[int, Field(ge=1)] = Field(1, description="micro-batches per optimizer step and process")
    max_length: Annotated[int, Field(ge=8)] = Field(512, description="tokens per example (longer ones are cut)")
    warmup_ratio: Fraction = Field(0.03, description="fraction of the steps spent warming the learning rate up")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(0.0, description="AdamW weight decay")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", validation_alias=AliasChoices("scheduler", "schedule"),
        description="learning-rate schedule after warmup ('schedule' is accepted as the old spelling)")
    max_grad_norm: Annotated[float, Field(ge=0.0)] = Field(
        1.0, description="clip the gradient norm to this (0: no clipping)")
    clip: Literal["global_norm", "per_tensor"] = Field(
        "global_norm", description="global_norm: one norm over every trainable tensor; per_tensor: each tensor's "
                                   "gradient clipped to max_grad_norm on its own (the official LoRI 'even')")
    loss: Literal["token_mean", "sequence_sum_mean"] = Field(
        "token_mean", description="token_mean: mean over the step's response tokens; sequence_sum_mean: each "
                                  "sequence's summed token loss, averaged over the step's sequences (official LoRI)")
    template: Literal["workbench", "lori_official"] = Field(
        "workbench", description="prompt template of the built-in tasks: workbench (chat template, BOS) or "
                                 "lori_official (the official LoRI texts, no BOS, EOS appended; "
                                 "workbench/data/lori_official.py)")
    pad_token: Literal["eos", "add"] = Field(
        "eos", description="a tokenizer without a pad token: eos pads with EOS, the vocabulary unchanged; add "
                           "adds <PAD> and resizes the base's embeddings (official LoRI; the adapter records it "
                           "and needs a base loaded the same way: workbench/models/base.py)")
    seed: int = Field(0, description="data order (and A's seed unless a_seed is set)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast precision of the forward and backward pass (bf16/fp16 need a GPU)")
    batching: Literal["padded", "packed"] = Field(
        "padded", description="padded: length-sorted chunks of at most micro_tokens padded tokens; packed: "
                              "sequences concatenated in one row (no padding, attention kept per sequence)")
    micro_tokens: Annotated[int, Field(ge=0)] = Field(
        1024, description="padded tokens per chunk with padded batching (0: one chunk per micro-batch)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass")
    checkpoint_every: Annotated[int, Field(ge=0)] = Field(
        10, description="optimizer steps between resumable checkpoints (0: none)")
    keep_checkpoints: Annotated[int, Field(ge=1)] = Field(2, description="committed checkpoints kept")
    deterministic: bool = Field(False, description="torch deterministic algorithms (slower)")


class TrainSettings(ShapeSettings, LoopSettings):
    """Every training setting: the adapter's shape, the loop, the method and the data cap."""

    method: str = Field(DEFAULT_METHOD, description="adapter method (workbench ls methods)")
    max_samples: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="use at most this many training examples; default: all")


SHAPE_FIELDS = tuple(ShapeSettings.model_fields)
LOOP_FIELDS = tuple(LoopSettings.model_fields)
RUN_FIELDS = ("method", "max_samples")  # neither shape nor loop: set in train and continue stages alike


def default(name: str):
    """The default of a setting (a fresh copy for lists and dicts).

    Raises:
        KeyError: ``name`` is not a training setting.
    """
    value = TrainSettings.model_fields[name].get_default(call_default_factory=True)
    return type(value)(value) if isinstance(value, (list, dict)) else value


def keyed(name: str, value) -> bool:
    """Whether a resolved setting joins a cache key or checkpoint identity (see ``KEYED_WHEN_SET``)."""
    return name not in KEYED_WHEN_SET or value != default(name)


def resolved_alpha(alpha: float | None, rank: int) -> float:
    """``alpha``, or its default 2 x rank."""
    return float(alpha) if alpha is not None else 2.0 * rank


def aliases(name: str) -> tuple[str, ...]:
    """Other accepted spellings of a setting (``schedule`` for ``scheduler``)."""
    alias = TrainSettings.model_fields[name].validation_alias
    return tuple(a for a in getattr(alias, "choices", ()) if a != name)
