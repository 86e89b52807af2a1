"""Forgetting matrices from evaluate stages: one per compared method, each task learned at its own stage."""

from workbench.graph.task import StageResult, Task
from workbench.stages.analyze_stage import _masks_for, forgetting_groups


def _res(**vals):
    return StageResult(metrics={t: {"primary": "acc", "value": v, "nll": 1.0} for t, v in vals.items()})


def test_groups_and_learned_at_for_a_compared_chain():
    names = ["base_eval", "lori_s-safety_eval", "lori_s-math_eval", "lora-safety_eval", "lora-math_eval"]
    results = {n: _res(safety=0.1 * i, math=0.2 * i) for i, n in enumerate(names)}
    evals = [Task.make(n, "evaluate", {"i": i}) for i, n in enumerate(names)]
    groups = forgetting_groups(evals, results)
    assert sorted(groups) == ["lora", "lori_s"]
    lori = groups["lori_s"]
    assert lori["stages"] == ["base_eval", "lori_s-safety_eval", "lori_s-math_eval"]
    assert lori["tasks"] == ["safety", "math"] and lori["learned_at"] == [1, 2]
    assert lori["matrix"][2] == [0.2, 0.4]


def test_single_chain_is_one_group():
    names = ["base_eval", "safety_eval", "math_eval"]
    results = {n: _res(safety=0.5, math=0.0) for n in names}
    groups = forgetting_groups([Task.make(n, "evaluate", {"i": i}) for i, n in enumerate(names)], results)
    assert list(groups) == [""] and groups[""]["learned_at"] == [1, 2]


def test_masks_pair_with_adapters_by_chain_names():
    assert _masks_for(["lori_s-safety", "lora-safety"], {"lori_s-safety_mask": "m.st"}) == {"lori_s-safety": "m.st"}
    assert _masks_for(["a", "b"], {"x": "1", "y": "2"}) == {"a": "1", "b": "2"}
    assert _masks_for(["a"], {}) is None
