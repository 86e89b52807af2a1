"""The lm-evaluation-harness bridge (workbench/evaluate/lm_eval_bridge.py), offline.

The local task ``tests/data/lm_eval/arc_local.yaml`` reads the shipped ARC-Challenge sample with the
prompt, choices and answer prefix of our NLU ``loglik`` mode, so on the same items the harness's
per-choice log-likelihoods, its picks and its ``acc`` are compared with our own scoring.

Why they can differ at all: lm-eval tokenizes ``context + continuation`` as one string and splits at the
context's length, we tokenize the two apart (a BPE merge across the boundary would change the tokens; on
these items it does not, the test checks the sums match); lm-eval right-pads a batch and we left-pad with
position ids, which moves float32 sums by ~1e-5. So an item's pick may differ only where our two best
options are that close; ``acc`` and ``acc_norm`` coincide here because the labels have equal lengths.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "tests" / "data" / "lm_eval"
SPLIT = "arc-challenge"
SCORE_ATOL = 1e-3  # float32 sums of ~5 token log-probs, batched differently (see the module docstring)

needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason='lm-eval is not installed (optional extra: pip install "workbench[lm-eval]")')


@pytest.fixture()
def offline(monkeypatch):
    """Run from the repository root (the task YAML's data path is relative to it), with the hub off."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _ours(model, tokenizer, n: int) -> tuple[dict, list[list[float]]]:
    """Our NLU loglik evaluator on the first ``n`` ARC-c test items, with the option scores it computed."""
    from workbench.data.registry import get_task
    from workbench.evaluate.metrics.nlu import evaluate_nlu
    from workbench.evaluate.runner import Runner

    records = get_task("nlu").eval_records(SPLIT)[:n]
    task = SimpleNamespace(eval_splits=lambda: [SPLIT], eval_records=lambda split: records)
    scores: list[list[float]] = []

    class Recording(Runner):
        def option_logprobs(self, contexts, options):
            out = super().option_logprobs(contexts, options)
            scores.extend(out)
            return out

    result = evaluate_nlu(Recording(model, tokenizer), task, limit=None, seed=0, mode="loglik")
    return result, scores


def _harness(model, tokenizer, n: int) -> tuple[dict, list[list[float]], list[int]]:
    from workbench.evaluate.lm_eval_bridge import run_lm_eval

    out = run_lm_eval(model, tokenizer, ["arc_local"], include_path=TASKS_DIR, limit=n, batch_size=8,
                      apply_chat_template=True, log_samples=True)
    samples = sorted(out["samples"]["arc_local"], key=lambda s: s["doc_id"])
    scores = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    targets = [s["doc"]["instruction"].split("Answer format:")[-1].strip().split("/").index(s["target"])
               for s in samples]
    return out, scores, targets


def _argmax(row: list[float]) -> int:
    return max(range(len(row)), key=lambda i: row[i])  # the first on ties, as both harnesses


def _compare(model, tokenizer, n: int, label: str) -> tuple[int, list[list[float]]]:
    """Both scorings on the same ``n`` items: check scores and picks agree; return the number of items
    picked alike and the harness's scores."""
    ours, our_scores = _ours(model, tokenizer, n)
    out, their_scores, targets = _harness(model, tokenizer, n)
    assert len(our_scores) == len(their_scores) == n
    assert [len(r) for r in our_scores] == [len(r) for r in their_scores]  # same choices per item
    diff = max(abs(a - b) for ra, rb in zip(our_scores, their_scores) for a, b in zip(ra, rb))
    assert diff < SCORE_ATOL, f"{label}: per-choice log-likelihoods differ by {diff:.2e}"
    agree = 0
    for i, (mine, theirs) in enumerate(zip(our_scores, their_scores)):
        if _argmax(mine) == _argmax(theirs):
            agree += 1
            continue
        top = sorted(mine, reverse=True)
        assert top[0] - top[1] <= 2 * diff, f"{label}: item {i} picked differently without a near-tie"
    acc_h = out["tasks"]["lm_eval/arc_local"]["metrics"]["acc"]
    acc_o = ours["metrics"]["accuracy"]
    # the harness's acc is its own picks against the targets, and differs from ours only by disagreements
    assert acc_h == pytest.approx(sum(_argmax(s) == t for s, t in zip(their_scores, targets)) / n)
    assert abs(acc_h - acc_o) <= (n - agree) / n + 1e-9
    print(f"lm-eval agreement ({label}): {agree}/{n} items, acc harness={acc_h:.4f} ours={acc_o:.4f}, "
          f"max |loglik diff|={diff:.2e}")
    return agree, their_scores


@needs_lm_eval
def test_harness_agrees_with_our_loglik_scoring(offline, tiny_model, tiny_tokenizer):
    agree, _ = _compare(tiny_model, tiny_tokenizer, 40, "tiny base")
    assert agree >= 39  # at most a float32 near-tie apart


@needs_lm_eval
def test_harness_runs_an_adapter_merged_and_agrees(offline, tiny_model, tiny_tokenizer):
    import torch
    from peft import LoraConfig, get_peft_model

    base_scores = _harness(tiny_model, tiny_tokenizer, 8)[1]
    torch.manual_seed(1)
    peft_model = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                       init_lora_weights=False)).eval()
    agree, adapter_scores = _compare(peft_model, tiny_tokenizer, 8, "tiny + LoRA")
    assert agree >= 7
    # the harness saw the adapter (merged for the run), and left it unmerged
    assert max(abs(a - b) for ra, rb in zip(base_scores, adapter_scores) for a, b in zip(ra, rb)) > 1e-3
    assert not any(getattr(m, "merged", False) for m in peft_model.modules())


