"""Running a pipeline end to end: validate, execute (streaming results), publish the report.

``RUN_DIR/report/`` gets the analyze stage's report and forgetting matrix, ``RUN_DIR/summary.md`` a short
overview with every stage's status and headline numbers. A base-model evaluation another run directory
already finished with the same key is adopted, not recomputed (``WORKBENCH_REUSE_BASE_EVAL=0`` turns that
off; workbench/stages/reuse.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

from workbench.graph.task import StageResult
from workbench.settings import MASKED_METHOD


def default_run_dir(pipeline) -> Path:
    return Path("runs") / pipeline.name


def stream(pipeline_or_chain, out=None, overrides=(), *, method: str = MASKED_METHOD, preset: str = "quick",
           compare=None, progress: bool = True, allow_plugins: bool | None = None,
           trust_remote_code: bool = False, log_with: list[str] | None = None, jobs: int = 1,
           executor: str = "local", address: str | None = None,
           protocol: str | None = None, processes: int | None = None) -> Iterator[tuple[str, StageResult]]:
    """Validate, then run; yields ``(stage name, result)`` as stages finish (cached ones at once).

    Args:
        allow_plugins: run the Python files the pipeline names under ``plugins:`` (None: only when
            ``WORKBENCH_ALLOW_PLUGINS=1``). A pipeline file is data: without this a pipeline with plugins
            is refused and no plugin code runs.
        trust_remote_code: consent to the file's ``base.trust_remote_code: true`` (refused without it).
        log_with: experiment trackers (``tensorboard``, ``wandb``, ...) on top of the pipeline's
            ``tracking:`` section (workbench/tracking.py).
        protocol: a protocol replacing the file's ``protocol:`` (``workbench/protocols.py``); a chain under
            ``official`` is the official continual protocol.
        processes: data-parallel processes of every training stage (``--processes``; None: each stage's
            ``launch.processes``; workbench/stages/launch.py).
        jobs, executor, address: where stages run (``--jobs``, ``--executor``, ``--address``; see
            :func:`~workbench.graph.engine.run_pipeline`); progress bars only with one local stage at a time.

    Raises:
        PipelineError: the pipeline is invalid (nothing is created on disk).
        PluginsNotAllowedError: the pipeline names plugins and ``allow_plugins`` is not given.
        RunLockedError: another process is writing to the run directory.
    """
    import workbench.stages.registry  # noqa: F401  (registers the executors)
    from workbench.graph.engine import run_pipeline
    from workbench.pipeline import load_pipeline
    from workbench.pipeline.plugins import refusal
    from workbench.stages.reuse import adopt_base_evals, remember

    pipeline = load_pipeline(pipeline_or_chain, overrides, method=method, preset=preset, compare=compare,
                             allow_plugins=allow_plugins, trust_remote_code=trust_remote_code, protocol=protocol)
    if pipeline.plugin_reads:  # read, not imported: running would need their code
        raise refusal(pipeline.source, pipeline.plugin_reads)
    run_dir = Path(out) if out else default_run_dir(pipeline)
    options = {"progress": progress and jobs == 1 and executor == "local", **tracking_options(pipeline, log_with)}
    if processes:
        options["processes"] = processes
    # the base model's evaluation another run directory already computed (workbench/stages/reuse.py)
    _, executing = adopt_base_evals(pipeline, run_dir)
    results = {}
    for name, result in run_pipeline(pipeline, run_dir, options=options, jobs=jobs, executor=executor,
                                     address=address):
        results[name] = result
        if name in executing:  # committed by now: the engine yields after the manifest entry is written
            remember(run_dir, name)
        yield name, result
    publish_report(run_dir, pipeline, results)


def tracking_options(pipeline, log_with: list[str] | None) -> dict:
    """What stage executors need to log to trackers: the settings, the resolved pipeline (the run's
    config) and each evaluate stage's position (the x axis of the forgetting curves). Empty when off.

    Raises:
        ConfigError: an unknown or uninstalled tracker (before any stage runs).
    """
    from workbench.tracking import Tracking, check_trackers

    tracking = pipeline.model.tracking
    if log_with:
        tracking = (tracking or Tracking()).model_copy(update={"log_with": list(log_with)})
    if tracking is None or not tracking.log_with:
        return {}
    check_trackers(tracking.log_with)
    evals = [n for n in pipeline.order() if pipeline.task(n).kind == "evaluate"]
    return {"tracking": {**tracking.model_dump(), "run_name": tracking.run_name or pipeline.name},
            "tracking_config": pipeline.resolved(), "eval_positions": {n: i for i, n in enumerate(evals)}}


def run(pipeline_or_chain, out=None, overrides=(), **kwargs) -> dict[str, StageResult]:
    """Run a pipeline file or chain to the end; returns every stage's result by name."""
    return dict(stream(pipeline_or_chain, out, overrides, **kwargs))


def publish_report(run_dir: Path, pipeline, results: dict[str, StageResult]) -> Path:
    """Copy the analyze stage's outputs to RUN_DIR/report (replacing an older copy) and write summary.md.

    The copy is committed by :func:`~workbench.io.atomic.atomic_directory`: a reader of ``report/`` sees
    the old or the new report, whole, and a crash at any point leaves one of them. The run lock is held
    (the run itself released it) so that a run starting meanwhile cannot clean up the half-made copy.

    Raises:
        RunLockedError: another process took the run directory after the run finished.
    """
    from workbench.graph.lock import RunLock
    from workbench.io.atomic import atomic_directory, atomic_write_text
    from workbench.stages.summary import summary_markdown, time_markdown

    report = run_dir / "report"
    analyzed = [r for n, r in results.items() if pipeline.task(n).kind == "analyze"]
    with RunLock(run_dir):
        if analyzed:
            with atomic_directory(report, if_exists="replace") as tmp:
                shutil.copytree(Path(analyzed[-1].artifacts["report"]), tmp, dirs_exist_ok=True)
        atomic_write_text(run_dir / "summary.md", summary_markdown(pipeline, results) + time_markdown(pipeline, results, run_dir))
    return report
