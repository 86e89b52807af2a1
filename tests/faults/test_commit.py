"""Property 2: done means committed. A checkpoint counts only when COMMITTED.json (the SHA-256 of every
other file) was written last and still verifies; a stage counts only with its manifest entry. Anything
else is skipped with a logged reason."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from workbench.train.checkpoint import COMMIT, latest_checkpoint, save_checkpoint

from .harness import bad_input, count, flip_byte, truncate


def _save(root, step: int):
    g = torch.Generator().manual_seed(step)
    params = {"b": torch.nn.Parameter(torch.randn(8, 4, generator=g))}
    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    params["b"].grad = torch.ones(8, 4)
    opt.step()
    return save_checkpoint(root, step, params, opt, {"world": {"seed": 0}, "trace": []})


def _break_commit(path):
    (path / COMMIT).unlink()
    bad_input()


def _corrupt_commit(path):
    truncate(path / COMMIT, 7)


def _flip_params(path):
    flip_byte(path / "params.safetensors", -3)


def _drop_state(path):
    (path / "state.json").unlink()
    bad_input()


CASES = {
    "no commit marker": (_break_commit, "not committed (no COMMITTED.json"),
    "torn commit marker": (_corrupt_commit, "corrupt COMMITTED.json"),
    "flipped byte": (_flip_params, "params.safetensors is missing or does not match its hash"),
    "missing file": (_drop_state, "state.json is missing or does not match its hash"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_newest_checkpoint_that_is_not_committed_is_skipped_with_reason(tmp_path, caplog, case):
    breaker, reason = CASES[case]
    _save(tmp_path, 2)
    newest = _save(tmp_path, 4)
    breaker(newest)
    count("faults_injected")
    with caplog.at_level(logging.WARNING, logger="workbench.train.checkpoint"):
        ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.step == 2
    assert any(f"ignoring checkpoint {newest}: {reason}" in r.getMessage() for r in caplog.records), caplog.text


def test_stage_dir_without_entry_is_ignored_with_a_logged_reason(tmp_path, caplog):
    from workbench.graph import Task, run_all
    from workbench.graph.task import StageResult

    calls = []

    def execute(task, inputs, out_dir, context):
        calls.append((task.name, context.resume))
        (out_dir / "out.json").write_text(json.dumps(task.params))
        return StageResult({"out": out_dir / "out.json"}, {})

    tasks = [Task.make("a", "train", {"x": 1})]
    run_all(tasks, tmp_path, executors={"train": execute})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    stage_dir = tmp_path / manifest["stages"]["a"]["dir"]
    del manifest["stages"]["a"]  # as if killed after the stage wrote its files, before its entry
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    count("faults_injected")
    with caplog.at_level(logging.INFO, logger="workbench.graph"):
        run_all(tasks, tmp_path, executors={"train": execute})
    assert f"ignoring {stage_dir}: no manifest entry" in caplog.text
    assert calls == [("a", False), ("a", True)]  # not trusted: run again, told it may resume
