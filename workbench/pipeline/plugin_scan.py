"""Reading a plugin file without running it: which names it registers, found in its syntax tree.

``workbench validate`` (and any load without ``allow_plugins``) must not execute a file that came with a
pipeline, yet it should still say whether the names the stages use will exist. Nothing in the standard
library or our dependencies answers "what would this module register" without importing it, so this
module reads the file with :mod:`ast` (parsing never runs code) and recognises the registration calls,
which have a small, known shape:

- ``@register_merge("x")`` / ``register_merge("x")(fn)`` -> merge strategy ``x``; likewise
  ``register_method`` (method), ``register_stage_kind`` (stage kind), also as ``workbench.register_merge``
  or under an ``import ... as`` alias;
- ``register_task(custom_task("x", ...))``, or ``register_task(T)`` with ``T = custom_task("x", ...)`` at
  the top of the file -> task ``x``;
- ``MERGES.register("x")`` / ``MERGES.add("x", ...)``, likewise ``METHODS``, ``TASKS``, ``SCOPES`` and
  ``STAGE_KINDS``.

A name is read when it is a string literal, a module-level constant bound once to one, or the ``name=``
keyword (else the first argument) of a call such as ``custom_task``. What the reader cannot follow is
recorded as *unresolved*, with its line: a registration whose name is computed makes every name of that
kind unchecked; ``exec``/``eval``/``importlib`` and imports of modules next to the plugin could register
anything, so they make every kind unchecked. Unchecked is not an error: importing the plugin
(``--allow-plugins``) decides.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

# function (or decorator) name -> what it registers
REGISTER_FUNCS = {"register_merge": "merge strategy", "register_method": "method", "register_task": "task",
                  "register_stage_kind": "stage kind"}
# registry object -> what it holds (``.register(name)`` / ``.add(name, obj)``)
REGISTRIES = {"MERGES": "merge strategy", "METHODS": "method", "TASKS": "task", "SCOPES": "mask scope",
              "STAGE_KINDS": "stage kind"}
REGISTRY_METHODS = ("register", "add")
# calls that run code the reader cannot see
DYNAMIC_CALLS = {"exec", "eval", "compile", "__import__", "import_module", "run_path", "run_module",
                 "spec_from_file_location", "exec_module", "load_module"}


@dataclass(frozen=True)
class Unresolved:
    """A place the reader could not follow. ``what``: the kind it could register, None for any kind."""

    what: str | None
    line: int
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.why}"


@dataclass(frozen=True)
class PluginRead:
    """What reading one plugin file found (nothing of it was executed)."""

    entry: str  # as written under ``plugins:``
    path: Path  # resolved
    names: dict = field(default_factory=dict)  # {what: sorted names registered with a literal name}
    unresolved: tuple = ()  # Unresolved places

    def may_register(self, what: str) -> bool:
        """Whether the file could register a ``what`` name the reader did not find."""
        return any(u.what in (None, what) for u in self.unresolved)


@dataclass(frozen=True)
class NeededName:
    """A name a stage uses that only the plugins (read, not run) can provide.

    ``found``: a plugin was read to register it (``files`` names which); otherwise it is unchecked, and
    ``files`` are the plugins that could still register it when they run.
    """

    path: tuple  # where the pipeline uses it, e.g. ('stages', 'largest', 'strategy')
    what: str
    name: str
    files: tuple
    found: bool


def read_plugin(path: Path, entry: str | None = None) -> PluginRead:
    """Parse ``path`` (never import it) and collect what it registers.

    Args:
        path: the plugin file, resolved.
        entry: the file as written in the pipeline (for messages); default ``path``.

    Returns:
        The :class:`PluginRead`.

    Raises:
        SyntaxError: the file is not valid Python (it would fail to import too).
        UnicodeDecodeError: the file is not UTF-8 text.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    reader = _Reader(tree, path.parent)
    reader.visit(tree)
    names = {what: sorted(set(ns)) for what, ns in reader.names.items()}
    return PluginRead(entry or str(path), path, names, tuple(reader.unresolved))


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    """Top-level ``NAME = value`` bindings made exactly once (a rebound name is not trusted)."""
    seen: dict[str, list[ast.expr]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            seen.setdefault(node.targets[0].id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            seen.setdefault(node.target.id, []).append(node.value)
    return {name: values[0] for name, values in seen.items() if len(values) == 1}


class _Reader(ast.NodeVisitor):
    def __init__(self, tree: ast.Module, here: Path):
        self.constants = _module_constants(tree)
        self.here = here
        self.aliases: dict[str, str] = {}  # local name -> REGISTER_FUNCS / REGISTRIES key it stands for
        self.names: dict[str, list[str]] = {}
        self.unresolved: list[Unresolved] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._local_import(node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.unresolved.append(Unresolved(None, node.lineno, "a relative import (not read)"))
        else:
            self._local_import(node, node.module or "")
        for alias in node.names:
            if alias.name in REGISTER_FUNCS or alias.name in REGISTRIES:
                self.aliases[alias.asname or alias.name] = alias.name
        self.generic_visit(node)

    def _local_import(self, node: ast.stmt, module: str) -> None:
        top = module.split(".")[0]
        # `workbench` is the installed package even when a checkout sits next to the plugin
        if top and top != "workbench" and ((self.here / f"{top}.py").is_file() or (self.here / top).is_dir()):
            self.unresolved.append(Unresolved(None, node.lineno, f"imports the local module '{module}' (not read)"))

    def visit_Call(self, node: ast.Call) -> None:
        what, short = self._registration(node.func)
        if what is not None:
            arg = _name_argument(node)
            name = None if arg is None else self._name_of(arg)
            if name is None:
                self.unresolved.append(Unresolved(what, node.lineno, f"{short}(...) with a name that is computed"))
            else:
                self.names.setdefault(what, []).append(name)
        elif _called_name(node.func) in DYNAMIC_CALLS:
            self.unresolved.append(Unresolved(None, node.lineno, f"{_called_name(node.func)}(...) runs code "
                                                                  "that is not read"))
        self.generic_visit(node)

    def _registration(self, func: ast.expr) -> tuple[str | None, str]:
        """(what, display name) when ``func`` is a registration function or a registry's register/add."""
        called = _called_name(func)
        key = self.aliases.get(called, called) if isinstance(func, ast.Name) else called
        if key in REGISTER_FUNCS:
            return REGISTER_FUNCS[key], called
        if isinstance(func, ast.Attribute) and func.attr in REGISTRY_METHODS:
            owner = _called_name(func.value)
            owner_key = self.aliases.get(owner, owner) if isinstance(func.value, ast.Name) else owner
            if owner_key in REGISTRIES:
                return REGISTRIES[owner_key], f"{owner}.{func.attr}"
        return None, called

    def _name_of(self, node: ast.expr, depth: int = 0) -> str | None:
        """The registered name an argument stands for, when it can be read without running anything."""
        if depth > 4:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self._name_of(self.constants[node.id], depth + 1)
        if isinstance(node, ast.Call):  # custom_task("x", ...), SomeKind(name="x", ...)
            arg = _name_argument(node)
            return None if arg is None else self._name_of(arg, depth + 1)
        return None


def _called_name(func: ast.expr) -> str:
    """``f`` for ``f(...)``, ``attr`` for ``a.b.attr(...)``, else ''."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _name_argument(call: ast.Call) -> ast.expr | None:
    """The ``name=`` keyword of a call, else its first positional argument."""
    for kw in call.keywords:
        if kw.arg == "name":
            return kw.value
    return call.args[0] if call.args and not isinstance(call.args[0], ast.Starred) else None
