"""What an adapter is made of: method, rank, alpha, targets, seed (a frozen, hashable value)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from workbench.errors import ConfigError
from workbench.settings import default, resolved_alpha


@dataclass(frozen=True)
class AdapterSpec:
    """Settings of one adapter.

    Args:
        method: registered method name (``lora``, ``lori_d``, ``lori_s``, ...).
        rank, alpha: LoRA rank and alpha (scaling alpha / rank, or alpha / sqrt(rank) with ``use_rslora``);
            alpha None is 2 x rank.
        target_modules: projection names to adapt.
        dropout: LoRA dropout.
        a_seed: seed of A's random init; LoRI freezes this A, so different seeds give nearly orthogonal
            input subspaces across tasks.
        task: the task this adapter is trained on (recorded in workbench.json).
        options: method-specific settings (e.g. ``lr_ratio`` for lora_plus), as sorted key/value pairs.

    The defaults are the training settings' (``workbench/settings.py``), so a spec built here, from a
    pipeline or from ``workbench train`` flags agrees.
    """

    method: str = default("method")
    rank: int = default("rank")
    alpha: float | None = default("alpha")
    target_modules: tuple[str, ...] = tuple(default("target_modules"))
    dropout: float = default("dropout")
    a_seed: int = default("seed")
    use_rslora: bool = False
    task: str | None = None
    options: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"rank: must be >= 1 (got {self.rank})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1) (got {self.dropout})")
        if not self.target_modules:
            raise ConfigError("target_modules: at least one module is needed")
        object.__setattr__(self, "alpha", resolved_alpha(self.alpha, self.rank))
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["options"] = dict(self.options)
        return d
