"""Training under faults: properties 3 (kill/interrupt and resume equals uninterrupted), 4 (resume refuses a
changed world), 10 (non-finite loss stops cleanly), 12 (frozen stays frozen across a resume), 14
(deterministic runs), 19 (only rank 0 writes).

Fast cases train the tiny Llama in this process (4 steps, gradient accumulation 2, 8 examples: one epoch
is 2 steps) and interrupt it with a full disk or a NaN, both raised inside the loop. The SIGKILL cases run
in subprocesses (tests/faults/train_job.py) and are in the slow set.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from workbench.adapters.adapter import load_adapter
from workbench.errors import ConfigError, NonFiniteError
from workbench.hashing import tensors_hash
from workbench.io.atomic import DiskFullError
from workbench.io.tensors import load_tensors
from workbench.train.checkpoint import latest_checkpoint

from .harness import (bad_input, count, disk_full, nan_at, printed_hash, temps_under, trace_of, train_job,
                      train_tiny)


@pytest.fixture(autouse=True)
def _no_global_determinism_leak():
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: (adapter tensors hash, run directory)."""
    out = tmp_path_factory.mktemp("reference")
    result = train_tiny(out, deterministic=True)
    torch.use_deterministic_algorithms(False)
    return tensors_hash(result.adapter.tensors), out


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


# --- property 14: deterministic mode ---------------------------------------------------------------

def test_deterministic_runs_give_identical_adapters(reference, tmp_path):
    ref_hash, ref_dir = reference
    again = train_tiny(tmp_path, deterministic=True)
    assert tensors_hash(again.adapter.tensors) == ref_hash
    sha = lambda d: load_adapter(d).meta["files"]["adapter_model.safetensors"]  # noqa: E731
    assert sha(tmp_path) == sha(ref_dir)  # the weights file itself, byte for byte
    assert trace_of(tmp_path) == trace_of(ref_dir)


# --- property 3 (fast): interrupted while writing a checkpoint, then resumed ------------------------

def test_full_disk_during_checkpoint_write_then_resume_equals_uninterrupted(reference, tmp_path, monkeypatch, caplog):
    ref_hash, ref_dir = reference
    with disk_full(monkeypatch, after=50, match="step-00000002/optimizer.safetensors") as hits:
        with pytest.raises(DiskFullError):
            train_tiny(tmp_path, deterministic=True)
    assert len(hits) == 1 and not (tmp_path / "adapter").exists()
    with caplog.at_level(logging.INFO):
        resumed = train_tiny(tmp_path, deterministic=True)
    assert "ignoring checkpoint" in caplog.text and "step-00000002: not committed" in caplog.text
    assert "resumed from" in caplog.text and "step-00000001 (step 1)" in caplog.text
    assert tensors_hash(resumed.adapter.tensors) == ref_hash
    assert trace_of(tmp_path) == trace_of(ref_dir)
    assert not temps_under(tmp_path)


# --- property 3: a resume says where it resumed and trains only the steps after it ------------------
# A resume that logged "resumed from" but retrained from scratch would give the same adapter bit for bit
# (deterministic training): only these counts tell the two apart.

def test_a_resumed_run_records_its_step_and_trains_only_the_rest(reference, tmp_path, monkeypatch, caplog):
    ref_hash, ref_dir = reference
    fresh = json.loads((ref_dir / "train_summary.json").read_text())
    assert fresh["resumed_from"] is None and fresh["steps_this_run"] == 4
    assert fresh["tokens_this_run"] == fresh["tokens"] == sum(t["tokens"] for t in fresh["trace"]) > 0
    nan_at(monkeypatch, 2)  # a NaN at step 3: checkpoints after steps 1 and 2 are committed
    with pytest.raises(NonFiniteError):
        train_tiny(tmp_path, deterministic=True)
    monkeypatch.delenv("WORKBENCH_FAULT_NAN_AT")
    with caplog.at_level(logging.INFO):
        resumed = train_tiny(tmp_path, deterministic=True)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert "resumed from" in caplog.text and "(step 2)" in caplog.text
    assert summary["resumed_from"] == 2 and summary["steps_this_run"] == 2 and summary["steps"] == 4
    assert summary["tokens_this_run"] == sum(t["tokens"] for t in summary["trace"][2:])
    assert summary["tokens_this_run"] < summary["tokens"] == fresh["tokens"]
    assert resumed.adapter.meta["training"]["resumed_from"] == 2  # in the adapter's metadata too
    assert tensors_hash(resumed.adapter.tensors) == ref_hash


# --- property 4: resume refuses a changed world ----------------------------------------------------

@pytest.fixture()
def interrupted(reference, tmp_path):
    """A copy of the reference run's checkpoints: a run that can be resumed."""
    shutil.copytree(reference[1] / "checkpoints", tmp_path / "checkpoints")
    return tmp_path


@pytest.mark.parametrize("change, message", [
    ({"seed": 1}, "config.seed changed (0 -> 1)"),
    ({"lr": 0.02}, "config.lr changed (0.01 -> 0.02)"),
    ({"data_seed": 1}, "data changed ("),
    ({"base_seed": 1}, "base changed (\"llama-"),
    ({"spec": {"rank": 8}}, "spec.rank changed (4 -> 8)"),
])
def test_resume_refuses_a_changed_world_naming_old_and_new(interrupted, change, message):
    bad_input()
    with pytest.raises(ConfigError) as err:
        train_tiny(interrupted, deterministic=True, **change)
    text = str(err.value)
    assert text.startswith(f"{interrupted / 'checkpoints'}: cannot resume: ") and message in text, text
    assert "use --force" in text and "\n" not in text
    assert not (interrupted / "adapter").exists()


