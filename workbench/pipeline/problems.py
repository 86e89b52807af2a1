"""Pipeline errors as the user reads them: ``file:line: stages.math.rank: message``, all at once.

pydantic reports a location as a tuple (``('stages', 'math', 'train', 'rank')``, the ``train`` being the
discriminated-union tag); here it is cleaned, mapped to the line recorded by the YAML loader and given
a message that says what to do (unknown fields get the valid ones and a did-you-mean).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from workbench.errors import ConfigError, did_you_mean
from workbench.pipeline import schema
from workbench.pipeline.yaml_load import Located, bool_word_message

_STRING_TYPES = {"string_type", "literal_error", "enum", "string_pattern_mismatch"}


@dataclass(frozen=True)
class Problem:
    """One error: ``where`` is ``file:line`` (or ``--set key``), ``path`` the field inside the tree."""

    where: str
    path: tuple
    message: str

    def __str__(self) -> str:
        dotted = dotted_path(self.path)
        if not dotted or self.where.startswith("--set ") and self.where[6:] == dotted:
            return f"{self.where}: {self.message}"
        return f"{self.where}: {dotted}: {self.message}"


class PipelineError(ConfigError):
    """A pipeline failed validation; ``problems`` lists every error, one per line in the message."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems), key=_sort_key)
        super().__init__("\n".join(str(p) for p in self.problems))


def _sort_key(p: Problem):
    file, _, line = p.where.rpartition(":")
    return (file, int(line)) if line.isdigit() else (p.where, 0), dotted_path(p.path), p.message


def dotted_path(path) -> str:
    """``('stages', 'e', 'tasks', 1)`` -> ``'stages.e.tasks.1'``."""
    return ".".join(str(p) for p in path)


def problem_at(located: Located, path, message: str) -> Problem:
    """A problem located at ``path`` (or its nearest located ancestor)."""
    return Problem(located.where(path), tuple(path), message)


def schema_problems(exc: ValidationError, located: Located, prefix: tuple = ()) -> list[Problem]:
    """Translate a pydantic ``ValidationError`` into located problems."""
    return [_one(err, located, prefix) for err in exc.errors()]


def _clean_loc(loc: tuple, tree) -> tuple:
    loc = tuple(p for p in loc if p != "[key]")
    if len(loc) > 2 and loc[0] == "stages" and loc[2] in schema.KIND_MODELS:
        loc = loc[:2] + loc[3:]  # drop the discriminator tag pydantic inserts
    return loc


def _one(err: dict, located: Located, prefix: tuple) -> Problem:
    loc = prefix + _clean_loc(tuple(err["loc"]), located.tree)
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        path, msg = loc, _unknown_field(loc, located.tree)
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        path, msg = loc + ("kind",), _bad_kind(err)
    elif kind == "missing":
        path, msg = loc, f"required field '{loc[-1]}' is missing"
    else:
        path = loc
        if loc in located.bool_words and kind in _STRING_TYPES:
            msg = bool_word_message(located.bool_words[loc])
        elif "input" in err and kind not in ("value_error", "assertion_error") and _short(err["input"]):
            msg = f"{msg} (got {_short(err['input'])})"
    return problem_at(located, path, msg)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else ""


def _bad_kind(err: dict) -> str:
    kinds = ", ".join(schema.KINDS)
    tag = (err.get("ctx") or {}).get("tag")
    if tag is None:
        return f"missing 'kind' (one of: {kinds})"
    return f"unknown stage kind '{tag}'{did_you_mean(tag, schema.KINDS)}; valid: {kinds}"


def _unknown_field(loc: tuple, tree) -> str:
    name = loc[-1]
    fields = _fields_of(_model_at(loc[:-1], tree))
    if not fields:
        return f"unknown field '{name}'"
    return f"unknown field '{name}'{did_you_mean(name, fields)}; valid: {', '.join(fields)}"


def _model_at(path: tuple, tree) -> type[BaseModel] | None:
    """The schema model describing the mapping at ``path`` (None where it is free-form)."""
    if path == ():
        return schema.Pipeline
    if path == ("base",):
        return schema.Base
    if path == ("defaults",):
        return schema.Defaults
    if len(path) == 2 and path[0] == "tasks":
        return schema.CustomTask
    if len(path) == 2 and path[0] == "stages":
        raw = (tree or {}).get("stages", {}).get(path[1]) if isinstance(tree, dict) else None
        return schema.KIND_MODELS.get(raw.get("kind")) if isinstance(raw, dict) else None
    return None


def _fields_of(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return sorted((f.alias or n) for n, f in model.model_fields.items())
