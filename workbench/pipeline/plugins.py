"""Pipeline plugins: Python files named under ``plugins:`` that register merge strategies, methods or tasks.

A pipeline file is data (people share them like mergekit YAML), so a plugin it names runs only when the
command line says so: ``--allow-plugins`` on ``workbench run``/``validate``, ``WORKBENCH_ALLOW_PLUGINS=1``
in the environment, or ``allow_plugins=True`` in the Python API. Code the user writes and runs themselves
(``@register_merge`` in their own script) needs none of this: only files named by a pipeline are gated.

Allowed, a plugin is imported when the pipeline is loaded, before names are checked, so a pipeline can use
``strategy: my_merge`` from its own file. Each file is imported once per content: loading the same
pipeline again does not register twice. Not allowed, the file is only read (:mod:`plugin_scan`: its
syntax tree, never executed) to find the names it registers; ``workbench run`` then refuses the pipeline.
Either way what a plugin registers is recorded, so the stages that use its names get the file in their
cache key: editing the plugin re-runs them, and nothing else.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from workbench.errors import ConfigError
from workbench.pipeline import names
from workbench.pipeline.plugin_scan import PluginRead, read_plugin
from workbench.pipeline.problems import Problem, problem_at
from workbench.pipeline.yaml_load import Located

# resolved path -> (content sha256, {what: names it registered})
_LOADED: dict[Path, tuple[str, dict[str, list[str]]]] = {}

ENV_SWITCH = "WORKBENCH_ALLOW_PLUGINS"
FLAG = "--allow-plugins"


class PluginsNotAllowedError(ConfigError):
    """A pipeline names plugin files and the command line did not allow running them."""


def plugins_allowed(allow: bool | None) -> bool:
    """The caller's choice; None defers to ``WORKBENCH_ALLOW_PLUGINS`` (``1``, ``true`` or ``yes``: allowed)."""
    if allow is not None:
        return bool(allow)
    return os.environ.get(ENV_SWITCH, "").strip().lower() in ("1", "true", "yes")


def refusal(source: str, reads: list[PluginRead]) -> PluginsNotAllowedError:
    """The one-line error ``workbench run`` gives for plugins that were read but not allowed to run."""
    files = ", ".join(str(r.path) for r in reads)
    return PluginsNotAllowedError(f"{source}: plugins: this pipeline runs Python code from {files}; it was not "
                                  f"run. Read the file(s), then pass {FLAG} (or set {ENV_SWITCH}=1) to allow it")


def _registered() -> dict[str, set[str]]:
    return {what: set(names.known_names(what) or ()) for what in names.SOURCES}


def import_plugin(path: Path) -> dict[str, list[str]]:
    """Import one plugin file (a resolved path; once per content). Returns ``{what: [names it registered]}``.

    Raises:
        whatever the plugin's code raises.
    """
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path in _LOADED and _LOADED[path][0] == digest:
        return _LOADED[path][1]
    before = _registered()
    module_name = f"workbench_plugin_{path.stem}_{digest[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    after = _registered()
    added = {what: sorted(after[what] - before[what]) for what in after if after[what] - before[what]}
    _LOADED[path] = (digest, added)
    return added


def load_plugins(raw, base_dir: Path, located: Located, allow: bool = True
                 ) -> tuple[list[Problem], dict[str, dict[str, str]], list[PluginRead]]:
    """Import (``allow``) or only read every plugin of a pipeline tree's ``plugins`` list.

    Args:
        raw: the tree's ``plugins`` value (a list of paths relative to the pipeline file; anything else is
            left to the schema to report).
        base_dir: the pipeline file's directory.
        located: for error lines.
        allow: import the files (their code runs); False reads them without running anything.

    Returns:
        ``(problems, provides, reads)``: a located problem per file that is missing or fails to import (or,
        read only, to parse); ``{what: {name: plugin file}}`` for the names the plugins registered (or
        were read to register); and, read only, each file's :class:`PluginRead` (empty when imported).
    """
    problems, provides, reads = [], {}, []
    if not isinstance(raw, list):
        return problems, provides, reads
    for i, entry in enumerate(raw):
        if not isinstance(entry, str):
            continue
        path = Path(entry).expanduser()
        path = (path if path.is_absolute() else base_dir / path).resolve()
        where = ("plugins", i)
        if not path.is_file():
            problems.append(problem_at(located, where, f"plugin file '{entry}' not found (looked at {path})"))
            continue
        try:
            added = import_plugin(path) if allow else _read(path, entry, reads)
        except Exception as exc:  # noqa: BLE001 - the plugin's own error, reported at its line
            problems.append(problem_at(located, where, _failure(entry, exc, allow)))
            continue
        for what, registered in added.items():
            provides.setdefault(what, {}).update({n: str(path) for n in registered})
    return problems, provides, reads


def _read(path: Path, entry: str, reads: list[PluginRead]) -> dict[str, list[str]]:
    read = read_plugin(path, entry)
    reads.append(read)
    return read.names


def _failure(entry: str, exc: Exception, imported: bool) -> str:
    if isinstance(exc, SyntaxError):  # also when only read: importing it would fail the same way
        return f"plugin '{entry}' is not valid Python: {exc.msg} ({Path(exc.filename or entry).name}:{exc.lineno})"
    if not imported:
        return f"reading plugin '{entry}' failed: {type(exc).__name__}: {exc}"
    last = traceback.extract_tb(exc.__traceback__)[-1]
    return (f"importing plugin '{entry}' failed: {type(exc).__name__}: {exc} "
            f"({Path(last.filename).name}:{last.lineno})")
