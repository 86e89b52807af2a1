"""Seeds as an axis: ``workbench run CHAIN_OR_FILE --seeds 0,1,2`` runs the pipeline once per seed and
writes one aggregated report over them.

Layout::

    OUT/seed-<s>/     one ordinary run directory per seed (``--set defaults.seed=<s>``: data order and
                      every A), with its own manifest, stages, report/ and summary.md
    OUT/report/       the aggregated report: report.json, report.md, report.html (same numbers)
    OUT/<protocol>/   with ``--compare PROTOCOL:METHOD``: that protocol's chain, seed-<s>/ and report/ as
                      above; OUT/report/ then sets every protocol's methods side by side
                      (workbench/stages/cross_protocol.py)

Work that does not depend on the seed runs once. The run store is content-addressed: a stage's key
hashes its resolved parameters and its inputs' keys, and an evaluate stage's parameters hold no seed, so
the base-model evaluation has the same key in every seed's pipeline. Before a seed runs, every stage
whose key an earlier seed already finished is *adopted*: its manifest entry is recorded in this seed's
store pointing at the earlier seed's stage directory (with the artifact hashes, which the engine checks
as for any cache hit). Moving OUT/ breaks those absolute links; the stages then simply rerun.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from workbench.errors import ConfigError
from workbench.graph.task import StageResult

log = logging.getLogger("workbench.stages")
SEED_KEY = "defaults.seed"
# what load_pipeline takes of stream's options (the others say how to run: progress, trackers, executors)
LOAD_OPTIONS = ("method", "preset", "compare", "allow_plugins", "trust_remote_code", "protocol")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``.

    Raises:
        ConfigError: an entry that is not a non-negative integer, or a repeated seed (naming ``--seeds``).
    """
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t.isdigit() for t in items):
        raise ConfigError(f"--seeds '{text}': expected non-negative integers separated by commas, e.g. --seeds 0,1,2")
    seeds = [int(t) for t in items]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds '{text}': a seed appears more than once")
    return seeds


def seed_dir(root: Path, seed: int) -> Path:
    return Path(root) / f"seed-{seed}"


def _check_overrides(overrides: Iterable[str]) -> list[str]:
    overrides = list(overrides)
    if any(o.split("=", 1)[0].strip() == SEED_KEY for o in overrides):
        raise ConfigError(f"--seeds sets {SEED_KEY} for each run; drop --set {SEED_KEY}=... (or drop --seeds)")
    return overrides


def adopt_finished(pipeline, run_dir: Path, donors: list[Path]) -> list[str]:
    """Record in ``run_dir``'s store every stage an earlier run (``donors``) finished with the same key.

    Args:
        pipeline: the loaded pipeline of this run.
        run_dir: this run's directory (created).
        donors: finished run directories, searched in order.

    Returns:
        The names of the stages adopted (they will be cache hits).

    Raises:
        RunLockedError: another process is writing to ``run_dir``.
    """
    from workbench.graph.engine import plan
    from workbench.graph.lock import RunLock
    from workbench.graph.store import RunStore

    misses = [row for row in plan(pipeline, run_dir) if row.status == "miss"]
    stores = [RunStore(d) for d in donors if (d / "manifest.json").is_file()]
    if not misses or not stores:
        return []
    adopted = []
    with RunLock(run_dir):
        dest = RunStore(run_dir)
        for row in misses:
            found = _find_by_key(stores, row.key)
            if found is not None:
                store, entry, result = found
                dest.record(row.task.name, row.task, row.key, result, entry["started"], store._abs(entry["dir"]))
                adopted.append(row.task.name)
    return adopted


def _find_by_key(stores, key: str):
    """``(store, entry, verified result)`` of a finished stage with this key, or None."""
    for store in stores:
        for name, entry in store.manifest["stages"].items():
            if entry.get("key") == key:
                result = store.lookup(name, key)  # verifies the artifact hashes
                if result is not None:
                    return store, entry, result
    return None


def stage_keys(pipeline) -> dict[str, str]:
    """``{stage name: cache key}`` of a pipeline (as the engine computes them; nothing is read from a store)."""
    from workbench.graph.scheduler import schedule
    from workbench.graph.store import compute_keys

    keys = compute_keys(schedule(pipeline.tasks()))
    return {task.name: key for task, key in keys.items()}


def shared_stages(keys_by_seed: dict[int, dict[str, str]]) -> dict[int, list[str]]:
    """Per seed, the stages whose key an earlier seed's pipeline already has: the seed-independent work."""
    seen: set[str] = set()
    out = {}
    for s, keys in keys_by_seed.items():
        out[s] = [name for name, key in keys.items() if key in seen]
        seen |= set(keys.values())
    return out


def _with_seed(overrides: list[str], seed: int) -> list[str]:
    return [*overrides, f"{SEED_KEY}={seed}"]


