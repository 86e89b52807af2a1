"""The pipeline file schema (pydantic v2). Field-by-field documentation: ``workbench/pipeline/SCHEMA.md``.

Every model forbids unknown keys; stage kinds are a discriminated union on ``kind``. Validators raise
``ValueError`` (pydantic turns it into a located error; a ``RuntimeError`` would lose the location).
Checks that need the whole pipeline (references, registries, mask densities) live in ``checks.py``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

STAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,79}$")
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are not silently coerced into strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Base(Strict):
    """The base model every stage of the pipeline uses."""

    model: str = "smollm2-135m-instruct"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantize: Optional[Literal["nf4"]] = None
    trust_remote_code: bool = False


class Loop(Strict):
    """Training-loop settings shared by ``train`` and ``continue`` (None: take it from ``defaults``)."""

    lr: Optional[Annotated[float, Field(gt=0.0, le=1.0)]] = None
    steps: Optional[Annotated[int, Field(ge=1)]] = None
    epochs: Optional[Annotated[float, Field(gt=0.0)]] = None
    batch_size: Optional[Annotated[int, Field(ge=1)]] = None
    grad_accum: Optional[Annotated[int, Field(ge=1)]] = None
    max_length: Optional[Annotated[int, Field(ge=8)]] = None
    max_samples: Optional[Annotated[int, Field(ge=1)]] = None
    warmup_ratio: Optional[Fraction] = None
    weight_decay: Optional[Annotated[float, Field(ge=0.0)]] = None
    scheduler: Optional[Literal["cosine", "linear", "constant"]] = None
    seed: Optional[int] = None
    method: Optional[str] = None
    checkpoint_every: Optional[Annotated[int, Field(ge=0)]] = None

    @model_validator(mode="after")
    def _steps_or_epochs(self):
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set either steps or epochs, not both")
        return self


class Shape(Strict):
    """Adapter shape settings (only where an adapter is created: ``train``)."""

    rank: Optional[Annotated[int, Field(ge=1, le=4096)]] = None
    alpha: Optional[Annotated[float, Field(gt=0.0)]] = None
    dropout: Optional[Fraction] = None
    target_modules: Optional[Annotated[list[str], Field(min_length=1)]] = None
    options: Optional[dict[str, Union[int, float, str, bool]]] = None


class Defaults(Loop, Shape):
    """Values every stage inherits unless it sets its own."""

    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-4
    batch_size: Annotated[int, Field(ge=1)] = 4
    grad_accum: Annotated[int, Field(ge=1)] = 1
    max_length: Annotated[int, Field(ge=8)] = 512
    warmup_ratio: Fraction = 0.0
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    seed: int = 0
    method: str = "lori_d"
    checkpoint_every: Annotated[int, Field(ge=0)] = 10
    rank: Annotated[int, Field(ge=1, le=4096)] = 8
    alpha: Annotated[float, Field(gt=0.0)] = 16.0
    dropout: Fraction = 0.0
    target_modules: Annotated[list[str], Field(min_length=1)] = list(DEFAULT_TARGETS)
    sparsity: Fraction = 0.9
    eval_limit: Optional[Annotated[int, Field(ge=1)]] = None
    max_new_tokens: Annotated[int, Field(ge=1)] = 128


class CustomTask(Strict):
    """A task read from a local JSON / JSON-lines / CSV / parquet file (or a hub dataset id)."""

    path: str
    prompt_field: str = "instruction"
    response_field: str = "output"
    input_field: Optional[str] = None
    split: str = "train"
    on_error: Literal["skip", "refuse"] = "skip"


class Train(Loop, Shape):
    """Train a new adapter on one task (a LoRI-S adapter trains inside ``mask``)."""

    kind: Literal["train"]
    task: TaskName
    mask: Optional[Ref] = None
    a_seed: Optional[int] = None


class Continue(Loop):
    """Keep training the adapter of ``from`` on a new task; earlier positions stay as they are."""

    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["continue"]
    from_: Ref = Field(alias="from")
    task: TaskName
    mask: Optional[Ref] = None
    exclude: list[Ref] = []


class Calibrate(Strict):
    """Build a sparse mask from the magnitudes of ``from``'s adapter (LoRI-S calibration)."""

    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["calibrate"]
    from_: Ref = Field(alias="from")
    sparsity: Optional[Fraction] = None
    scope: str = "global"
    exclude: list[Ref] = []


class Merge(Strict):
    """Merge several adapters into one."""

    kind: Literal["merge"]
    adapters: Annotated[list[Ref], Field(min_length=1)]
    strategy: str = "concat"
    weights: Optional[list[float]] = None
    params: dict = {}

    @model_validator(mode="after")
    def _weights_match(self):
        if self.weights is not None and len(self.weights) != len(self.adapters):
            raise ValueError(f"weights has {len(self.weights)} values for {len(self.adapters)} adapters")
        return self


class Evaluate(Strict):
    """Score an adapter (or the base model alone when ``adapter`` is null) on tasks."""

    kind: Literal["evaluate"]
    adapter: Optional[Ref] = None
    tasks: Annotated[list[TaskName], Field(min_length=1)]
    limit: Optional[Annotated[int, Field(ge=1)]] = None
    max_new_tokens: Optional[Annotated[int, Field(ge=1)]] = None


class Analyze(Strict):
    """Subspace, mask-overlap and forgetting analysis plus the report."""

    kind: Literal["analyze"]
    adapters: list[Ref] = []
    masks: list[Ref] = []
    forgetting: list[Ref] = []
    # increments: a ``continue`` adapter listed with the adapter it continued is analysed as what its
    # stage added (a chain's snapshots contain every earlier stage); snapshots: as saved.
    compare: Literal["increments", "snapshots"] = "increments"


Stage = Annotated[Union[Train, Continue, Calibrate, Merge, Evaluate, Analyze], Field(discriminator="kind")]
KIND_MODELS = {"train": Train, "continue": Continue, "calibrate": Calibrate, "merge": Merge, "evaluate": Evaluate,
               "analyze": Analyze}
KINDS = tuple(KIND_MODELS)

# Which fields of each kind reference other stages, and the kinds each may point at.
ADAPTER_KINDS = ("train", "continue", "merge")
REF_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {"mask": ("calibrate",)},
    "continue": {"from": ("train", "continue"), "mask": ("calibrate",), "exclude": ("calibrate",)},
    "calibrate": {"from": ("train", "continue"), "exclude": ("calibrate",)},
    "merge": {"adapters": ADAPTER_KINDS},
    "evaluate": {"adapter": ADAPTER_KINDS},
    "analyze": {"adapters": ADAPTER_KINDS, "masks": ("calibrate",), "forgetting": ("evaluate",)},
}


class Pipeline(Strict):
    """A whole pipeline file."""

    name: Optional[str] = None
    description: str = ""
    base: Base = Base()
    defaults: Defaults = Defaults()
    tasks: dict[TaskName, CustomTask] = {}
    # Python files (relative to the pipeline file) imported before names are checked: they register merge
    # strategies, methods or tasks the stages can then name (workbench/pipeline/plugins.py).
    plugins: list[str] = []
    stages: Annotated[dict[StageName, Stage], Field(min_length=1)]


def refs_of(stage) -> dict[str, list[str]]:
    """``{field: [stage names]}`` for the reference fields of a validated stage (YAML field names)."""
    out = {}
    for name in REF_FIELDS[stage.kind]:
        value = getattr(stage, "from_" if name == "from" else name)
        out[name] = [] if value is None else list(value) if isinstance(value, list) else [value]
    return out
