"""Seeds as an axis: ``workbench run CHAIN_OR_FILE --seeds 0,1,2`` runs the pipeline once per seed and
writes one aggregated report over them.

Layout::

    OUT/seed-<s>/     one ordinary run directory per seed (``--set defaults.seed=<s>``: data order and
                      every A), with its own manifest, stages, report/ and summary.md
    OUT/report/       the aggregated report: report.json, report.md, report.html (same numbers)

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
from typing import Iterable, Iterator

from workbench.errors import ConfigError
from workbench.graph.task import StageResult

log = logging.getLogger("workbench.stages")
SEED_KEY = "defaults.seed"


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
    :func:`workbench.stages.run.stream` runs one pipeline (same checks, same per-run report).

    Args:
        pipeline_or_chain: a pipeline file or a chain (``"safety->math"``).
        out: the directory holding ``seed-<s>/`` and ``report/`` (default runs/<pipeline name>).
        overrides: ``--set`` values (not ``defaults.seed``: the seeds set it).
        seeds: the seeds, in order.
        progress: progress bars.
        **options: as :func:`workbench.stages.run.stream` (``method``, ``preset``, ``compare``,
            ``allow_plugins``, ``trust_remote_code``).

    Raises:
        ConfigError: no seeds, or ``defaults.seed`` also given in ``overrides``.
        PipelineError: a seed's pipeline is invalid.
    """
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    overrides = _check_overrides(overrides)
    from workbench.pipeline import load_pipeline
    from workbench.stages.run import default_run_dir, stream

    pipelines = {s: load_pipeline(pipeline_or_chain, _with_seed(overrides, s), **options) for s in seeds}
    root = Path(out) if out else default_run_dir(pipelines[seeds[0]])
    shared = shared_stages({s: stage_keys(p) for s, p in pipelines.items()})
    if len(seeds) > 1 and all(len(shared[s]) == len(pipelines[s].tasks()) for s in seeds[1:]):
        log.warning("no stage of this pipeline depends on %s (stages set their own seed): every seed repeats "
                    "seed %s's results", SEED_KEY, seeds[0])
    runs = {}
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
    report = write_seed_report(root, pipelines, runs, shared)
    yield "report", StageResult(artifacts={"report": report})


def write_seed_report(root: Path, pipelines: dict, runs: dict, reused: dict) -> Path:
    """Build the aggregated report from finished seed runs and write it to ROOT/report/."""
    from workbench.analytics.seed_report import build_seed_report, write_report

    seeds = list(runs)
    first = pipelines[seeds[0]]
    groups = {s: _groups(pipelines[s], runs[s]) for s in seeds}
    data = {s: {"evals": _evals(pipelines[s], runs[s]), "summaries": _summaries(groups[s])} for s in seeds}
    report = build_seed_report(seeds, data, {g: {k: f[k] for k in ("tasks", "stages", "learned_at")}
                                             for g, f in groups[seeds[0]].items()},
                               runs={s: seed_dir(root, s).name for s in seeds}, reused=reused,
                               pipeline=first.name)
    return write_report(report, Path(root) / "report")


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
                                 "metrics": r["metrics"], "per_prompt": _per_prompt(r)}
                          for name, r in data["tasks"].items()}
    return out


def _per_prompt(result: dict) -> dict:
    """The evaluator's per-prompt outcomes (results from before they were stored have none)."""
    per_seed = (result.get("details") or {}).get("per_seed") or [{}]
    return per_seed[0].get("per_prompt") or {}


def _summaries(groups: dict) -> dict:
    """ACC, BWT and forgetting of each group's primary-metric and NLL matrices for one seed (as analyze)."""
    from workbench.evaluate.forgetting import summarize

    out = {}
    for g, f in groups.items():
        # as the analyze stage: a task no stage learns counts as learned by the stage after it
        learned = [i if i is not None else min(j + 1, len(f["stages"]) - 1) for j, i in enumerate(f["learned_at"])]
        out[g] = {"primary": summarize(f["matrix"], learned, higher_is_better=True),
                  "nll": summarize(f["nll"], learned, higher_is_better=False)}
    return out
