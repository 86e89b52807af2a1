"""Deterministic selection: the held-out split rule, seeded shuffles and subsets.

The held-out rule hashes the text of a record, so it does not depend on file order or on which copy is
read: the shipped samples and the full files put the same record on the same side of the split.
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence, TypeVar

T = TypeVar("T")

HELDOUT_PERCENT = 10


NO_INPUT = ("<noinput>", "<no input>", "noinput")


def join_instruction(instruction: str, input_text: str = "") -> str:
    """The user turn for an instruction and its optional input: ``instruction`` + blank line + ``input``.

    Alpaca-style data marks a missing input with ``<noinput>``; that counts as no input.
    """
    input_text = (input_text or "").strip()
    if input_text.lower() in NO_INPUT:
        input_text = ""
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def is_heldout(text: str, percent: int = HELDOUT_PERCENT) -> bool:
    """Whether a record whose identifying text is ``text`` belongs to the held-out split.

    Args:
        text: the record's prompt (instruction joined with its input).
        percent: the share of records held out, 0-100.

    Returns:
        True for about ``percent`` % of distinct texts, always the same ones.
    """
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    """A copy of ``items`` shuffled by ``random.Random(seed)`` (stable across runs and platforms)."""
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def seeded_subset(items: Sequence[T], n: int, seed: int) -> list[T]:
    """``n`` items chosen by ``random.Random(seed)``, kept in their original order (all when fewer)."""
    if n >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in chosen]


def take(items: Sequence[T], limit: int | None) -> list[T]:
    """The first ``limit`` items (all when ``limit`` is None)."""
    return list(items) if limit is None else list(items[: max(0, int(limit))])
