"""Pipeline plugins: Python files named under ``plugins:`` that register merge strategies, methods or tasks.

A plugin is imported when the pipeline is loaded (``workbench validate`` included: it is code, and it
runs), before names are checked, so a pipeline can use ``strategy: my_merge`` from its own file. Each
file is imported once per content: loading the same pipeline again does not register twice. What a
plugin registered is recorded, so the stages that use its names get the file in their cache key: editing
the plugin re-runs them, and nothing else.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from workbench.pipeline import names
from workbench.pipeline.problems import Problem, problem_at
from workbench.pipeline.yaml_load import Located

# resolved path -> (content sha256, {what: names it registered})
_LOADED: dict[Path, tuple[str, dict[str, list[str]]]] = {}


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


def load_plugins(raw, base_dir: Path, located: Located) -> tuple[list[Problem], dict[str, dict[str, str]]]:
    """Import every plugin of a pipeline tree's ``plugins`` list.

    Args:
        raw: the tree's ``plugins`` value (a list of paths relative to the pipeline file; anything else is
            left to the schema to report).
        base_dir: the pipeline file's directory.
        located: for error lines.

    Returns:
        ``(problems, provides)``: a located problem per file that is missing or fails to import, and
        ``{what: {name: plugin file}}`` for the names the plugins registered.
    """
    problems, provides = [], {}
    if not isinstance(raw, list):
        return problems, provides
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
            added = import_plugin(path)
        except Exception as exc:  # noqa: BLE001 - the plugin's own error, reported at its line
            last = traceback.extract_tb(exc.__traceback__)[-1]
            problems.append(problem_at(located, where, f"importing plugin '{entry}' failed: {type(exc).__name__}: "
                                                       f"{exc} ({Path(last.filename).name}:{last.lineno})"))
            continue
        for what, registered in added.items():
            provides.setdefault(what, {}).update({n: str(path) for n in registered})
    return problems, provides