@needs_lm_eval
def test_results_are_shaped_like_our_tasks(offline, tiny_model, tiny_tokenizer):
    from workbench.evaluate.lm_eval_bridge import run_lm_eval

    out = run_lm_eval(tiny_model, tiny_tokenizer, ["arc_local"], include_path=TASKS_DIR, limit=4)
    result = out["tasks"]["lm_eval/arc_local"]
    assert {"task", "kind", "primary", "higher_is_better", "metrics", "std", "details", "settings"} <= set(result)
    assert (result["kind"], result["primary"], result["higher_is_better"]) == ("lm_eval", "acc", True)
    assert result["details"]["n"] == 4 and result["settings"]["limit"] == 4
    assert out["metrics"]["lm_eval/arc_local/acc"] == result["metrics"]["acc"]
    assert 0.0 <= result["metrics"]["acc_stderr"] <= 1.0  # closed-form stderr of a mean
    json.dumps(out["tasks"])  # goes into results.json as it is


@needs_lm_eval
def test_bad_names_and_paths_are_clear_errors(offline, tmp_path):
    from workbench.errors import ConfigError
    from workbench.evaluate.lm_eval_bridge import check_tasks, evaluate_with_lm_eval, task_manager

    local = task_manager(TASKS_DIR, include_defaults=False)
    with pytest.raises(ConfigError, match="unknown lm-eval task 'arc_locl'.*did you mean 'arc_local'"):
        check_tasks(["arc_locl"], local)
    with pytest.raises(ConfigError, match="include_path: '.*nowhere' is not a directory"):  # before any loading
        evaluate_with_lm_eval(None, ["arc_local"], include_path=tmp_path / "nowhere", base=str(tmp_path / "x"))


@pytest.mark.slow  # indexes the harness's ~15k built-in tasks (about 10 s)
@needs_lm_eval
def test_unknown_task_fails_before_the_model_is_loaded(offline, tmp_path):
    from workbench.errors import ConfigError
    from workbench.evaluate.lm_eval_bridge import evaluate_with_lm_eval

    # the base does not exist: reaching load_for_eval would raise another error
    with pytest.raises(ConfigError, match="unknown lm-eval task 'arc_locl'.*did you mean 'arc_local'"):
        evaluate_with_lm_eval(None, ["arc_locl"], include_path=TASKS_DIR, base=str(tmp_path / "no-model"))


def test_missing_lm_eval_is_a_one_line_error_naming_the_extra(monkeypatch):
    from workbench.errors import ConfigError
    from workbench.evaluate.lm_eval_bridge import run_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(ConfigError) as info:
        run_lm_eval(None, None, ["arc_local"])
    assert 'pip install "workbench[lm-eval]"' in str(info.value) and "\n" not in str(info.value)


@needs_lm_eval
def test_cli_eval_with_the_harness(offline, tmp_path, capsys):
    from workbench.cli import main
    from workbench.models.tiny import save_tiny_llama

    base = save_tiny_llama(tmp_path / "base")
    out = tmp_path / "eval.json"
    rc = main(["eval", "--base-only", "--base", str(base), "--harness", "lm_eval", "--lm-eval-tasks", "arc_local",
               "--include-path", str(TASKS_DIR), "--lm-eval-chat-template", "--limit", "3", "--device", "cpu",
               "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert list(report["tasks"]) == ["lm_eval/arc_local"]
    assert report["tasks"]["lm_eval/arc_local"]["settings"]["apply_chat_template"] is True
    assert "lm_eval/arc_local" in capsys.readouterr().out


def test_cli_lm_eval_tasks_is_a_list_option():
    import argparse

    from workbench.commands import eval as eval_cmd

    parser = argparse.ArgumentParser()
    eval_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", "--base-only", "--harness", "lm_eval", "--lm-eval-tasks", "a", "b",
                              "--lm-eval-tasks", "c"])
    assert args.lm_eval_tasks == ["a", "b", "c"] and args.task == []


