"""The run summary's time breakdown: per-kind table, parts adding up to the recorded stage times, and a
per-stage peak RSS that a reset high-water mark keeps from reading an earlier stage's peak."""

import json
import re
from pathlib import Path

import pytest

from workbench.graph.memory import peak_rss_mb, reset_peak_rss, rss_mb
from workbench.stages.timing import PHASES, phase, stage_breakdowns

QUICK = ["defaults.steps=2", "defaults.eval_limit=2", "defaults.max_new_tokens=2", "defaults.max_samples=8"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama
    from workbench.stages.run import run

    tiny = save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")
    out = tmp_path_factory.mktemp("run") / "chain"
    run("safety->math", out, [*QUICK, f"base.model={tiny}"], progress=False)
    return out


def test_summary_has_the_per_kind_table_and_parts_sum_to_stage_times(tiny_run):
    text = (tiny_run / "summary.md").read_text()
    assert "## Time by kind" in text
    table = dict(re.findall(r"^\| (\w+) \| ([0-9.]+) \| [0-9.]+% \|$", text, re.M))
    for kind in ("load", "train", "evaluate", "calibrate", "analyze", "store"):
        assert kind in table, f"no {kind} row in the breakdown"
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    dirs = {e["dir"]: e["seconds"] for e in manifest["stages"].values() if e.get("status") == "done"}
    recorded = sum(dirs.values())
    parts = sum(float(v) for k, v in table.items() if k in (*PHASES, "other"))
    assert parts == pytest.approx(recorded, abs=0.05 * len(dirs) + 0.2)
    rows = stage_breakdowns(tiny_run, list(manifest["stages"]))
    for r in rows:  # every stage of the run was timed by its executor, so nothing is unexplained
        assert "other" not in r["phases"]
        assert sum(r["phases"].values()) == pytest.approx(r["seconds"], abs=0.05)
        assert r["peak_rss_mb"] is not None and r["peak_rss_mb"] >= r["rss_start_mb"] - 8


def test_inner_phase_time_is_taken_out_of_the_outer_one():
    import time

    import workbench.stages.timing as timing

    timing._totals.clear()
    with phase("train"):
        time.sleep(0.05)
        with phase("load"):
            time.sleep(0.1)
    assert timing._totals["load"] == pytest.approx(0.1, abs=0.03)
    assert timing._totals["train"] == pytest.approx(0.05, abs=0.03)
    with pytest.raises(ValueError, match="unknown phase"):
        with phase("lunch"):
            pass


def test_peak_after_reset_does_not_carry_an_earlier_peak():
    if not reset_peak_rss():
        pytest.skip("this kernel cannot reset the peak-RSS mark")
    block = bytearray(300 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident
    del block
    assert peak_rss_mb() > rss_mb() + 200  # the mark remembers the freed block
    assert reset_peak_rss()
    assert peak_rss_mb() < rss_mb() + 20