def stream_seeds(pipeline_or_chain, out=None, overrides=(), seeds=(0,), *, progress: bool = True,
                 **options) -> Iterator[tuple[str, StageResult]]:
    """Run once per seed, then write OUT/report; yields ``("seed-<s>/<stage>", result)`` as stages finish
    and ``("report", result)`` last (artifact ``report``: the aggregated report's directory).

    Every seed's pipeline is validated before anything runs; each seed then runs as
    :func:`workbench.stages.run.stream` runs one pipeline (same checks, same per-run report). ``compare``
    entries ``PROTOCOL:METHOD`` run that protocol's chain as a second pipeline in ``OUT/<protocol>/``
    (yielding ``"<protocol>/seed-<s>/<stage>"``), and the report sets them beside the others
    (:mod:`workbench.stages.cross_protocol`).

    Args:
        pipeline_or_chain: a pipeline file or a chain (``"safety->math"``).
        out: the directory holding ``seed-<s>/`` and ``report/`` (default runs/<pipeline name>).
        overrides: ``--set`` values (not ``defaults.seed``: the seeds set it).
        seeds: the seeds, in order.
        progress: progress bars.
        **options: as :func:`workbench.stages.run.stream` (``method``, ``preset``, ``compare``,
            ``allow_plugins``, ``trust_remote_code``, ``protocol``, ``log_with``, ``jobs``, ``executor``, ...):
            each seed's run takes them all.

    Raises:
        ConfigError: no seeds, ``defaults.seed`` also given in ``overrides``, or a bad ``PROTOCOL:METHOD``.
        PipelineError: a seed's pipeline is invalid.
    """
    from workbench.stages.cross_protocol import split_compare
    from workbench.stages.run import default_run_dir

    seeds = list(seeds)
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    overrides = _check_overrides(overrides)
    parts = [(label, opts, _load_seeds(pipeline_or_chain, overrides, seeds, opts))
             for label, opts in split_compare(pipeline_or_chain, options)]
    root = Path(out) if out else default_run_dir(parts[0][2][seeds[0]])
    finished = []
    for label, opts, pipelines in parts:
        part_root = root / label if label else root
        runs, shared = {}, _shared(pipelines)  # once per pipeline: keys hash every stage's parameters
        for name, result in _run_seeds(pipeline_or_chain, part_root, overrides, pipelines, shared, progress, opts,
                                       runs):
            yield (f"{label}/{name}" if label else name), result
        finished.append(Part(label, opts, pipelines, runs, part_root, shared))
    for part in finished[1:]:  # each protocol's own report as well
        write_seed_report(part.root, part.pipelines, part.runs, part.shared)
    if len(finished) == 1:
        report = write_seed_report(root, finished[0].pipelines, finished[0].runs, finished[0].shared)
    else:
        report = write_combined_report(root, finished)
    yield "report", StageResult(artifacts={"report": report})


class Part(NamedTuple):
    """One protocol's pipelines of a ``--seeds`` run, once its seeds have run."""

    label: str  # "" for the main protocol, else the protocol (its runs live in ROOT/<label>/)
    options: dict
    pipelines: dict  # seed -> pipeline
    runs: dict  # seed -> {stage: result}
    root: Path
    shared: dict  # seed -> stages computed once for every seed


def _load_seeds(pipeline_or_chain, overrides: list[str], seeds: list, options: dict) -> dict:
    from workbench.pipeline import load_pipeline

    load_options = {k: v for k, v in options.items() if k in LOAD_OPTIONS}
    return {s: load_pipeline(pipeline_or_chain, _with_seed(overrides, s), **load_options) for s in seeds}


def _shared(pipelines: dict) -> dict:
    return shared_stages({s: stage_keys(p) for s, p in pipelines.items()})


def _run_seeds(pipeline_or_chain, root: Path, overrides: list[str], pipelines: dict, shared: dict, progress: bool,
               options: dict, runs: dict) -> Iterator[tuple[str, StageResult]]:
    """One pipeline's seeds, one after another; fills ``runs`` (``{seed: {stage: result}}``)."""
    from workbench.stages.run import stream

    seeds = list(pipelines)
    if len(seeds) > 1 and all(len(shared[s]) == len(pipelines[s].tasks()) for s in seeds[1:]):
        log.warning("no stage of this pipeline depends on %s (stages set their own seed): every seed repeats "
                    "seed %s's results", SEED_KEY, seeds[0])
    for s in seeds:
        run_dir = seed_dir(root, s)
        adopted = adopt_finished(pipelines[s], run_dir, [seed_dir(root, d) for d in runs])
        if adopted:
            log.info("seed %s: reusing %s from earlier seeds (same cache key)", s, ", ".join(adopted))
        results = {}
        for name, result in stream(pipeline_or_chain, run_dir, _with_seed(overrides, s), progress=progress, **options):
            results[name] = result
            yield f"seed-{s}/{name}", result
        runs[s] = results