def test_force_discards_the_checkpoints_and_starts_over(interrupted):
    bad_input()
    result = train_tiny(interrupted, deterministic=True, seed=1, force=True)
    assert [t["step"] for t in result.summary["trace"]] == [1, 2, 3, 4]


def test_changed_base_names_both_fingerprints(interrupted):
    from workbench.models.fingerprint import base_fingerprint

    from .harness import tiny_base

    old, new = base_fingerprint(tiny_base(0)), base_fingerprint(tiny_base(1))
    with pytest.raises(ConfigError, match=rf'base changed \("{old}" -> "{new}"\)'):
        train_tiny(interrupted, deterministic=True, base_seed=1)


# --- property 10: a non-finite loss stops cleanly ---------------------------------------------------

def test_nan_loss_stops_with_the_step_and_writes_nothing_non_finite(tmp_path, monkeypatch):
    nan_at(monkeypatch, 2)
    with pytest.raises(NonFiniteError) as err:
        train_tiny(tmp_path)
    assert "non-finite loss (nan) at step 3" in str(err.value) and str(tmp_path / "checkpoints") in str(err.value)
    assert latest_checkpoint(tmp_path / "checkpoints").step == 2  # the last good one is the newest
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "train_summary.json").exists()
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert files
    for f in files:
        tensors, _ = load_tensors(f, allow_nonfinite=True)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()), f


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tensors_are_never_written(tmp_path, bad):
    from workbench.io.tensors import save_tensors

    from .harness import tiny_adapter

    adapter = tiny_adapter(0)
    key = adapter.b_keys()[0]
    adapter.tensors[key][0, 0] = bad
    count("faults_injected")
    with pytest.raises(NonFiniteError, match=f"tensor '{key}' has NaN or infinite values"):
        adapter.save(tmp_path / "adapter")
    with pytest.raises(NonFiniteError):
        save_tensors(tmp_path / "t.safetensors", {"x": torch.tensor([1.0, bad])})
    assert not any(tmp_path.iterdir())


# --- property 12: frozen stays frozen bit for bit across a resumed lori_s stage ---------------------

def test_lori_s_resumed_halfway_keeps_a_and_everything_outside_the_mask(reference, tmp_path, monkeypatch):
    earlier = load_adapter(reference[1])  # an earlier task's lori_d adapter: B non-zero everywhere
    g = torch.Generator().manual_seed(3)
    mask = {k: torch.rand(earlier.tensors[k].shape, generator=g) < 0.1 for k in earlier.b_keys()}
    job = dict(spec={"method": "lori_s"}, init=earlier, mask=mask, weight_decay=0.1)
    nan_at(monkeypatch, 2)  # stops after the step-2 checkpoint: the rerun resumes halfway
    with pytest.raises(NonFiniteError):
        train_tiny(tmp_path, **job)
    monkeypatch.delenv("WORKBENCH_FAULT_NAN_AT")
    resumed = train_tiny(tmp_path, **job)
    assert [t["step"] for t in resumed.summary["trace"]] == [1, 2, 3, 4]
    after = resumed.adapter
    changed = 0
    for key, t in earlier.tensors.items():
        if key.endswith("lora_A.weight"):
            assert _bits_equal(t, after.tensors[key]), key
    for key, m in mask.items():
        assert _bits_equal(earlier.tensors[key][~m], after.tensors[key][~m]), key
        changed += int((earlier.tensors[key][m] != after.tensors[key][m]).sum())
    assert changed > 0  # the masked entries did train


# --- property 19: only rank 0 writes ----------------------------------------------------------------

def test_a_non_main_process_writes_no_checkpoint_adapter_or_summary(tmp_path, monkeypatch):
    from accelerate import Accelerator

    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    result = train_tiny(tmp_path / "rank1", steps=2)
    assert result.adapter_path is None
    assert not (tmp_path / "rank1").exists() or not any((tmp_path / "rank1").rglob("*"))


# --- property 3 (slow): SIGKILL at an epoch boundary and during checkpoint writes --------------------

SLOW_JOB = dict(steps=7, checkpoint_every=3)  # checkpoints after steps 3 and 6; epochs end at 2, 4, 6


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("slow_reference")
    return printed_hash(train_job(out, **SLOW_JOB)), out


@pytest.mark.slow
@pytest.mark.parametrize("fault, resumed_from", [
    ({"WORKBENCH_FAULT_KILL_AFTER": "4"}, 3),  # epoch boundary, one step after the step-3 checkpoint
    ({"WORKBENCH_FAULT_WRITE_KILL": "step-00000006/optimizer.safetensors:64"}, 3),
    ({"WORKBENCH_FAULT_WRITE_KILL": "step-00000006/COMMITTED.json:5"}, 3),
    ({"WORKBENCH_FAULT_WRITE_KILL": "adapter_model.safetensors:200"}, 6),
], ids=["epoch-boundary", "during-optimizer-write", "during-commit-write", "during-final-adapter-write"])
def test_sigkill_then_resume_equals_uninterrupted(slow_reference, tmp_path, fault, resumed_from):
    ref_hash, ref_dir = slow_reference
    killed = train_job(tmp_path, env=fault, check=False, **SLOW_JOB)
    assert killed.returncode == -9, killed.stderr[-1500:]
    resumed = train_job(tmp_path, **SLOW_JOB)
    assert printed_hash(resumed) == ref_hash
    assert trace_of(tmp_path) == trace_of(ref_dir)
    assert not temps_under(tmp_path)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["resumed_from"] == resumed_from and summary["steps_this_run"] == 7 - resumed_from
