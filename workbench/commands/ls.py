"""``workbench ls pipelines|methods|merges|tasks|scopes``: what is available, one per line."""

from __future__ import annotations

from pathlib import Path

KINDS = ("pipelines", "methods", "merges", "tasks", "scopes")


def add_parser(sub) -> None:
    p = sub.add_parser("ls", help="list pipelines, adapter methods, merge strategies, tasks or mask scopes")
    p.add_argument("what", choices=KINDS)
    p.add_argument("--dir", default="pipelines", help="where to look for pipeline files (default ./pipelines)")
    p.set_defaults(func=run)


def _registry(what: str):
    if what == "methods":
        from workbench.adapters.registry import METHODS, get_method

        get_method("lora")  # imports the built-in methods
        return METHODS
    if what == "merges":
        from workbench.merges.registry import MERGES

        return MERGES
    if what == "tasks":
        from workbench.data.registry import TASKS

        return TASKS
    from workbench.masking.scopes import SCOPES

    return SCOPES


def _first_comment(path: Path) -> str:
    line = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    return line.lstrip("# ").strip()


def run(args) -> int:
    if args.what == "pipelines":
        for path in sorted(Path(args.dir).glob("*.yaml")):
            print(f"{path}  ({_first_comment(path)})")
        return 0
    reg = _registry(args.what)
    for name in reg.names():
        ref = reg.entry(name).reference
        print(f"{name:<18} {ref}" if ref else name)
    return 0
