"""Experiment tracking through accelerate's trackers, read back from TensorBoard's event files."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.errors import ConfigError

pytest.importorskip("tensorboard", reason="the [track] extra (tensorboard) is not installed")

QUICK = ["defaults.steps=3", "defaults.eval_limit=2", "defaults.max_new_tokens=2", "defaults.max_samples=12"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from every event file under ``logdir`` (tensorboard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list] = {}
    for events in glob.glob(str(logdir / "**" / "events.out.tfevents.*"), recursive=True):
        acc = EventAccumulator(events)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_train_logs_one_loss_scalar_per_step(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--task", "math", "--method", "lori_d", "--steps", "3", "--model", str(tiny_dir),
                 "--limit", "12", "--batch-size", "4", "--max-length", "64", "--out", str(out),
                 "--log-with", "tensorboard"])
    assert code == 0, capsys.readouterr().err
    tags = scalars(out / "tracking")
    assert sorted(step for step, _ in tags["train/train/loss"]) == [1, 2, 3]
    summary_losses = [t["loss"] for t in __import__("json").loads((out / "train_summary.json").read_text())["trace"]]
    assert [v for _, v in sorted(tags["train/train/loss"])] == pytest.approx(summary_losses, rel=1e-6)
    assert len(tags["train/train/lr"]) == 3 and len(tags["train/train/tokens_per_s"]) == 3
    assert len(tags["train/train/grad_norm"]) == 3
    (step0, trainable), = tags["train/train/trainable_params"]
    assert step0 == 0 and trainable > 0


def test_chain_logs_training_and_a_forgetting_curve(tiny_dir, tmp_path):
    from workbench.stages.run import run

    out = tmp_path / "chain"
    run("safety->math", out, [*QUICK, f"base.model={tiny_dir}"], progress=False, log_with=["tensorboard"])
    tags = scalars(out / "tracking")
    assert len(tags["train/safety/loss"]) == 3 and len(tags["train/math/loss"]) == 3
    # three evaluations (base, after safety, after math): one point per evaluation and task
    curve = sorted(tags["forgetting/safety/nll"])
    assert [step for step, _ in curve] == [0, 1, 2]
    assert "eval/math_eval/math/nll" in tags
    hparams = glob.glob(str(out / "tracking" / "**" / "hparams.yml"), recursive=True)
    assert hparams, "the resolved pipeline is stored as the run's configuration"
    assert "pipeline.stages.math.kind: continue" in Path(hparams[0]).read_text() or any(
        "pipeline.stages.math.kind" in Path(h).read_text() for h in hparams)


def test_a_pipeline_tracking_section_is_validated():
    from workbench.pipeline import load_pipeline

    with pytest.raises(Exception) as err:
        load_pipeline("safety->math", ["tracking.log_wth=[tensorboard]"])
    assert "log_wth" in str(err.value)


def test_unknown_or_missing_tracker_is_one_line_naming_the_extra(monkeypatch):
    from workbench.tracking import check_trackers

    with pytest.raises(ConfigError, match="unknown tracker 'tensorbored'"):
        check_trackers(["tensorbored"])
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match=r'pip install "workbench\[track\]"'):
        check_trackers(["tensorboard"])
    with pytest.raises(ConfigError, match=r'pip install "workbench\[wandb\]"'):
        check_trackers(["wandb"])
