"""Errors the user can act on.

Every error raised for bad input is a :class:`WorkbenchError`: the CLI prints its message as one line and
exits with code 2, without a traceback. The message names the file, line or field and the problem.
"""

from __future__ import annotations

import difflib


class WorkbenchError(Exception):
    """Bad input or a refused operation; the message is meant for the user."""

    exit_code = 2


class FileFormatError(WorkbenchError):
    """A file exists but its content is not what it should be (truncated, wrong keys, wrong shapes)."""


class MismatchError(WorkbenchError):
    """Two artifacts that must agree do not (base fingerprints, target modules, masks and adapters)."""


class ConfigError(WorkbenchError):
    """A configuration value is invalid."""


class NonFiniteError(WorkbenchError):
    """A loss or tensor became NaN or infinite."""


def did_you_mean(name: str, choices) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, choices) -> WorkbenchError:
    """Build the standard 'unknown X' error with the valid names and a suggestion."""
    valid = ", ".join(sorted(str(c) for c in choices))
    return ConfigError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}; valid: {valid}")
