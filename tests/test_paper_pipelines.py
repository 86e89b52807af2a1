"""pipelines/paper/: the committed files are the generator's output, and their resolved settings are the
official ones (juzhengz/LoRI @ 9183468; values typed out here from its scripts, not read from the generator)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from workbench.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "pipelines" / "paper"


def _generator():
    spec = importlib.util.spec_from_file_location("make_paper_pipelines", ROOT / "scripts" / "make_paper_pipelines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_files_equal_the_generators_output():
    files = _generator().pipelines()
    on_disk = {p.name: p.read_text() for p in PAPER.glob("*.yaml")}
    assert set(on_disk) == set(files), "rerun: python scripts/make_paper_pipelines.py"
    for name, text in files.items():
        assert on_disk[name] == text, f"{name} differs from the generator: python scripts/make_paper_pipelines.py"


def test_the_matrix_is_complete():
    names = {p.stem for p in PAPER.glob("*.yaml")}
    for model in ("llama3", "mistral"):
        for rank in (32, 64):
            assert {f"{model}-r{rank}-{t}" for t in ("nlu", "math", "code", "safety")} <= names
            assert {f"{model}-r{rank}-merge{n}-{m}" for n in (3, 4) for m in ("lori_d", "lori_s")} <= names
        assert {f"{model}-r32-continual-safety-{t}" for t in ("math", "code", "nlu")} <= names
        assert f"{model}-r32-chain-ours-safety-math-code" in names


@pytest.mark.parametrize("name, d_lr, s_lr, epochs", [
    ("llama3-r32-math", 5e-5, 5e-4, 3.0), ("llama3-r64-code", 1e-5, 1e-4, 2.0),
    ("mistral-r32-nlu", 1e-5, 1e-4, 1.0), ("mistral-r64-math", 1e-4, 5e-4, 3.0),
    ("llama3-r64-safety", 1e-5, 1e-4, 1.0)])
def test_single_task_settings_are_the_official_scripts(name, d_lr, s_lr, epochs):
    pipe = load_pipeline(PAPER / f"{name}.yaml")
    task = name.split("-")[-1]
    dense, sparse = pipe.task(f"{task}_lori_d").params, pipe.task(f"{task}_lori_s").params
    rank = int(name.split("-")[1][1:])
    assert (dense["lr"], sparse["lr"], dense["epochs"], sparse["epochs"]) == (d_lr, s_lr, epochs, epochs)
    assert (dense["rank"], dense["alpha"]) == (rank, 2.0 * rank)
    for p in (dense, sparse):
        assert (p["batch_size"], p["grad_accum"], p["scheduler"], p["warmup_ratio"], p["dropout"]) == \
            (32, 1, "constant", 0.0, 0.0)
        assert (p["loss"], p["clip"], p["max_grad_norm"], p["template"]) == \
            ("sequence_sum_mean", "per_tensor", 1.0, "lori_official")
    assert pipe.task(f"{task}_mask").params["sparsity"] == 0.9
    assert pipe.task(f"{task}_mask").params["tie_rule"] == "official"


def test_merge_weights_are_the_official_ones():
    for name, weight in [("llama3-r32-merge4-lori_d", 0.4), ("llama3-r32-merge4-lori_s", 0.3),
                         ("mistral-r64-merge3-lori_d", 0.5), ("mistral-r64-merge3-lori_s", 0.4)]:
        pipe = load_pipeline(PAPER / f"{name}.yaml")
        n = int(name.split("merge")[1][0])
        for strategy in ("concat", "linear"):
            p = pipe.task(f"merged_{strategy}").params
            assert p["strategy"] == strategy and p["weights"] == [weight] * n, name


def test_humaneval_is_sampled_as_the_official_harness():
    pipe = load_pipeline(PAPER / "llama3-r32-code.yaml")
    p = pipe.task("code_lori_s_humaneval").params
    assert (p["temperature"], p["top_p"], p["samples_per_prompt"], p["max_length"]) == (0.2, 0.95, 20, 512)
    assert pipe.task("code_lori_s_humaneval").params["max_new_tokens"] >= 512


def test_continual_pipelines_are_the_official_protocol_beside_ours():
    pipe = load_pipeline(PAPER / "llama3-r32-continual-safety-code.yaml")
    assert pipe.model.protocol == "official"
    math = pipe.task("lori_s-code").params
    assert (math["method"], math["lr"], math["epochs"]) == ("lori_s", 5e-4, 2.0)
    assert pipe.task("lori_s-code_mask").params.get("exclude", []) == []  # its own mask: may overlap safety's
    assert pipe.task("lori_d-code").params["method"] == "lori_d"
    assert "lori_s-code_eval_humaneval" in pipe.order()
    ours = load_pipeline(PAPER / "llama3-r32-chain-ours-safety-math-code.yaml")
    assert ours.model.protocol == "workbench"
    assert ours.task("math_mask").params["sparsity"] == 0.9


def test_memory_estimate_is_in_every_header():
    gen = _generator()
    total, _ = gen.memory_gb("llama3", 32)
    assert 20 < total < 30  # 16 GB of bf16 weights plus adapter, optimizer and activations
    for path in PAPER.glob("*.yaml"):
        head = "".join(line for line in path.read_text().splitlines()[:8] if line.startswith("#"))
        assert "GPU memory" in head and f"# workbench run pipelines/paper/{path.name}" in head, path.name
