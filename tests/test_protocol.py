"""Protocols (workbench/protocols.py): each official setting in the resolved pipeline, explicit settings
winning, the official continual chain, and each setting reaching the training and evaluation code."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from workbench.adapters.spec import AdapterSpec
from workbench.errors import ConfigError
from workbench.pipeline import load_pipeline
from workbench.pipeline.chain import expand_chain
from workbench.pipeline.problems import PipelineError
from workbench.protocols import OFFICIAL, PROTOCOLS, apply_protocol, with_template
from workbench.train.config import TrainConfig
from workbench.train.loop import clip_gradients, train

# The official values, typed out here from the official code (juzhengz/LoRI @ 9183468), not read from
# workbench.protocols: a change to the bundle must change this table too.
OFFICIAL_DEFAULTS = {"template": "lori_official", "loss": "sequence_sum_mean", "clip": "per_tensor",
                     "max_grad_norm": 1.0, "dropout": 0.0, "scheduler": "constant", "warmup_ratio": 0.0,
                     "batch_size": 32, "grad_accum": 1, "max_length": 512, "weight_decay": 0.0,
                     "tie_rule": "official", "sparsity": 0.9, "max_new_tokens": 512, "pad_token": "add"}
OFFICIAL_EPOCHS = {"math": 3.0, "code": 2.0, "safety": 1.0, "nlu": 1.0}


def _write(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


SINGLE = """\
{protocol}
defaults: {{method: lori_d{extra}}}
stages:
  math: {{kind: train, task: math}}
  code: {{kind: train, task: code}}
  safety: {{kind: train, task: safety}}
  nlu: {{kind: train, task: nlu}}
  short: {{kind: train, task: math, steps: 2}}
  mask: {{kind: calibrate, from: math}}
  ev: {{kind: evaluate, adapter: math, tasks: [math, safety]}}