@pytest.mark.integration
@needs_lm_eval
def test_harness_agrees_on_smollm2(offline):
    from workbench.models.base import load_base

    model, tokenizer = load_base("smollm2-135m-instruct")
    agree, _ = _compare(model.eval(), tokenizer, 100, "SmolLM2-135M-Instruct")
    assert agree >= 98


# --- the evaluate stage -----------------------------------------------------------------------------

def _pipeline(tmp_path, stage: str, base: str = "smollm2-135m-instruct") -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(f"base: {{model: '{base}'}}\nstages:\n  ev: {stage}\n", encoding="utf-8")
    return path


def test_stage_harness_fields_are_validated(tmp_path):
    from workbench.pipeline import PipelineError, load_pipeline

    bad = {"{kind: evaluate, harness: lm_eval, tasks: [nlu]}": "harness: lm_eval needs lm_eval_tasks",
           "{kind: evaluate, tasks: [nlu], lm_eval_tasks: [arc_easy]}": "need harness: lm_eval",
           "{kind: evaluate}": "give at least one task",
           "{kind: evaluate, harness: lm_eval, lm_eval_tasks: [x], include_path: nowhere}":
               r"pipe.yaml:\d+: stages.ev.include_path: 'nowhere' is not a directory"}
    for stage, message in bad.items():
        with pytest.raises(PipelineError, match=message):
            load_pipeline(_pipeline(tmp_path, stage))


def test_validate_names_the_extra_when_lm_eval_is_missing(tmp_path, monkeypatch):
    import importlib.util

    from workbench.pipeline import PipelineError, load_pipeline

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(PipelineError, match=r'stages.ev.harness: .*pip install "workbench\[lm-eval\]"'):
        load_pipeline(_pipeline(tmp_path, "{kind: evaluate, harness: lm_eval, lm_eval_tasks: [arc_easy]}"))


def test_stage_resolves_include_path_into_the_key(tmp_path):
    import shutil

    from workbench.pipeline import load_pipeline

    plain = load_pipeline(_pipeline(tmp_path, "{kind: evaluate, tasks: [nlu]}")).task("ev").params
    assert (plain["harness"], plain["lm_eval_tasks"], plain["include_path"]) == ("workbench", [], None)
    shutil.copytree(TASKS_DIR, tmp_path / "lm_tasks")
    stage = "{kind: evaluate, harness: lm_eval, lm_eval_tasks: [arc_local], include_path: lm_tasks}"
    first = load_pipeline(_pipeline(tmp_path, stage)).task("ev")
    assert first.params["include_path"] == str((tmp_path / "lm_tasks").resolve())
    yaml = tmp_path / "lm_tasks" / "arc_local.yaml"
    yaml.write_text(yaml.read_text().replace("version: 1.0", "version: 2.0"))
    assert load_pipeline(_pipeline(tmp_path, stage)).task("ev").digest != first.digest  # edited task re-runs


@needs_lm_eval
def test_stage_runs_lm_eval_tasks_into_the_forgetting_matrix(offline, tmp_path):
    from workbench.graph import run_all
    from workbench.models.tiny import save_tiny_llama
    from workbench.pipeline import load_pipeline

    base = save_tiny_llama(tmp_path / "base")
    stage = (f"{{kind: evaluate, harness: lm_eval, lm_eval_tasks: [arc_local], include_path: '{TASKS_DIR}', "
             "limit: 3, lm_eval_chat_template: true}\n  report: {kind: analyze, forgetting: [ev]}")
    results = run_all(load_pipeline(_pipeline(tmp_path, stage, str(base))), tmp_path / "run")
    cell = results["ev"].metrics["lm_eval/arc_local"]
    assert cell["primary"] == "acc" and 0.0 <= cell["value"] <= 1.0 and cell["nll"] is None
    stored = json.loads(Path(results["ev"].artifacts["results"]).read_text())["tasks"]["lm_eval/arc_local"]
    assert stored["details"]["n"] == 3 and stored["settings"]["apply_chat_template"] is True
    forgetting = json.loads(Path(results["report"].artifacts["forgetting"]).read_text())
    assert forgetting["tasks"] == ["lm_eval/arc_local"] and forgetting["matrix"] == [[cell["value"]]]
