"""Record readers for JSON, JSON lines, CSV and parquet files, with file:line error reports.

A malformed record (a JSON line that does not parse, a record missing a required field) is either skipped
with a ``logging`` warning naming ``file:line`` (policy ``"skip"``) or refused with a :class:`DataError`
naming the same place (policy ``"refuse"``). Nothing here lets a parser traceback reach the user.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

from workbench.errors import ConfigError, WorkbenchError

log = logging.getLogger("workbench.data")

POLICIES = ("skip", "refuse")
JSON_SUFFIXES = (".json", ".jsonl")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet"}


class DataError(WorkbenchError):
    """A dataset file is missing, malformed (and the policy refuses it), empty, or has the wrong columns."""


def check_policy(policy: str) -> str:
    """Return ``policy`` if it is a known malformed-record policy.

    Raises:
        ConfigError: for anything but ``"skip"`` or ``"refuse"``.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown malformed-record policy '{policy}'; valid: {', '.join(POLICIES)}")
    return policy


def report_bad(where: str, problem: str, policy: str) -> None:
    """Skip (warn) or refuse (raise) one malformed record found at ``where`` (``file:line``).

    Raises:
        DataError: when ``policy`` is ``"refuse"``.
    """
    if check_policy(policy) == "refuse":
        raise DataError(f"{where}: {problem}")
    log.warning("%s: %s; skipped", where, problem)


def require_file(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is an existing file.

    Raises:
        DataError: when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def read_text(path: Path) -> str:
    """Read a UTF-8 text file, turning decode and OS errors into :class:`DataError`."""
    try:
        return require_file(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def read_jsonl(path: str | Path, policy: str = "skip") -> list[tuple[str, dict]]:
    """Read a JSON-lines file.

    Args:
        path: the file.
        policy: ``"skip"`` or ``"refuse"`` for lines that are not a JSON object.

    Returns:
        ``(where, record)`` pairs, ``where`` being ``"file:line"`` (1-based), blank lines ignored.

    Raises:
        DataError: missing/unreadable file, or a bad line under policy ``"refuse"``.
    """
    path = Path(path)
    out = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            report_bad(where, f"invalid JSON ({exc.msg} at column {exc.colno})", policy)
            continue
        if not isinstance(record, dict):
            report_bad(where, f"expected a JSON object, got {type(record).__name__}", policy)
            continue
        out.append((where, record))
    return out


def read_json(path: str | Path, policy: str = "skip", list_key: str | None = None) -> list[tuple[str, dict]]:
    """Read a JSON file holding an array of objects (or an object whose ``list_key`` holds the array).

    Args:
        path: the file.
        policy: ``"skip"`` or ``"refuse"`` for array items that are not objects.
        list_key: the key of the array when the top level is an object (e.g. ``"instructions"``).

    Returns:
        ``(where, record)`` pairs, ``where`` being ``"file:record N"`` (0-based array index).

    Raises:
        DataError: missing file, invalid JSON (with its line and column), wrong top-level shape.
    """
    path = Path(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if list_key is not None and isinstance(data, dict):
        if list_key not in data:
            raise DataError(f"{path}: expected key '{list_key}'; found: {', '.join(sorted(data)) or 'none'}")
        data = data[list_key]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    out = []
    for index, item in enumerate(data):
        where = f"{path}:record {index}"
        if isinstance(item, str) and list_key is not None:
            item = {"instruction": item}  # safety-eval files list bare instruction strings
        if not isinstance(item, dict):
            report_bad(where, f"expected a JSON object, got {type(item).__name__}", policy)
            continue
        out.append((where, item))
    return out


def read_records(path: str | Path, policy: str = "skip", list_key: str | None = None) -> list[tuple[str, dict]]:
    """Read ``.json`` / ``.jsonl`` by suffix, returning ``(where, record)`` pairs (see the two readers).

    Raises:
        DataError: unsupported suffix, or as :func:`read_json` / :func:`read_jsonl`.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path, policy)
    if path.suffix == ".json":
        return read_json(path, policy, list_key)
    raise DataError(f"{path}: unsupported file type '{path.suffix}'; expected one of .json, .jsonl")


def read_table(path: str | Path) -> list[tuple[str, dict]]:
    """Read a CSV or parquet file through ``datasets`` as ``(where, row)`` pairs.

    ``where`` is ``file:line`` for CSV (the header is line 1, so row i is line i + 2) and ``file:row i``
    for parquet.

    Raises:
        DataError: missing or unreadable file.
    """
    path = require_file(path)
    builder = TABLE_SUFFIXES.get(path.suffix)
    if builder is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; expected one of .csv, .parquet")
    dataset = load_hf_dataset(builder, data_files=str(path), split="train", what=str(path))
    label = (lambda i: f"{path}:{i + 2}") if builder == "csv" else (lambda i: f"{path}:row {i}")
    return [(label(i), row) for i, row in enumerate(dataset)]


def load_hf_dataset(*args, what: str, **kwargs):
    """Call ``datasets.load_dataset`` and turn its failures into one-line :class:`DataError` messages.

    Args:
        *args, **kwargs: passed to ``datasets.load_dataset``.
        what: the name shown in the error (a file path or a hub id).

    Raises:
        DataError: anything ``datasets`` raises (offline, missing repo, unparsable file).
    """
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as exc:  # datasets raises many unrelated types; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{what}: cannot load dataset ({type(exc).__name__}: {first})") from None


def require_fields(where: str, record: dict, fields: Iterable[str], policy: str) -> bool:
    """Check that ``record`` has every field as a string; report it via ``policy`` if not.

    Returns:
        True when the record is usable, False when it was skipped.

    Raises:
        DataError: under policy ``"refuse"``.
    """
    for name in fields:
        value = record.get(name)
        if not isinstance(value, str):
            problem = f"missing field '{name}'" if value is None else f"field '{name}' is not a string"
            report_bad(where, problem, policy)
            return False
    return True
