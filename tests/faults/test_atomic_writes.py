"""Properties 1 and 18: a save killed (SIGKILL) at any byte, or stopped by a full disk, never damages the
previous artifact, never leaves a partial file at the final path, and its leftovers are cleaned on the
next start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from workbench.io.atomic import DiskFullError, clean_stale_temps
from workbench.io.tensors import load_tensors, save_tensors

from .harness import assert_intact, disk_full, kill_during_write, snapshot, temps_under, tiny_adapter

# Only workbench.io.atomic is imported in the killed process (no torch): each kill costs ~0.1 s.
WRITE = ("import sys; from workbench.io.atomic import atomic_write_bytes; "
         "atomic_write_bytes(sys.argv[1], open(sys.argv[2], 'rb').read())")


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(64, 16, generator=g), "b": torch.randn(300, generator=g)}


def _new_version(tmp_path: Path) -> Path:
    src = tmp_path / "v2.bin"
    save_tensors(src, _tensors(2))
    return src


def _offsets(size: int) -> list[int]:
    # empty temp, inside the 8-byte length field, inside the JSON header, inside the data, one byte short
    return [0, 5, 40, size // 2, size - 1]


@pytest.mark.parametrize("where", ["length field", "empty", "header", "data", "last byte"])
def test_kill_during_overwrite_keeps_previous_version(tmp_path, where):
    target = tmp_path / "store" / "weights.safetensors"
    save_tensors(target, _tensors(1))
    before = snapshot(target.parent)
    src = _new_version(tmp_path)
    offset = dict(zip(["empty", "length field", "header", "data", "last byte"], _offsets(src.stat().st_size)))[where]
    kill_during_write(f"{WRITE}", "weights.safetensors", offset, str(target), str(src))
    assert_intact(target.parent, before)
    loaded, _ = load_tensors(target)
    for k, v in _tensors(1).items():
        assert torch.equal(loaded[k].view(torch.int32), v.view(torch.int32))
    (left,) = temps_under(target.parent)
    assert left.stat().st_size == offset  # the partial bytes went to the temp file only
    assert clean_stale_temps(target.parent) == [left] and not temps_under(target.parent)


def test_kill_during_first_write_leaves_no_final_path(tmp_path):
    target = tmp_path / "store" / "new.safetensors"
    src = _new_version(tmp_path)
    kill_during_write(WRITE, "new.safetensors", src.stat().st_size // 2, str(target), str(src))
    assert not target.exists() and len(temps_under(target.parent)) == 1


ADAPTER = ("import sys; from workbench.adapters.adapter import load_adapter; "
           "a = load_adapter(sys.argv[2]); a.save(sys.argv[1], overwrite=True)")


# The killed process imports torch (~10 s on a loaded machine): slow set. The fast set covers adapter
# directories through the full-disk cases below and the directory clean-up through the swap test.
@pytest.mark.slow
@pytest.mark.parametrize("needle", ["adapter_model.safetensors:100", "adapter_config.json:3", "workbench.json:10"])
def test_kill_during_adapter_overwrite_then_next_start_cleans(tmp_path, needle):
    from workbench.adapters.adapter import load_adapter

    old_dir, new_dir = tmp_path / "run" / "adapter", tmp_path / "new"
    tiny_adapter(1).save(old_dir)
    tiny_adapter(2).save(new_dir)
    before = snapshot(old_dir)
    name, offset = needle.split(":")
    kill_during_write(ADAPTER, name, int(offset), str(old_dir), str(new_dir))
    assert_intact(old_dir, before)
    assert load_adapter(old_dir).meta == json.loads((old_dir / "workbench.json").read_text())
    assert temps_under(tmp_path / "run")  # the killed writer's temp directory
    clean_stale_temps(tmp_path / "run")
    assert not temps_under(tmp_path / "run")
    assert_intact(old_dir, before)


def test_interrupted_directory_swap_is_restored_not_deleted(tmp_path):
    """A kill between the two renames of an adapter swap leaves the old copy only under its aside name."""

    live = tmp_path / "adapter"
    tiny_adapter(1).save(live)
    before = snapshot(live)
    live.rename(tmp_path / ".wbtmp-old-adapter-4242")  # the first rename happened, the second did not
    (tmp_path / ".wbtmp-adapter.x1y2").mkdir()  # the new version's temp directory, never renamed
    clean_stale_temps(tmp_path)
    assert_intact(live, before)
    assert not temps_under(tmp_path)


def test_stale_temps_are_cleaned_when_a_run_or_a_training_starts(tmp_path):
    from workbench.graph import Task, run_all
    from workbench.graph.task import StageResult
    from workbench.train.checkpoint import latest_checkpoint

    run = tmp_path / "run"
    stale = [run / "stages" / "s-1" / ".wbtmp-out.json.abc", run / ".wbtmp-manifest.json.def"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")

    def execute(task, inputs, out_dir, context):
        (out_dir / "out.json").write_text("{}")
        return StageResult({"out": out_dir / "out.json"}, {})

    run_all([Task.make("s", "train", {})], run, executors={"train": execute})
    assert not any(p.exists() for p in stale)
    ckpts = tmp_path / "ckpts"
    (ckpts / "step-00000002").mkdir(parents=True)
    (ckpts / "step-00000002" / ".wbtmp-params.safetensors.zz").write_bytes(b"x")
    assert latest_checkpoint(ckpts) is None and not temps_under(ckpts)


# --- property 18: a full disk --------------------------------------------------------------------

@pytest.mark.parametrize("after", [0, 100, 5000])
def test_enospc_keeps_previous_file_and_names_path_and_size(tmp_path, monkeypatch, after):
    target = tmp_path / "weights.safetensors"
    save_tensors(target, _tensors(1))
    before = snapshot(tmp_path)
    with disk_full(monkeypatch, after=after, match="weights.safetensors") as hits:
        with pytest.raises(DiskFullError) as err:
            save_tensors(target, _tensors(2))
    assert len(hits) == 1
    message = str(err.value)
    size = len(st_save({k: v.contiguous() for k, v in _tensors(2).items()}, metadata={}))
    assert message == (f"{target}: no space left on device while writing {size} bytes; "
                       "the previous version (if any) is unchanged")
    assert_intact(tmp_path, before)
    assert not temps_under(tmp_path)


def test_enospc_during_adapter_save_and_manifest_write_loses_nothing(tmp_path, monkeypatch):
    from workbench.graph import Task, run_all
    from workbench.graph.task import StageResult

    run = tmp_path / "run"
    first = Task.make("first", "train", {"n": 1})

    def execute(task, inputs, out_dir, context):
        path = tiny_adapter(task.params["n"]).save(out_dir / "adapter")
        return StageResult({"adapter": path}, {})

    run_all([first], run, executors={"train": execute})
    before = snapshot(run)
    second = Task.make("second", "train", {"n": 2})
    with disk_full(monkeypatch, after=64, match="adapter_model.safetensors"):
        with pytest.raises(DiskFullError, match=r"adapter_model\.safetensors: no space left"):
            run_all([first, second], run, executors={"train": execute})
    manifest_before = snapshot(run / "manifest.json")
    with disk_full(monkeypatch, after=10, match="manifest.json"):
        with pytest.raises(DiskFullError, match=r"manifest\.json: no space left"):
            run_all([first, second], run, executors={"train": execute})
    assert_intact(run / "manifest.json", manifest_before)
    assert_intact(run, {k: v for k, v in before.items() if k != "manifest.json"})
    manifest = json.loads((run / "manifest.json").read_text())
    assert "second" not in manifest["stages"] and "first" in manifest["stages"]
    assert not [k for k in snapshot(run) if ".wbtmp-" in k]
