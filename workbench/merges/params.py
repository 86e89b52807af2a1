"""Pydantic parameter models shared by the built-in strategies (one schema for API, CLI and pipelines)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workbench.errors import ConfigError


class NoParams(BaseModel):
    """A strategy that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


class FreeParams(BaseModel):
    """Parameters of an unregistered (plain callable) strategy: anything goes, read as attributes."""

    model_config = ConfigDict(extra="allow")


class RankParams(NoParams):
    """``rank``: the rank of the output factors (default: the largest input rank of the module)."""

    rank: Optional[int] = Field(default=None, gt=0)


class SpaceParams(RankParams):
    """``space``: 'factor' combines A's and B's separately as PEFT does (what the LoRI paper ran); 'delta'
    combines the dense updates as mergekit does, then compresses back to ``rank`` by SVD."""

    space: Literal["factor", "delta"] = "factor"

    @model_validator(mode="after")
    def _rank_needs_delta(self):
        if self.rank is not None and self.space != "delta":
            raise ValueError("rank applies only with space='delta' (factor-space merges keep the input rank)")
        return self


class PruneParams(SpaceParams):
    """``density``: the fraction of entries kept per tensor (required, 0 < density <= 1)."""

    density: float = Field(gt=0.0, le=1.0)


class RandomPruneParams(PruneParams):
    """``seed``: seeds the random drop masks (DARE)."""

    seed: int = 0


class SignParams(PruneParams):
    """``majority_sign_method``: 'total' elects the sign of the summed values, 'frequency' the most common sign
    (mergekit calls them 'sum' and 'count')."""

    majority_sign_method: Literal["total", "frequency"] = "total"


class RandomSignParams(SignParams):
    """DARE-TIES: random drop masks and sign election."""

    seed: int = 0


def parse_params(model: type[BaseModel], strategy: str, params: dict) -> BaseModel:
    """Validate ``params`` against ``model``.

    Raises:
        ConfigError: every invalid or unknown field, named, in one message.
    """
    try:
        return model(**params)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "params"
            msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{loc}: {msg}")
        raise ConfigError(f"merge strategy '{strategy}': " + "; ".join(problems)) from None
