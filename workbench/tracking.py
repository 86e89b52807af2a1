"""Experiment tracking through accelerate's trackers (TensorBoard, W&B, MLflow, trackio, ...).

No tracker code of our own: :func:`open_tracker` builds accelerate's tracker classes
(``accelerate.tracking.LOGGER_TYPE_TO_CLASS``) the way ``Accelerator.init_trackers`` does, so every
tracker accelerate supports works here with its own options. What is ours is *what* gets logged:

- per optimizer step of a training stage: ``train/<stage>/{loss,lr,grad_norm,tokens_per_s}`` at the step,
  and ``train/<stage>/trainable_params`` at step 0;
- per evaluation stage: ``eval/<stage>/<task>/<metric>`` for every metric, and the same value as
  ``forgetting/<task>/<metric>`` at the evaluation's position in the run (0, 1, 2, ...), so a chain's
  forgetting curve is one series per task in the tracker;
- the resolved pipeline as the run's configuration (flattened to dotted keys).

Each stage opens its own tracker run (``<run_name>/<stage>``) in the process that executes it, so the same
settings work when stages run in parallel processes or on Ray workers (TensorBoard: one event file per stage
under ``logging_dir/<run_name>/<stage>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from pydantic import BaseModel, ConfigDict, Field

from workbench.errors import ConfigError

# tracker name -> the extra that installs it (a missing one is a one-line error naming it)
EXTRAS = {"tensorboard": "track", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


class Tracking(BaseModel):
    """The ``tracking:`` section of a pipeline (and ``--log-with`` on the command line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    log_with: list[str] = Field([], description="trackers: tensorboard, wandb, mlflow, trackio, ... (accelerate's)")
    project: str = Field("workbench", description="project name (W&B/MLflow/trackio); TensorBoard: unused")
    run_name: Optional[str] = Field(None, description="the run's name (default: the pipeline's name)")
    logging_dir: Optional[str] = Field(None, description="where file-based trackers write (default: RUN_DIR/tracking)")


def check_trackers(names: Iterable[str]) -> None:
    """Refuse unknown or uninstalled trackers before any work starts.

    Raises:
        ConfigError: one line naming the tracker and the extra (or package) that provides it.
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(f"tracking.log_with: unknown tracker '{name}' (accelerate knows: "
                              f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))})")
        if name not in available:
            extra = EXTRAS.get(name)
            how = f'pip install "workbench[{extra}]"' if extra else f"pip install {name}"
            raise ConfigError(f"tracking.log_with: tracker '{name}' is not installed: {how}")


@dataclass
class StageTracker:
    """The open trackers of one stage; ``log`` sends one dict of numbers at one step to all of them."""

    trackers: list = field(default_factory=list)

    def log(self, values: dict[str, Any], step: int) -> None:
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if clean:
            for t in self.trackers:
                t.log(clean, step=step)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()


def open_tracker(tracking: Tracking | dict | None, run_dir: str | Path, stage: str,
                 config: dict | None = None) -> StageTracker | None:
    """Open the configured trackers for one stage (None when tracking is off).

    Args:
        tracking: the ``tracking`` settings (a dict is validated).
        run_dir: the run directory (default logging dir: ``run_dir/tracking``).
        stage: the stage's name (the tracker run is ``<run_name>/<stage>``).
        config: values stored as the run's configuration (flattened to ``a.b.c`` keys).
    """
    tracking = Tracking.model_validate(tracking) if isinstance(tracking, dict) else tracking
    if tracking is None or not tracking.log_with:
        return None
    check_trackers(tracking.log_with)
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    logging_dir = Path(tracking.logging_dir or Path(run_dir) / "tracking")
    run_name = f"{tracking.run_name or Path(run_dir).name}/{stage}"
    out = StageTracker()
    for name in tracking.log_with:
        cls = LOGGER_TYPE_TO_CLASS[name]
        # As Accelerator.init_trackers: file-based trackers get (run name, dir), the others (project).
        t = cls(run_name, logging_dir) if cls.requires_logging_directory else cls(tracking.project)
        t.start()
        if config:
            t.store_init_configuration(flatten(config))
        out.trackers.append(t)
    return out


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; values other than bool/int/float/str/None become strings (what every
    tracker's hyperparameter store accepts)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def step_logger(tracker: StageTracker | None, stage: str):
    """The loop's ``log_step`` callback for one training stage, or None."""
    if tracker is None:
        return None

    def log_step(values: dict, step: int) -> None:
        tracker.log({f"train/{stage}/{k}": v for k, v in values.items() if v is not None}, step)

    return log_step


def log_evaluation(tracker: StageTracker | None, stage: str, results: dict, position: int) -> None:
    """Every numeric metric of an evaluate stage's results (``{task: {"metrics": {...}}}``)."""
    if tracker is None:
        return
    values = {}
    for task, res in results.items():
        for metric, value in (res.get("metrics") or {}).items():
            values[f"eval/{stage}/{task}/{metric}"] = value
            values[f"forgetting/{task}/{metric}"] = value
    tracker.log(values, position)