def _seed_data(pipelines: dict, runs: dict) -> tuple[dict, dict, dict]:
    """``(data, groups, score points)`` of one pipeline's finished seeds, as build_seed_report takes them."""
    seeds = list(runs)
    groups = {s: _groups(pipelines[s], runs[s]) for s in seeds}
    data = {s: {"evals": _evals(pipelines[s], runs[s]), "summaries": _summaries(groups[s])} for s in seeds}
    shape = {g: {k: f[k] for k in ("tasks", "stages", "learned_at")} for g, f in groups[seeds[0]].items()}
    return data, shape, {s: _score_points(pipelines[s], runs[s]) for s in seeds}


def write_seed_report(root: Path, pipelines: dict, runs: dict, reused: dict) -> Path:
    """Build the aggregated report from finished seed runs and write it to ROOT/report/."""
    from workbench.analytics.seed_report import build_seed_report, write_report

    seeds = list(runs)
    data, groups, points = _seed_data(pipelines, runs)
    report = build_seed_report(seeds, data, groups, runs={s: seed_dir(root, s).name for s in seeds}, reused=reused,
                               pipeline=pipelines[seeds[0]].name, score_points=points)
    return write_report(report, Path(root) / "report")


def write_combined_report(root: Path, finished: list[Part]) -> Path:
    """ROOT/report/ over every pipeline of a cross-protocol run (``finished``: the main part first)."""
    from workbench.analytics.seed_report import build_seed_report, write_report
    from workbench.stages.cross_protocol import merge_parts, stage_name

    seeds = list(finished[0].runs)
    parts = []
    for part in finished:
        data, groups, points = _seed_data(part.pipelines, part.runs)
        method = part.options.get("method")
        # a one-method pipeline's matrix is named after the pipeline: here it is named after its method
        rename = {g: method for g in groups} if len(groups) == 1 and method else {}
        parts.append({"label": part.label, "data": data, "groups": groups, "points": points, "rename": rename})
    data, groups, points = merge_parts(parts, seeds)
    reused = {s: [stage_name(p.label, n) for p in finished for n in p.shared[s]] for s in seeds}
    runs = {s: ", ".join(str((p.root / f"seed-{s}").relative_to(root)) for p in finished) for s in seeds}
    report = build_seed_report(seeds, data, groups, runs=runs, reused=reused,
                               pipeline=finished[0].pipelines[seeds[0]].name, score_points=points)
    return write_report(report, Path(root) / "report")


def _score_points(pipeline, results: dict) -> list[dict]:
    """The data-aware score vs forgetting points the seed's analyze stage reported (none without ``data``)."""
    task = _analyze(pipeline)
    result = results.get(task.name) if task is not None else None
    return list((result.metrics or {}).get("score_forgetting") or []) if result is not None else []


def _analyze(pipeline):
    analyzes = [t for t in pipeline.tasks() if t.kind == "analyze"]
    return analyzes[-1] if analyzes else None  # the one publish_report shows


def _groups(pipeline, results: dict) -> dict:
    """The forgetting matrices' structure per method group, as the analyze stage builds it."""
    from workbench.stages.analyze_stage import forgetting_groups

    task = _analyze(pipeline)
    if task is None:
        return {}
    groups = forgetting_groups(task, results)
    # in the order the analyze stage lists them (the chain's method first, then --compare's): the
    # resolved parameters come key-sorted, the inputs keep their order
    listed = [t.name for _, t in task.inputs]
    return dict(sorted(groups.items(), key=lambda g: [listed.index(s) for s in g[1]["stages"] if s in listed]))


def _evals(pipeline, results: dict) -> dict:
    """``{evaluate stage: {task: {"primary", "higher_is_better", "metrics", "per_prompt"}}}`` of one run."""
    out = {}
    for task in pipeline.tasks():
        if task.kind != "evaluate":
            continue
        data = json.loads(Path(results[task.name].artifacts["results"]).read_text(encoding="utf-8"))
        out[task.name] = {name: {"primary": r["primary"], "higher_is_better": r["higher_is_better"],
                                 "metrics": r["metrics"], "per_prompt": _per_prompt(r), "judge": r.get("judge")}
                          for name, r in data["tasks"].items()}
    return out


def _per_prompt(result: dict) -> dict:
    """The evaluator's per-prompt outcomes (results from before they were stored have none)."""
    per_seed = (result.get("details") or {}).get("per_seed") or [{}]
    return per_seed[0].get("per_prompt") or {}


def _summaries(groups: dict) -> dict:
    """ACC, BWT and forgetting of each group's primary-metric and NLL matrices for one seed (as analyze)."""
    from workbench.evaluate.forgetting import rate_columns, summarize, summarize_columns

    out = {}
    for g, f in groups.items():
        # as the analyze stage: a task no stage learns counts as learned by the stage after it
        learned = [i if i is not None else min(j + 1, len(f["stages"]) - 1) for j, i in enumerate(f["learned_at"])]
        rates = rate_columns(f.get("metric") or {}, f.get("higher_is_better") or {}, f["tasks"])
        out[g] = {"primary": summarize_columns(f["matrix"], learned, rates),
                  "nll": summarize(f["nll"], learned, higher_is_better=False)}
    return out
