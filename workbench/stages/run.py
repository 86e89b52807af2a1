"""Running a pipeline end to end: validate, execute (streaming results), publish the report.

``RUN_DIR/report/`` gets the analyze stage's report and forgetting matrix, ``RUN_DIR/summary.md`` a short
overview with every stage's status and headline numbers.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterator

from workbench.graph.task import StageResult


def default_run_dir(pipeline) -> Path:
    return Path("runs") / pipeline.name


def stream(pipeline_or_chain, out=None, overrides=(), *, method: str = "lori_s", preset: str = "quick",
           compare=None, progress: bool = True) -> Iterator[tuple[str, StageResult]]:
    """Validate, then run; yields ``(stage name, result)`` as stages finish (cached ones at once).

    Raises:
        PipelineError: the pipeline is invalid (nothing is created on disk).
        RunLockedError: another process is writing to the run directory.
    """
    import workbench.stages.registry  # noqa: F401  (registers the executors)
    from workbench.graph.engine import run_pipeline
    from workbench.pipeline import load_pipeline

    pipeline = load_pipeline(pipeline_or_chain, overrides, method=method, preset=preset, compare=compare)
    run_dir = Path(out) if out else default_run_dir(pipeline)
    results = {}
    for name, result in run_pipeline(pipeline, run_dir, options={"progress": progress}):
        results[name] = result
        yield name, result
    publish_report(run_dir, pipeline, results)


def run(pipeline_or_chain, out=None, overrides=(), **kwargs) -> dict[str, StageResult]:
    """Run a pipeline file or chain to the end; returns every stage's result by name."""
    return dict(stream(pipeline_or_chain, out, overrides, **kwargs))


def publish_report(run_dir: Path, pipeline, results: dict[str, StageResult]) -> Path:
    """Copy the analyze stage's outputs to RUN_DIR/report (replacing an older copy) and write summary.md."""
    report = run_dir / "report"
    analyzed = [r for n, r in results.items() if pipeline.task(n).kind == "analyze"]
    if analyzed:
        src = Path(analyzed[-1].artifacts["report"])
        tmp = run_dir / f".wbtmp-report-{time.time_ns()}"
        shutil.copytree(src, tmp)
        if report.exists():
            shutil.rmtree(report)
        tmp.rename(report)
    from workbench.io.atomic import atomic_write_text
    from workbench.stages.summary import summary_markdown

    atomic_write_text(run_dir / "summary.md", summary_markdown(pipeline, results))
    return report
