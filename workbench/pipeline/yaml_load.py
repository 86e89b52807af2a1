"""YAML loading that remembers where every value came from, and refuses YAML 1.1 surprises.

Why not ``yaml.safe_load``: it forgets line numbers (so a schema error could not point at the line),
silently keeps the last of two duplicate keys, reads ``1e-4`` as a *string* (PyYAML's float pattern
needs a dot), ``no``/``on`` as booleans and ``010`` as octal 8. Here the document is composed into
nodes first and walked by hand, so each mapping key and list item gets its ``file:line`` and each trap
is reported as an :class:`Issue` next to the schema errors, all at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple  # a location inside the tree: ("stages", "math", "rank") or ("stages", "e", "tasks", 1)

_FLOAT_EXP = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")
_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$")
_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


class LineLoader(yaml.SafeLoader):
    """SafeLoader that also resolves ``1e-4``-style floats (YAML 1.2 reads them as floats)."""


# add_implicit_resolver shares the parent's per-character lists; copy them so SafeLoader is untouched.
LineLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
LineLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_EXP, list("-+0123456789"))


@dataclass
class Issue:
    """A problem found while reading: where it is (``loc`` prefix and tree path) and what it is."""

    where: str
    path: Path_
    message: str


@dataclass
class Located:
    """A loaded tree plus, for each path, the text that locates it (``file:line`` or ``--set k``)."""

    tree: Any
    locs: dict = field(default_factory=dict)
    bool_words: dict = field(default_factory=dict)
    issues: list = field(default_factory=list)
    origin: str = "<string>"

    def where(self, path: Path_) -> str:
        """The location of ``path`` or of its nearest located ancestor."""
        path = tuple(path)
        while path:
            if path in self.locs:
                return self.locs[path]
            path = path[:-1]
        return self.locs.get((), self.origin)


class YamlSyntaxError(Exception):
    """The text is not YAML; ``where`` is ``file:line``."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


def load_located(text: str, origin: str) -> Located:
    """Parse ``text`` into plain dicts/lists/scalars with a location for every key and item.

    Args:
        text: YAML source.
        origin: the file name used in locations (``origin:line``).

    Returns:
        A :class:`Located`; ``issues`` lists duplicate keys and YAML 1.1 traps (never raised).

    Raises:
        YamlSyntaxError: the text does not parse, or uses a tag SafeLoader refuses.
    """
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        located = Located(None, {(): f"{origin}:1"}, origin=origin)
        if node is not None:
            located.locs[()] = f"{origin}:{node.start_mark.line + 1}"
            located.tree = _Walker(loader, located, origin).value(node, ())
        return located
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSyntaxError(f"{origin}:{line}", f"YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"{origin}:1", f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def parse_scalar(text: str, where: str, path: Path_) -> Located:
    """Parse one ``--set`` value as YAML (same traps as in files); locations all read ``where``."""
    located = load_located(text, where)
    out = Located(located.tree, {}, origin=where)
    for p in located.locs:
        out.locs[tuple(path) + p] = where
    out.bool_words = {tuple(path) + p: w for p, w in located.bool_words.items()}
    out.issues = [Issue(where, tuple(path) + i.path, i.message) for i in located.issues]
    return out


class _Walker:
    """Builds Python values from composed nodes, recording locations and traps on the way."""

    def __init__(self, loader: LineLoader, located: Located, origin: str):
        self.loader, self.located, self.origin = loader, located, origin
        self.active: set[int] = set()

    def where(self, node) -> str:
        return f"{self.origin}:{node.start_mark.line + 1}"

    def value(self, node, path: Path_):
        if id(node) in self.active:  # a recursive alias (&a [*a]) would never end
            raise yaml.constructor.ConstructorError(None, None, "recursive alias", node.start_mark)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node, path)
            return self.scalar(node, path)
        finally:
            self.active.discard(id(node))

    def mapping(self, node, path: Path_) -> dict:
        self.loader.flatten_mapping(node)  # resolves '<<' merge keys in place
        out: dict = {}
        first_line: dict = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, path)
            line = key_node.start_mark.line + 1
            if key in out:
                self.issue(key_node, path + (key,), f"duplicate key '{key}' (first at line {first_line[key]})")
                continue
            first_line[key] = line
            self.located.locs[path + (key,)] = self.where(key_node)
            out[key] = self.value(value_node, path + (key,))
        return out

    def key(self, key_node, path: Path_):
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value",
                                                    key_node.start_mark)
        key = self.loader.construct_object(key_node, deep=True)
        if key_node.style is None and isinstance(key, bool) and key_node.value.lower() in _BOOL_WORDS:
            # keep the name as written so only this one message is reported for it
            self.issue(key_node, path + (key_node.value,), _bool_message(key_node.value, key))
            return key_node.value
        return key

    def sequence(self, node, path: Path_) -> list:
        out = []
        for i, item in enumerate(node.value):
            self.located.locs[path + (i,)] = self.where(item)
            out.append(self.value(item, path + (i,)))
        return out

    def scalar(self, node, path: Path_):
        value = self.loader.construct_object(node, deep=True)
        if node.style is None:
            self.check_trap(node, value, path)
        return value

    def check_trap(self, node, value, path: Path_) -> None:
        text = node.value
        if isinstance(value, bool) and text.lower() in _BOOL_WORDS:
            self.located.bool_words[path] = text  # an error only where a string was expected
        elif isinstance(value, int) and not isinstance(value, bool) and _LEADING_ZERO.match(text):
            self.issue(node, path, f"'{text}' has a leading zero, which YAML 1.1 reads as the octal number "
                                   f"{value}; write {int(text.replace('_', ''), 10)} (decimal) or quote it")
        elif isinstance(value, (int, float)) and _SEXAGESIMAL.match(text):
            self.issue(node, path, f"'{text}' is read by YAML 1.1 as the base-60 number {value}; quote it")

    def issue(self, node, path: Path_, message: str) -> None:
        self.located.issues.append(Issue(self.where(node), path, message))


def _bool_message(text: str, value: bool) -> str:
    """The message for yes/no/on/off where a string was meant."""
    return (f"'{text}' is read by YAML 1.1 as the boolean {str(value).lower()}; "
            f"quote it (\"{text}\") if you mean the name")


def bool_word_message(text: str) -> str:
    """Public form of the yes/no message, for schema errors on values recorded in ``bool_words``."""
    return _bool_message(text, text.lower() in {"yes", "on", "y"})


def read_located(path: str | Path) -> Located:
    """Read a YAML file; missing or unreadable files raise ``YamlSyntaxError`` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlSyntaxError(str(p), "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlSyntaxError(str(p), f"cannot read: {exc}") from None
    return load_located(text, str(p))
