"""Forgetting matrices from evaluate stages: one per compared method, each task learned at the row whose
adapter was trained on it (read from the stages' fields, never from their names), and masks paired with
the adapters trained inside them."""

from pathlib import Path

import pytest

from workbench.graph.task import StageResult
from workbench.pipeline import PipelineError, expand_chain, load_tree
from workbench.pipeline.yaml_load import Located
from workbench.stages.analyze_stage import forgetting_groups


def _load(tree: dict, base_dir: Path):
    return load_tree(Located(tree, {(): "chain"}, origin="chain"), base_dir)


def _with_custom_task(tree: dict, tmp_path: Path, name: str) -> dict:
    (tmp_path / "data.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    return {**tree, "tasks": {name: {"path": str(tmp_path / "data.jsonl")}}}


def _results(pipe, tasks) -> dict:
    """Fake evaluate results: task j scores 10 * row + j on the row-th evaluate stage."""
    evals = [t.name for t in pipe.tasks() if t.kind == "evaluate"]
    return {n: StageResult(metrics={t: {"primary": "acc", "value": 10 * i + j, "nll": 1.0}
                                    for j, t in enumerate(tasks)}) for i, n in enumerate(evals)}


def test_dotted_task_is_learned_at_its_own_row(tmp_path):
    """'my.task' makes stages named my_task*: its row must still be found (name parsing put it in the
    base group, with no row learning it)."""
    tree = _with_custom_task(expand_chain("my.task->math"), tmp_path, "my.task")
    pipe = _load(tree, tmp_path)
    analyze = pipe.task("analyze")
    (entry,) = analyze.params["forgetting"]
    assert entry["group"] == "" and [r["learned"] for r in entry["rows"]] == [None, "my.task", "math"]
    groups = forgetting_groups(analyze, _results(pipe, ["my.task", "math"]))
    assert list(groups) == [""]
    f = groups[""]
    assert f["stages"] == ["base_eval", "my_task_eval", "math_eval"]
    assert f["tasks"] == ["my.task", "math"] and f["learned_at"] == [1, 2]


def test_compared_chain_has_one_group_per_method(tmp_path):
    tree = _with_custom_task(expand_chain("my.task->math", compare=["lora"]), tmp_path, "my.task")
    assert tree["stages"]["analyze"]["forgetting"] == {
        "lori_s": ["base_eval", "lori_s-my_task_eval", "lori_s-math_eval"],
        "lora": ["base_eval", "lora-my_task_eval", "lora-math_eval"]}
    pipe = _load(tree, tmp_path)
    analyze = pipe.task("analyze")
    groups = forgetting_groups(analyze, _results(pipe, ["my.task", "math"]))
    assert list(groups) == ["lori_s", "lora"]  # the chain's method first: its matrix is forgetting.json
    for method, g in groups.items():
        assert g["stages"] == ["base_eval", f"{method}-my_task_eval", f"{method}-math_eval"]
        assert g["learned_at"] == [1, 2]
    # both groups start from the one base-model evaluation
    assert analyze.input("forgetting.lori_s.0") is analyze.input("forgetting.lora.0") is pipe.task("base_eval")


def test_masks_pair_with_the_adapters_trained_inside_them(tmp_path):
    pipe = _load(expand_chain("safety->math", compare=["lora"]), tmp_path)
    analyze = pipe.task("analyze")
    pairs = {analyze.input(a).name: analyze.input(m).name for a, m in analyze.params["mask_of"].items()}
    assert pairs == {"lori_s-safety": "lori_s-safety_mask", "lori_s-math": "lori_s-math_mask"}


STAGES = {
    "p1": {"kind": "train", "task": "safety", "method": "lori_d"},
    "p2": {"kind": "train", "task": "math", "method": "lori_d"},
    "m1": {"kind": "calibrate", "from": "p1"},
    "m2": {"kind": "calibrate", "from": "p2", "exclude": ["m1"]},
    "s1": {"kind": "train", "task": "safety", "method": "lori_s", "mask": "m1"},
    "s2": {"kind": "train", "task": "math", "method": "lori_s", "mask": "m2"},
}


def test_masks_listed_in_another_order_still_pair_by_field(tmp_path):
    """Pairing by position would give s1 the mask m2."""
    tree = {"defaults": {"sparsity": 0.9}, "stages": {
        **STAGES, "a": {"kind": "analyze", "adapters": ["s1", "s2"], "masks": ["m2", "m1"]}}}
    analyze = _load(tree, tmp_path).task("a")
    pairs = {analyze.input(a).name: analyze.input(m).name for a, m in analyze.params["mask_of"].items()}
    assert pairs == {"s1": "m1", "s2": "m2"}


def test_a_mask_no_listed_adapter_trained_in_is_refused(tmp_path):
    tree = {"stages": {**STAGES, "a": {"kind": "analyze", "adapters": ["s1", "p2"], "masks": ["m1", "m2"]}}}
    with pytest.raises(PipelineError, match=r"stages.a.masks.1: 'm2' is not the mask of any adapter listed here"):
        _load(tree, tmp_path)
