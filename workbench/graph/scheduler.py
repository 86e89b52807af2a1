"""Graph checks and scheduling with networkx: named errors for cycles, self-loops, dangling references.

Two levels: :func:`check_dependencies` works on names (a pipeline before its tasks exist, where a cycle
is still possible) and :func:`schedule` orders built :class:`Task` values, merging equal tasks.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import networkx as nx

from workbench.errors import ConfigError, did_you_mean
from workbench.graph.task import Task


class GraphError(ConfigError):
    """The stage graph is not a DAG of known, uniquely named stages."""


def dependency_graph(deps: Mapping[str, Sequence[str]]) -> nx.DiGraph:
    """Edges ``dependency -> stage`` for every known name (unknown names are left out)."""
    g = nx.DiGraph()
    g.add_nodes_from(deps)
    for name, needs in deps.items():
        g.add_edges_from((d, name) for d in needs if d in deps)
    return g


def find_cycles(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each cycle once, as names in dependency order starting at its smallest name; self-loops included."""
    g = dependency_graph(deps)
    cycles = []
    for comp in nx.strongly_connected_components(g):
        if len(comp) > 1 or any(g.has_edge(n, n) for n in comp):
            cycles.append(_cycle_path(g.subgraph(comp)))
    return sorted(cycles)


def _cycle_path(sub: nx.DiGraph) -> list[str]:
    """One concrete cycle inside a strongly connected component, rotated to start at its least name."""
    edges = nx.find_cycle(sub, source=min(sub.nodes))
    path = [u for u, _ in edges]
    start = path.index(min(path))
    return path[start:] + path[:start]


def format_cycle(cycle: Sequence[str]) -> str:
    """``['safety', 'math']`` -> ``'safety -> math -> safety'``."""
    return " -> ".join([*cycle, cycle[0]])


def check_dependencies(nodes: Iterable[tuple[str, Sequence[str]]]) -> list[str]:
    """Check named stages and return them in a stable topological order.

    Args:
        nodes: ``(name, names it depends on)`` pairs.

    Returns:
        The names, dependencies first (ties broken by the order given).

    Raises:
        GraphError: a duplicate name, a reference to an unknown stage, a self-loop or a cycle; the
            message names every stage involved.
    """
    nodes = list(nodes)
    deps: dict[str, list[str]] = {}
    dupes = sorted({n for n, _ in nodes if sum(1 for m, _ in nodes if m == n) > 1})
    if dupes:
        raise GraphError(f"duplicate stage names: {', '.join(dupes)}")
    for name, needs in nodes:
        deps[name] = list(needs)
    problems = [f"stage '{n}' refers to unknown stage '{d}'{did_you_mean(d, deps)}"
                for n, needs in deps.items() for d in needs if d not in deps]
    for cycle in find_cycles(deps):
        what = "refers to itself" if len(cycle) == 1 else "is in a cycle"
        problems.append(f"stage '{cycle[0]}' {what}: {format_cycle(cycle)}")
    if problems:
        raise GraphError("; ".join(problems))
    index = {n: i for i, n in enumerate(deps)}
    return list(nx.lexicographical_topological_sort(dependency_graph(deps), key=index.__getitem__))


def collect(tasks: Iterable[Task]) -> list[Task]:
    """Every named task given plus every task reachable through inputs, each name once, in first-seen order."""
    seen: dict[str, Task] = {}
    stack = list(tasks)[::-1]
    while stack:
        t = stack.pop()
        if t.name in seen:
            if seen[t.name] is not t and seen[t.name] != t:
                raise GraphError(f"duplicate stage names: two different stages are named '{t.name}'")
            continue
        seen[t.name] = t
        stack.extend(t for _, t in reversed(t.inputs))
    return list(seen.values())


def schedule(tasks: Iterable[Task]) -> list[list[Task]]:
    """Order tasks for execution, merging equal ones.

    Returns:
        Groups of equal tasks (same digest, possibly different names) in topological order; each
        group is executed once and its result shared by every name in it.

    Raises:
        GraphError: two different tasks share a name.
    """
    named = collect(tasks)
    groups: dict[Task, list[Task]] = {}
    for t in named:
        groups.setdefault(t, []).append(t)
    g = nx.DiGraph()
    g.add_nodes_from(groups)
    for t in named:
        g.add_edges_from((dep, t) for _, dep in t.inputs)
    index = {t: i for i, t in enumerate(groups)}  # ties keep the order the stages were given in
    order = nx.lexicographical_topological_sort(g, key=index.__getitem__)
    return [groups[t] for t in order]
