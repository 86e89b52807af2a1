"""Parsers shared by the built-in tasks: Alpaca-schema files (``instruction``/``input``/``output``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from workbench.data.readers import log, read_records, require_fields
from workbench.data.selection import is_heldout, join_instruction
from workbench.data.task import pair


def instruction_pairs(path: Path, policy: str, keep: Callable[[dict], bool] | None = None) -> list[dict]:
    """``{"prompt", "response"}`` pairs from an Alpaca-schema file (JSON array or JSON lines).

    Args:
        path: the file; ``input`` is optional per record, ``instruction`` and ``output`` are required.
        policy: malformed-record policy (``"skip"`` or ``"refuse"``).
        keep: an optional filter on the raw record (e.g. alpaca-libre's ``status == "ok"``).

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
        out.append(pair(join_instruction(record["instruction"], str(record.get("input") or "")), record["output"]))
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
