"""``--set stages.math.rank=16``: dotted overrides applied to the raw tree *before* validation.

Applying them before the schema sees the tree means an override gets exactly the checks and messages a
value in the file gets; its location reads ``--set stages.math.rank`` instead of ``file:line``.
"""

from __future__ import annotations

from typing import Iterable

from workbench.errors import did_you_mean
from workbench.pipeline.problems import Problem, dotted_path
from workbench.pipeline.yaml_load import Located, YamlSyntaxError, parse_scalar


_SECTIONS = ("base", "defaults", "tasks")


def parse_override(text: str) -> tuple[tuple, str]:
    """``"stages.math.rank=16"`` -> ``(("stages", "math", "rank"), "16")``; list indexes become ints.

    Raises:
        ValueError: no ``=``, or an empty key segment.
    """
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ValueError(f"--set {text}: expected KEY=VALUE with a dotted KEY, e.g. stages.math.rank=16")
    return tuple(int(p) if p.isdigit() else p for p in parts), value


def apply_overrides(located: Located, overrides: Iterable[str]) -> list[Problem]:
    """Apply each override to ``located.tree`` in place. Returns the problems (never raises for bad input)."""
    problems = []
    for text in overrides:
        try:
            path, value_text = parse_override(text)
        except ValueError as exc:
            problems.append(Problem(f"--set {text}", (), str(exc).split(": ", 1)[1]))
            continue
        where = f"--set {dotted_path(path)}"
        try:
            value = parse_scalar(value_text, where, path)
        except YamlSyntaxError as exc:
            problems.append(Problem(where, (), f"value is not valid YAML: {exc.message}"))
            continue
        error = _assign(located.tree, path, value.tree)
        if error:
            problems.append(Problem(where, (), error))
            continue
        _forget_below(located, path)
        located.locs.update(value.locs)
        located.bool_words.update(value.bool_words)
        problems.extend(Problem(i.where, i.path, i.message) for i in value.issues)
    return problems


def _assign(tree, path: tuple, value) -> str | None:
    """Set ``tree[path] = value``; returns an error message when the path does not lead anywhere."""
    node = tree
    for depth, part in enumerate(path[:-1]):
        if depth == 0 and isinstance(node, dict) and part in _SECTIONS and part not in node:
            node[part] = {}  # `--set defaults.rank=16` on a file without a defaults section
        node = _child(node, part)
        if isinstance(node, str):
            return f"{node} (at '{dotted_path(path[:depth + 1])}')"
    last = path[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last <= len(node):
        node[last:last + 1] = [value]
    else:
        return f"cannot set '{last}' inside a {type(node).__name__} (at '{dotted_path(path[:-1])}')"
    return None


def _child(node, part):
    """The child at ``part``, or an error message string when there is none."""
    if isinstance(node, dict):
        if part in node and isinstance(node[part], (dict, list)):
            return node[part]
        if part in node:
            return f"'{part}' holds a single value, not a mapping"
        return f"no key '{part}'{did_you_mean(part, [str(k) for k in node])}"
    if isinstance(node, list) and isinstance(part, int):
        return node[part] if part < len(node) else f"index {part} is past the end (length {len(node)})"
    return f"cannot look up '{part}' inside a {type(node).__name__}"


def _forget_below(located: Located, path: tuple) -> None:
    """Drop file locations under an overridden path: errors there come from the override now."""
    n = len(path)
    for table in (located.locs, located.bool_words):
        for p in [p for p in table if p[:n] == path]:
            del table[p]
    located.locs[path] = f"--set {dotted_path(path)}"
