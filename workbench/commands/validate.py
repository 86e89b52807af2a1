"""``workbench validate PIPELINE [--protocol workbench|official]``: check a pipeline file or chain without
loading a weight (``validate 'safety->math' --protocol official`` prints the official continual protocol's stages).

Prints the stages in execution order; with ``--out RUN_DIR`` (an existing run), also which stages are
cached (hit) and which would run (miss). Every error is printed at once as ``file:line: path: message``.

Files under ``plugins:`` are read, never run, unless ``--allow-plugins`` is given: the output then says what
each file was read to register and which names the stages need from them (found, or unchecked when the
file registers something the reader cannot see without running it).
"""

from __future__ import annotations

from workbench.commands import add_allow_plugins, add_list_option, add_protocol, add_trust_remote_code


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("validate", help="check a pipeline (file or chain) without loading weights")
    p.add_argument("pipeline", metavar="PIPELINE",
                   help="a pipeline YAML file, or a quoted chain such as 'safety->math->code'")
    add_list_option(p, "--set", dest="overrides", metavar="KEY=VALUE",
                   help="override a value before validation, e.g. --set stages.math.rank=16 (several: --set a=1 b=2 or repeated)")
    p.add_argument("--out", metavar="RUN_DIR", help="an existing run directory: show cache hits and misses")
    p.add_argument("--method", default="lori_s", help="chain only: adapter method (default lori_s)")
    p.add_argument("--preset", default="quick", choices=["quick", "default", "signal", "paper"], help="chain only")
    add_list_option(p, "--compare", metavar="METHOD",
                   help="chain only: also run this method on the same chain (several: --compare a b or repeated; "
                        "PROTOCOL:METHOD, e.g. official:lori_s, validates that protocol's chain too)")
    add_protocol(p)
    add_allow_plugins(p)
    add_trust_remote_code(p, pipeline=True)
    p.set_defaults(func=handler)


def handler(args) -> int:
    from workbench.pipeline import validate
    from workbench.stages.cross_protocol import split_compare

    options = dict(method=args.method, preset=args.preset, compare=args.compare, allow_plugins=args.allow_plugins,
                   protocol=args.protocol, trust_remote_code=args.trust_remote_code)
    # --compare PROTOCOL:METHOD: one pipeline per protocol, each validated (as `workbench run --seeds` runs them)
    for label, opts in split_compare(args.pipeline, options):
        result = validate(args.pipeline, args.overrides, run_dir=None if label else args.out, **opts)
        print(format_validation(result))
    return 0


def format_validation(result) -> str:
    """``ok: <source> (<name>): N stages`` and one line per stage, with hit/miss when planned."""
    pipe = result.pipeline
    lines = [f"ok: {pipe.source} ({pipe.name}): {len(pipe.order())} stages"]
    status = {row.task.name: (row.status, row.key[:12]) for row in result.plan or []}
    width = max(len(n) for n in pipe.order())
    for i, name in enumerate(pipe.order(), 1):
        task = pipe.task(name)
        extra = f"  {status[name][0]:<4}  {status[name][1]}" if name in status else ""
        lines.append(f"{i:3d}. {name:<{width}}  {task.kind:<9}{extra}")
    return "\n".join(lines + format_plugins(pipe))


def format_plugins(pipe) -> list[str]:
    """Lines on the plugins: imported (what they registered), or read and not run (what the stages need)."""
    if not pipe.plugin_reads:
        files = sorted({f for provided in pipe.provides.values() for f in provided.values()})
        return [f"plugin imported: {f}: registers {_names(pipe.provides, f)}" for f in files]
    from workbench.pipeline.plugins import ENV_SWITCH, FLAG
    from workbench.pipeline.problems import dotted_path

    lines = [f"plugins not loaded (read, not run; `workbench run` refuses them without {FLAG} or {ENV_SWITCH}=1):"]
    entry = {str(r.path): r.entry for r in pipe.plugin_reads}
    for r in pipe.plugin_reads:
        found = "; ".join(f"{what} {', '.join(ns)}" for what, ns in sorted(r.names.items())) or "nothing it could read"
        lines.append(f"  {r.entry}: registers {found}")
        lines += [f"    cannot tell without running it: {u}" for u in r.unresolved]
    if pipe.plugin_needs:
        lines.append("names the stages need from the plugins:")
    for need in pipe.plugin_needs:
        files = ", ".join(entry.get(f, f) for f in need.files)
        state = f"registered by {files} (read)" if need.found else f"unchecked (may come from {files} when it runs)"
        lines.append(f"  {dotted_path(need.path)}: {need.what} '{need.name}': {state}")
    return lines


def _names(provides: dict, file: str) -> str:
    return "; ".join(f"{what} {', '.join(sorted(n for n, f in named.items() if f == file))}"
                     for what, named in sorted(provides.items()) if file in named.values())