"""


def _resolved(tmp_path, protocol="protocol: official", extra="", **kw):
    return load_pipeline(_write(tmp_path, SINGLE.format(protocol=protocol, extra=extra)), **kw).resolved()


def test_official_protocol_resolves_every_official_setting(tmp_path):
    r = _resolved(tmp_path)
    assert r["protocol"] == "official"
    for key, value in OFFICIAL_DEFAULTS.items():
        assert r["defaults"][key] == value, key
    for stage, epochs in OFFICIAL_EPOCHS.items():
        p = r["stages"][stage]
        assert (p["epochs"], p["steps"]) == (epochs, None), stage
        for key in ("template", "loss", "clip", "scheduler", "warmup_ratio", "batch_size", "dropout"):
            assert p[key] == OFFICIAL_DEFAULTS[key], (stage, key)
    assert r["stages"]["short"]["steps"] == 2  # a stage's own length wins over the per-task epochs
    assert r["stages"]["mask"]["tie_rule"] == "official"
    assert r["stages"]["ev"]["judge"] == "lori_official"
    assert r["stages"]["ev"]["template"] == "lori_official"
    assert r["stages"]["ev"]["max_new_tokens"] == 512


def test_default_protocol_is_named_and_changes_nothing(tmp_path):
    ours = _resolved(tmp_path, protocol="protocol: workbench")
    (tmp_path / "q").mkdir()
    implicit = _resolved(tmp_path / "q", protocol="")
    assert ours["protocol"] == implicit["protocol"] == "workbench"
    assert ours["stages"] == implicit["stages"]
    assert ours["defaults"]["loss"] == "token_mean" and ours["defaults"]["clip"] == "global_norm"
    assert ours["defaults"]["template"] == "workbench" and ours["stages"]["math"]["epochs"] == 1.0
    assert ours["stages"]["mask"]["tie_rule"] == "exact" and ours["stages"]["ev"]["template"] == "workbench"


def test_explicit_settings_override_the_protocol(tmp_path):
    r = _resolved(tmp_path, extra=", clip: global_norm, batch_size: 8, epochs: 5")
    assert r["defaults"]["clip"] == "global_norm" and r["defaults"]["batch_size"] == 8
    assert r["defaults"]["loss"] == "sequence_sum_mean"  # what the file leaves out still comes from the protocol
    assert r["stages"]["math"]["epochs"] == 5.0  # an explicit default length replaces the per-task epochs
    (tmp_path / "o").mkdir()
    over = load_pipeline(_write(tmp_path / "o", SINGLE.format(protocol="protocol: official", extra="")),
                         ["defaults.loss=token_mean"]).resolved()
    assert over["defaults"]["loss"] == "token_mean"


def test_protocol_argument_replaces_the_files_and_bad_names_are_located(tmp_path):
    path = _write(tmp_path, SINGLE.format(protocol="protocol: workbench", extra=""))
    assert load_pipeline(path, protocol="official").resolved()["defaults"]["loss"] == "sequence_sum_mean"
    bad = _write(tmp_path, SINGLE.format(protocol="protocol: offical", extra=""))
    with pytest.raises(PipelineError) as exc:
        load_pipeline(bad)
    assert "p.yaml:1" in str(exc.value) and "protocol" in str(exc.value)
    with pytest.raises(PipelineError) as exc:  # a bad value the protocol wrote names the protocol
        load_pipeline(_write(tmp_path, SINGLE.format(protocol="protocol: official", extra="")),
                      ["defaults.loss=nope"])
    assert "defaults.loss" in str(exc.value)


def test_official_chain_stages_masks_and_methods():
    tree = expand_chain("safety->math", protocol="official")
    s = tree["stages"]
    assert tree["protocol"] == "official" and tree["name"] == "chain-safety-math-official"
    assert list(s) == ["base_eval", "safety_probe", "safety_mask", "safety", "safety_eval", "math_dense",
                       "math_mask", "math", "math_eval", "analyze"]
    assert s["math_dense"] == {"kind": "train", "task": "math", "method": "lori_d", "lr": s["math_dense"]["lr"]}
    assert s["math_mask"] == {"kind": "calibrate", "from": "math_dense"}  # its own mask: no exclusions
    assert (s["math"]["kind"], s["math"]["from"], s["math"]["mask"], s["math"]["method"]) == \
        ("continue", "safety", "math_mask", "lori_s")
    dense = expand_chain("safety->code", method="lori_d", protocol="official")["stages"]
    assert dense["code"]["kind"] == "continue" and dense["code"]["from"] == "safety" and "mask" not in dense["code"]
    ours = expand_chain("safety->math")
    assert "protocol" not in ours and ours["stages"]["math_mask"]["exclude"] == ["safety_mask"]


def test_quick_preset_keeps_its_budget_and_every_other_official_setting():
    r = load_pipeline("safety->math", protocol="official", preset="quick").resolved()
    d = r["defaults"]
    assert (d["steps"], d["batch_size"], d["max_samples"], d["rank"]) == (16, 4, 64, 8)  # the quick budget
    for key in ("template", "loss", "clip", "scheduler", "warmup_ratio", "dropout", "tie_rule"):
        assert d[key] == OFFICIAL_DEFAULTS[key], key
    assert r["stages"]["safety_eval"]["judge"] == "lori_official"
    paper = load_pipeline("safety->math", protocol="official", preset="paper").resolved()
    assert paper["defaults"]["batch_size"] == 32 and paper["defaults"]["scheduler"] == "constant"
    assert paper["stages"]["math"]["epochs"] == 3.0 and paper["stages"]["safety"]["epochs"] == 1.0


def test_validate_cli_prints_the_official_chain():
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "validate", "safety->math", "--protocol", "official"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "chain-safety-math-official" in out.stdout and "math_dense" in out.stdout


def test_apply_protocol_does_not_change_its_input_and_names_what_it_wrote():
    tree = {"protocol": "official", "defaults": {"loss": "token_mean"}, "stages": {"a": {"kind": "train", "task": "code"}}}
    out, written = apply_protocol(tree)
    assert tree == {"protocol": "official", "defaults": {"loss": "token_mean"},
                    "stages": {"a": {"kind": "train", "task": "code"}}}
    assert out["defaults"]["loss"] == "token_mean" and out["stages"]["a"]["epochs"] == 2.0
    assert ("defaults", "clip") in written and ("defaults", "loss") not in written
    assert ("stages", "a", "epochs") in written
    assert set(PROTOCOLS) == {"workbench", "official"} and dict(OFFICIAL.epochs) == OFFICIAL_EPOCHS


def test_settings_choices_agree_with_the_data_layer():
    from typing import get_args

    from workbench.data.prompts import TEMPLATES
    from workbench.settings import LoopSettings

    assert get_args(LoopSettings.model_fields["template"].annotation) == TEMPLATES


# -- the settings reach the code ---------------------------------------------------------------------

def _model():
    from transformers import LlamaForCausalLM

    from workbench.models.tiny import tiny_llama_config

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config())


def _two_sequences():
    # lengths and label counts differ, so the token mean and the sequence mean differ
    return [{"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, -100, 7, 8, 9, 10]},
            {"input_ids": [11, 12, 13], "labels": [-100, 12, 13]}]


def _by_hand(model, examples) -> tuple[float, float]:
    """(token mean, mean over sequences of the summed token loss) of the untrained model."""
    sums, counts = [], []
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1]
            target = torch.tensor(ex["labels"][1:])
            keep = target != -100
            sums.append(F.cross_entropy(logits[keep].float(), target[keep], reduction="sum").item())
            counts.append(int(keep.sum()))
    return sum(sums) / sum(counts), sum(sums) / len(sums)


@pytest.mark.parametrize("loss", ["token_mean", "sequence_sum_mean"])
def test_loss_form_on_a_two_sequence_batch(tmp_path, loss):
    data = _two_sequences()
    token_mean, sequence_mean = _by_hand(_model(), data)
    assert abs(token_mean - sequence_mean) > 0.5
    cfg = TrainConfig(lr=1e-3, steps=1, batch_size=2, loss=loss, checkpoint_every=0)
    r = train(_model(), data, AdapterSpec(method="lora", rank=2, alpha=4), cfg, tmp_path, progress=False)
    # LoRA's B starts at zero: the first step's loss is the base model's
    expected = sequence_mean if loss == "sequence_sum_mean" else token_mean
    assert r.summary["first_loss"] == pytest.approx(expected, rel=1e-5)


def test_sequence_loss_is_normalised_by_the_global_batch_under_accumulation(tmp_path):
    from train_script import examples

    data = examples(n=8)
    cfg = dict(lr=1e-2, steps=2, batch_size=4, loss="sequence_sum_mean", checkpoint_every=0, micro_tokens=0)
    one = train(_model(), data, AdapterSpec(rank=4, alpha=8), TrainConfig(grad_accum=1, **cfg), tmp_path / "a",
                progress=False)
    acc = train(_model(), data, AdapterSpec(rank=4, alpha=8), TrainConfig(grad_accum=4, **cfg), tmp_path / "b",
                progress=False)
    assert one.summary["first_loss"] == pytest.approx(acc.summary["first_loss"], rel=1e-6)
    for k, v in one.adapter.tensors.items():
        assert torch.allclose(v, acc.adapter.tensors[k], atol=1e-6), k


def _params_with_grads():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])  # norms 5 and 0.5
    return a, b


def test_per_tensor_clipping_clips_each_tensor_on_its_own():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    a, b = _params_with_grads()
    norm = clip_gradients(acc, [a, b], TrainConfig(clip="per_tensor", max_grad_norm=1.0))
    assert float(norm) == pytest.approx((25 + 0.25) ** 0.5)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8]), atol=1e-5)  # norm 5 -> 1
    assert torch.allclose(b.grad, torch.tensor([0.3, 0.4]))  # norm 0.5: untouched
    a, b = _params_with_grads()
    clip_gradients(acc, [a, b], TrainConfig(clip="global_norm", max_grad_norm=1.0))
    scale = 1 / (25.25 ** 0.5)
    assert torch.allclose(b.grad, torch.tensor([0.3, 0.4]) * scale, atol=1e-5)  # one factor for both


def test_template_setting_reaches_the_training_examples(tiny_tokenizer):
    from workbench.stages.train import task_examples

    ours = task_examples(tiny_tokenizer, "math", TrainConfig(), limit=2)
    official = task_examples(tiny_tokenizer, "math", TrainConfig(template="lori_official"), limit=2)
    text = tiny_tokenizer.decode(official[0]["input_ids"])
    assert "The final answer is: " in text and "Answer the above question." in text
    assert official[0]["input_ids"][-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ours[0]["input_ids"]) != text


def test_with_template_refuses_a_task_without_the_option():
    from workbench.data.tasks.custom import custom_task

    task = custom_task("mine", "does-not-matter.jsonl")
    assert with_template(task, "workbench") is task
    with pytest.raises(ConfigError, match="no prompt template option"):
        with_template(task, "lori_official")
    assert with_template("math", "lori_official").template == "lori_official"


def test_response_nll_uses_the_model_input_without_bos(monkeypatch, tiny_tokenizer):
    from workbench.evaluate import runner as runner_mod

    seen = {}

    def fake_mean_nll(model, tokenizer, contexts, responses, batch_size, merge, add_bos=True):
        seen.update(contexts=contexts, responses=responses, add_bos=add_bos)
        return {"nll": 0.0}

    monkeypatch.setattr(runner_mod, "mean_nll", fake_mean_nll)
    pairs = with_template("math", "lori_official").heldout_pairs(limit=2)
    runner_mod.Runner(model=None, tokenizer=tiny_tokenizer).response_nll(pairs)
    assert seen["contexts"] == [p["model_input"] for p in pairs] and seen["add_bos"] is False
    plain = with_template("math", "workbench").heldout_pairs(limit=2)
    runner_mod.Runner(model=None, tokenizer=tiny_tokenizer).response_nll(plain)
    assert seen["add_bos"] is True and seen["contexts"][0] != pairs[0]["model_input"]


def test_nlu_evaluation_sends_the_official_prompts():
    from workbench.evaluate.generate import GenerationConfig
    from workbench.evaluate.metrics.nlu import evaluate_nlu
    from workbench.evaluate.runner import Runner

    sent = []

    class Capture(Runner):
        def generate(self, prompts, seed=0):
            sent.append((list(prompts), self.gen.add_bos))
            return ["true"] * len(prompts)

    task = with_template("nlu", "lori_official")
    evaluate_nlu(Capture(model=None, tokenizer=None, gen=GenerationConfig()), task, limit=1, seed=0)
    split = task.eval_splits()[0]
    prompts, add_bos = sent[0]
    assert add_bos is False and prompts[0] in [r["model_input"] for r in task.eval_records(split)]
    assert prompts[0].startswith("Below is an instruction") and " " * 16 + "### Response:\n" in prompts[0]
