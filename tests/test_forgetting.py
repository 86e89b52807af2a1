"""Forgetting-matrix summaries on hand-made matrices, files, and per-cell resume."""

import json

import pytest

from workbench.errors import MismatchError
from workbench.evaluate.forgetting import ForgettingMatrix, summarize

# Three tasks learned in order; rows: after stage k.
R = [[0.8, 0.1, 0.2],
     [0.6, 0.9, 0.3],
     [0.5, 0.7, 0.7]]


def test_summaries_on_hand_made_matrix():
    s = summarize(R, baseline=[0.1, 0.1, 0.2])
    assert s["acc"] == pytest.approx((0.5 + 0.7 + 0.7) / 3)
    assert s["bwt"] == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)
    assert s["forgetting"] == pytest.approx(((0.8 - 0.5) + (0.9 - 0.7)) / 2)
    assert s["fwt"] == pytest.approx(((0.1 - 0.1) + (0.3 - 0.2)) / 2)


def test_no_forgetting_and_lower_is_better():
    perfect = [[1.0, 0.0], [1.0, 1.0]]
    assert summarize(perfect) == {"acc": 1.0, "bwt": 0.0, "forgetting": 0.0, "fwt": None}
    nll = [[1.0, 3.0], [2.0, 1.5]]  # NLL of task 0 rose from 1.0 to 2.0: forgetting
    s = summarize(nll, higher_is_better=False)
    assert s["bwt"] == pytest.approx(-1.0) and s["forgetting"] == pytest.approx(1.0)


def test_missing_cells_make_summaries_undefined():
    s = summarize([[0.5, None], [None, 0.9]])
    assert s["acc"] is None and s["bwt"] is None


def test_files_json_markdown_png(tmp_path):
    fm = ForgettingMatrix(["safety", "math", "code"], ["safety", "math", "code"], "primary", path=tmp_path / "m.json")
    for i, stage in enumerate(fm.stages):
        for j, task in enumerate(fm.tasks):
            fm.set(stage, task, R[i][j], {"seed": 0})
    data = json.loads((tmp_path / "m.json").read_text())
    assert {"tasks", "stages", "matrix", "metric", "summary"} <= set(data)
    assert data["matrix"] == R and data["summary"]["bwt"] == pytest.approx(-0.25)
    md = fm.to_markdown()
    assert "| math | 0.600 | 0.900 | 0.300 |" in md and "BWT -0.250" in md
    png = fm.write_heatmap(tmp_path / "m.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fm.write_markdown(tmp_path / "m.md").read_text() == md


def test_resume_recomputes_only_missing_cells(tmp_path):
    path = tmp_path / "matrix.json"
    tasks, stages = ["a", "b"], ["a", "b"]
    calls = []

    def evaluate(stage, task):
        calls.append((stage, task))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the evaluation is killed during the third cell
        return 0.1 * len(calls), {"stage": stage}

    fm = ForgettingMatrix.open(path, tasks, stages, "acc")
    with pytest.raises(KeyboardInterrupt):
        fm.fill(evaluate)
    assert calls == [("a", "a"), ("a", "b"), ("b", "a")]

    resumed = ForgettingMatrix.open(path, tasks, stages, "acc")
    assert resumed.missing() == [("b", "a"), ("b", "b")]
    calls.clear()
    resumed.fill(lambda s, t: calls.append((s, t)) or 0.5)
    assert calls == [("b", "a"), ("b", "b")]
    final = ForgettingMatrix.open(path, tasks, stages, "acc")
    assert final.matrix == [[pytest.approx(0.1), pytest.approx(0.2)], [0.5, 0.5]] and not final.missing()
    assert final.cells["a/a"] == {"stage": "a"}


def test_resume_refuses_a_different_run(tmp_path):
    path = tmp_path / "m.json"
    ForgettingMatrix(["a"], ["a"], "acc", path=path).set("a", "a", 1.0)
    with pytest.raises(MismatchError, match="metric"):
        ForgettingMatrix.open(path, ["a"], ["a"], "nll")
    with pytest.raises(MismatchError, match="tasks"):
        ForgettingMatrix.open(path, ["a", "b"], ["a"], "acc")
