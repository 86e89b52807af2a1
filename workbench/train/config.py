"""Training settings of one run: a frozen value recorded with every checkpoint (resume refuses a changed one).

:class:`TrainConfig` is generated from :class:`workbench.settings.LoopSettings`: its fields, defaults and
checks are that model's, so a setting has one name and one default whether it comes from a pipeline, the
``workbench train`` flags or Python. It stays a plain frozen dataclass (``dataclasses.replace`` and
``asdict`` work, it pickles for ``accelerate launch``); construction validates through the model.
"""

from __future__ import annotations

import dataclasses

from pydantic import ValidationError

from workbench.errors import ConfigError
from workbench.settings import BATCHING, PRECISIONS, SCHEDULERS, LoopSettings, aliases

__all__ = ["BATCHING", "PRECISIONS", "RESUME_NEUTRAL_KEYS", "SCHEDULERS", "TrainConfig", "config_error"]

# Fields that may differ on resume without changing the result.
RESUME_NEUTRAL_KEYS = ("checkpoint_every", "keep_checkpoints")

_ALIASES = {alias: name for name in LoopSettings.model_fields for alias in aliases(name)}


def config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """One ``ConfigError`` naming every bad setting: ``batch_size: Input should be ... (got 0)``."""
    lines = []
    for err in exc.errors():
        where = prefix + ".".join(str(p) for p in err["loc"])
        got = f" (got {err['input']!r})" if "input" in err and err["type"] != "missing" else ""
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}{got}")
    return ConfigError("; ".join(lines))


def _post_init(self) -> None:
    try:
        checked = LoopSettings.model_validate(dataclasses.asdict(self))
    except ValidationError as exc:
        raise config_error(exc) from None
    for name in LoopSettings.model_fields:  # the model's coercions (an int epochs becomes a float)
        object.__setattr__(self, name, getattr(checked, name))


def _to_dict(self) -> dict:
    """The settings as a plain dict (recorded in checkpoints and train_summary.json)."""
    return dataclasses.asdict(self)


_Generated = dataclasses.make_dataclass(
    "TrainConfig",
    [(name, f.annotation, dataclasses.field(default=f.get_default(call_default_factory=True)))
     for name, f in LoopSettings.model_fields.items()],
    frozen=True, namespace={"__post_init__": _post_init, "to_dict": _to_dict})


class TrainConfig(_Generated):
    """Settings of one training run (fields and help: :class:`workbench.settings.LoopSettings`).

    Accepts the model's old spellings too (``schedule=`` for ``scheduler``).

    Raises:
        ConfigError: a setting out of range or of the wrong type, naming the field.
    """

    def __init__(self, **values):
        for alias, name in _ALIASES.items():
            if alias in values:
                if name in values:
                    raise ConfigError(f"{alias} and {name} are the same setting: give one")
                values[name] = values.pop(alias)
        unknown = sorted(set(values) - set(LoopSettings.model_fields))
        if unknown:
            raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(LoopSettings.model_fields)}")
        super().__init__(**values)
