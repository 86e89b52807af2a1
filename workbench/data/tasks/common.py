"""Parsers shared by the built-in tasks: Alpaca-schema files (``instruction``/``input``/``output``), and
:class:`TemplatedTask`, the base of the built-in tasks that adds the ``template`` option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workbench.data.prompts import DEFAULT_TEMPLATE, check_template, format_example
from workbench.data.readers import log, read_records, require_fields
from workbench.data.selection import is_heldout, join_instruction
from workbench.data.task import Task, pair
from workbench.errors import ConfigError


@dataclass(frozen=True)
class TemplatedTask(Task):
    """A built-in task with a prompt template (``workbench.data.prompts.TEMPLATES``).

    With the default template its records are as they always were. With another one (``lori_official``)
    each record keeps ``prompt`` (the request: held-out hashing and per-prompt ids do not change) and
    gains ``template`` and ``model_input`` (the exact prompt text); training records get the template's
    target as ``response``, evaluation records ``add_bos``.

    Attributes:
        template: the prompt template name.
    """

    template: str = DEFAULT_TEMPLATE

    def __post_init__(self):
        super().__post_init__()
        try:
            check_template(self.template)
        except ConfigError as exc:
            raise ConfigError(f"task '{self.name}': {exc}") from None

    @property
    def templated(self) -> bool:
        """Whether records are preformatted (a template other than the default)."""
        return self.template != DEFAULT_TEMPLATE

    def apply_template(self, source: dict, record: dict, use: str) -> dict:
        """``record`` with the template's ``model_input`` (and, for training, target) from ``source``."""
        example = format_example(source, self.kind, self.template, use)
        out = {k: v for k, v in record.items() if k != "raw"}
        out.update(template=self.template, model_input=example["prompt"])
        if use == "train":
            out["response"] = example["response"]
        else:
            out["add_bos"] = example["add_bos"]
        return out

    def finish_pairs(self, pairs: list[dict]) -> list[dict]:
        """Training pairs from :func:`instruction_pairs` (``raw=self.templated``) under the template."""
        return [self.apply_template(p["raw"], p, "train") for p in pairs] if self.templated else pairs


def instruction_pairs(path: Path, policy: str, keep: Callable[[dict], bool] | None = None,
                      raw: bool = False) -> list[dict]:
    """``{"prompt", "response"}`` pairs from an Alpaca-schema file (JSON array or JSON lines).

    Args:
        path: the file; ``input`` is optional per record, ``instruction`` and ``output`` are required.
        policy: malformed-record policy (``"skip"`` or ``"refuse"``).
        keep: an optional filter on the raw record (e.g. alpaca-libre's ``status == "ok"``).
        raw: also keep the record's fields as ``raw`` (for :meth:`TemplatedTask.finish_pairs`).

    Returns:
        Pairs in file order; the prompt is the instruction joined with its input.

    Raises:
        DataError: as :func:`workbench.data.readers.read_records`.
    """
    out, blank = [], 0
    for where, record in read_records(path, policy):
        if not require_fields(where, record, ("instruction", "output"), policy):
            continue
        if keep is not None and not keep(record):
            continue
        if not is_usable(record):
            blank += 1
            continue
        item = pair(join_instruction(record["instruction"], str(record.get("input") or "")), record["output"])
        if raw:
            item["raw"] = {k: record.get(k) for k in ("instruction", "input", "output")}
        out.append(item)
    if blank:
        # Well-formed but unusable for training (upstream generator left the answer empty): a data filter,
        # not a malformed record, so it is logged once per file and never refused.
        log.info("%s: %d records with an empty instruction or output left out", path, blank)
    return out


def is_usable(record: dict) -> bool:
    """Whether an Alpaca-schema record has a non-blank instruction and output."""
    return bool(str(record.get("instruction") or "").strip() and str(record.get("output") or "").strip())


def split_heldout(pairs: list[dict], heldout: bool) -> list[dict]:
    """The pairs on one side of the hash split (:func:`workbench.data.selection.is_heldout`)."""
    return [p for p in pairs if is_heldout(p["prompt"]) == heldout]
