"""No package imports a package above it.

The layers, lowest first (a module may import only from strictly lower layers; packages that share a
layer may not import each other):

 0. ``errors``
 1. ``registry``, ``keys`` (adapter-file tensor keys), ``hashing`` (content hashes), ``settings`` (the
    training settings model, pydantic only), ``progress`` (progress lines), ``tracking`` (experiment-tracker
    settings and the accelerate trackers, imported on use)
 2. ``io`` (safetensors, adapter dirs, atomic writes): imports only errors, keys and hashing
 3. ``models`` (base models), ``data`` (tasks, data sets), ``graph`` (task contract, scheduler, run store)
 3b. ``protocols`` (named bundles of setting values; reads task kinds from ``data``)
 4. ``adapters`` (methods, PEFT format, live adapters)
 5. ``masking`` (mask values, calibration, mask files)
 6. ``merges``, ``train``, ``evaluate``, ``testing`` (the primitives built on adapters)
 7. ``analytics`` (reads adapters, masks, data and evaluation helpers)
 8. ``pipeline`` (schema, chain expansion, planning)
 9. ``stages`` (the only layer that wires the others together)
10. ``commands``
11. ``cli``
12. ``workbench/__init__.py`` (the public API; the package may take only the constants it defines
    itself, such as ``__version__``)

Every import counts, at module level or inside a function (a function-local import is still a
dependency, only a later one), and so does ``importlib.import_module`` of a literal ``workbench.`` name.
The order follows docs STYLE.md ("lower layers stay lower") and the code: graph is torch-free and sits
low; analytics uses evaluation's prompt encoding, so it sits above evaluate.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("registry", "keys", "hashing", "settings", "progress", "tracking"),
    ("io",),
    ("models", "data", "graph"),
    ("protocols",),
    ("adapters",),
    ("masking",),
    ("merges", "train", "evaluate", "testing"),
    ("analytics",),
    ("pipeline",),
    ("stages",),
    ("commands",),
    ("cli",),
    ("__init__",),
]


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    src: str
    dst: str
    local: bool  # inside a function

    def __str__(self) -> str:
        where = " (inside a function)" if self.local else ""
        return f"{self.file}:{self.line}: {self.src} imports {self.dst}{where}"


def top_of(path: Path, root: Path) -> str:
    """The top-level package or module a file belongs to (``io``, ``cli``, ``__init__``)."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def root_constants(root: Path) -> set[str]:
    """Names the package's ``__init__`` assigns itself at module level (``__version__``)."""
    tree = ast.parse((root / "__init__.py").read_text(encoding="utf-8"))
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)}


def _targets(node: ast.AST, module: str, root: Path, constants: set[str]) -> list[str]:
    """The dotted ``workbench.*`` names an import node (or import_module call) brings in; a name taken
    from the public API (``from workbench import load_adapter``) is the root itself, ``workbench``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against the importing module's package
            pkg = module.split(".")[: -node.level]
            base = ".".join(pkg + ([base] if base else []))
        if base == root.name:
            return [f"{base}.{a.name}" if (root / a.name).is_dir() or (root / f"{a.name}.py").is_file() else base
                    for a in node.names if a.name not in constants]
        return [base]
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every import of another top-level part of the package made by one file."""
    rel = path.relative_to(root.parent)
    module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
    src = top_of(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants = root_constants(root)
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for name in _targets(node, module, root, constants):
            parts = name.split(".")
            if parts[0] == root.name and len(parts) > 1 and parts[1] != src:
                found.append(Import(rel.as_posix(), node.lineno, src, parts[1], local))
            elif name == root.name and src != "__init__":
                found.append(Import(rel.as_posix(), node.lineno, src, "__init__", local))
        inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def violations(root: Path, layers: list[tuple[str, ...]]) -> tuple[list[Import], list[str]]:
    """``(upward or sideways imports, parts of the package no layer names)``."""
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    bad, unplaced = [], set()
    for path in sorted(root.rglob("*.py")):
        for imp in imports_of(path, root):
            for part in (imp.src, imp.dst):
                if part not in rank:
                    unplaced.add(part)
            if imp.src in rank and imp.dst in rank and rank[imp.dst] >= rank[imp.src]:
                bad.append(imp)
    for path in root.iterdir():
        name = path.name.removesuffix(".py")
        if (path.suffix == ".py" or (path / "__init__.py").is_file()) and name not in rank:
            unplaced.add(name)
    return bad, sorted(unplaced)


def test_no_package_imports_a_package_above_it():
    bad, unplaced = violations(PACKAGE, LAYERS)
    assert not unplaced, f"place these in LAYERS (and in this file's docstring): {unplaced}"
    assert not bad, "imports of a layer above (or beside) the importer:\n" + "\n".join(map(str, bad))


def test_io_imports_only_errors_keys_and_hashing():
    """The rule STYLE.md states for io, independent of how the layers above are ordered."""
    found = {i.dst for p in (PACKAGE / "io").rglob("*.py") for i in imports_of(p, PACKAGE)}
    assert found <= {"errors", "keys", "hashing"}, sorted(found)


def test_the_lowest_layers_and_io_atomic_import_no_torch():
    code = ("import sys; import workbench.errors, workbench.registry, workbench.keys, workbench.hashing, "
            "workbench.io.atomic; print(sorted(m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture
def fake_package(tmp_path):
    root = tmp_path / "workbench"

    def write(rel: str, text: str = "") -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)

    write("__init__.py", "__version__ = '1'\n")
    write("errors.py")
    write("io/__init__.py")
    write("adapters/__init__.py")
    return root, write


def test_the_check_catches_upward_sideways_local_relative_and_dynamic_imports(fake_package):
    root, write = fake_package
    layers = [("errors",), ("io",), ("adapters", "masking"), ("__init__",)]
    write("io/a.py", "from workbench.errors import X\nfrom workbench import __version__\n")  # fine
    write("io/b.py", "import workbench.adapters.x\n")
    write("io/c.py", "def f():\n    from ..adapters import y\n")
    write("io/d.py", "import importlib\nimportlib.import_module('workbench.adapters.z')\n")
    write("io/e.py", "from workbench import adapters\n")
    write("masking/__init__.py", "from workbench.adapters import x\n")
    write("errors.py", "from workbench import load_adapter\n")
    bad, unplaced = violations(root, layers)
    assert [str(i) for i in bad] == [
        "workbench/errors.py:1: errors imports __init__",
        "workbench/io/b.py:1: io imports adapters",
        "workbench/io/c.py:2: io imports adapters (inside a function)",
        "workbench/io/d.py:2: io imports adapters",
        "workbench/io/e.py:1: io imports adapters",
        "workbench/masking/__init__.py:1: masking imports adapters",
    ]
    assert unplaced == []


def test_the_check_names_a_package_no_layer_places(fake_package):
    root, write = fake_package
    write("newpkg/__init__.py")
    write("tool.py", "from workbench.errors import X\n")
    assert violations(root, [("errors",), ("io",), ("adapters",), ("__init__",)])[1] == ["newpkg", "tool"]
