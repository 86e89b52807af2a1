"""The ``pad_token`` setting: ``eos`` (ours, the default) and ``add`` (the official LoRI code adds ``<PAD>``
and resizes the embeddings: juzhengz/LoRI @ 9183468 ``src/train_lori.py:78-81``, ``src/eval_model.py:278-281``).

What is pinned: the official protocol resolves ``add``, and the default leaves every stage's params (so its
cache key) as before the setting existed; ``add`` grows the vocabulary by one row with the tokenizer's pad
id on it, reproducibly (one fingerprint per load); the new row changes nothing but the softmax normaliser,
so a training run gives the same losses to a tolerance set by the new token's probability; an adapter
trained with ``add`` records it, is evaluated on a base loaded the same way, and refuses a plain base with
an error naming ``pad_token``; ``workbench train --pad-token add`` trains on the tiny model.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from workbench.adapters.base_check import check_base
from workbench.errors import ConfigError, MismatchError
from workbench.models.base import ADDED_PAD, BaseSpec, load_base
from workbench.models.fingerprint import base_fingerprint
from workbench.pipeline import load_pipeline
from workbench.train.config import TrainConfig

PIPELINE = """\
{protocol}
defaults: {{method: lori_d}}
stages:
  math: {{kind: train, task: math}}
  ev: {{kind: evaluate, adapter: math, tasks: [math]}}
  base_ev: {{kind: evaluate, tasks: [math]}}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return str(save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model"))


def _resolved(tmp_path, protocol: str) -> dict:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(protocol=protocol))
    return load_pipeline(path).resolved()


def test_official_protocol_resolves_add_and_the_default_keeps_the_params(tmp_path):
    r = _resolved(tmp_path, "protocol: official")
    assert r["defaults"]["pad_token"] == "add"
    assert r["stages"]["math"]["pad_token"] == "add"  # the train stage loads its base with <PAD>
    assert r["stages"]["base_ev"]["pad_token"] == "add"  # so does an evaluation of the base alone
    ours = _resolved(tmp_path, "protocol: workbench")
    assert ours["defaults"]["pad_token"] == "eos"
    # at the default the setting is in no stage's params: keys computed before it existed still match
    for stage in ("math", "ev", "base_ev"):
        assert "pad_token" not in ours["stages"][stage], stage
    assert TrainConfig().pad_token == "eos"
    with pytest.raises(ConfigError, match="pad_token"):
        TrainConfig(pad_token="left")


def test_add_grows_the_vocabulary_by_the_pad_row_reproducibly(tiny, monkeypatch):
    monkeypatch.setenv("WORKBENCH_BASE_CACHE_MB", "0")  # two real loads, not two copies of one
    plain, ptok = load_base(tiny)
    added, atok = load_base(BaseSpec(tiny, pad_token="add"))
    again, _ = load_base(BaseSpec(tiny, pad_token="add"))
    rows = plain.get_input_embeddings().weight.shape[0]
    assert ptok.pad_token_id == ptok.eos_token_id and len(ptok) == rows  # ours: pad = EOS, nothing resized
    assert atok.pad_token == ADDED_PAD and atok.pad_token_id == rows == added.config.pad_token_id
    weight = added.get_input_embeddings().weight
    assert weight.shape[0] == len(atok) == rows + 1 == added.config.vocab_size
    assert added.get_output_embeddings().weight.shape[0] == rows + 1
    # mean_resizing: a draw with the old rows' mean and 1e-9 x their covariance, i.e. about their mean
    assert torch.allclose(weight[-1], plain.get_input_embeddings().weight.mean(0), atol=1e-3)
    assert torch.equal(weight[:-1], plain.get_input_embeddings().weight)
    fp = base_fingerprint(added)
    assert fp == base_fingerprint(again) != base_fingerprint(plain)  # seeded draw: one fingerprint per load


def test_the_new_row_changes_only_the_softmax_normaliser(tiny):
    """One padded forward pass: every real position's logits are the same with and without <PAD> (the input
    row is masked out of attention), and the loss differs by exactly -log(1 - p(<PAD>)) per scored token."""
    plain, ptok = load_base(tiny)
    added, atok = load_base(BaseSpec(tiny, pad_token="add"))
    texts = ["one two three four five six seven", "one two"]
    ptok.padding_side = atok.padding_side = "left"  # real tokens come after pads: the mask must hide them
    pb, ab = ptok(texts, padding=True, return_tensors="pt"), atok(texts, padding=True, return_tensors="pt")
    assert (ab["input_ids"] == atok.pad_token_id).any() and torch.equal(pb["attention_mask"], ab["attention_mask"])
    real = pb["attention_mask"].bool()
    with torch.no_grad():
        lp = plain(**pb).logits.double()
        la = added(**ab).logits.double()
    assert torch.allclose(la[..., :-1][real], lp[real], atol=1e-5)
    # a token scored from a real position (a pad position's own input differs: EOS against <PAD>)
    labels = pb["input_ids"][:, 1:].masked_fill(~(real[:, 1:] & real[:, :-1]), -100)
    loss_p = F.cross_entropy(lp[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss_a = F.cross_entropy(la[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100)
    p_new = torch.softmax(la[:, :-1], -1)[..., -1][labels != -100]
    assert float(loss_a - loss_p) == pytest.approx(float(torch.log1p(-p_new).neg().mean()), abs=1e-6)
    assert float(p_new.max()) < 1e-3  # the mean-initialised row takes about 1/vocab of the mass


def _train(tiny, tmp_path, pad_token: str):
    from workbench.adapters.spec import AdapterSpec
    from workbench.stages.train import train_task

    cfg = TrainConfig(steps=3, batch_size=4, max_length=96, lr=1e-3, warmup_ratio=0.0, pad_token=pad_token)
    spec = AdapterSpec(method="lori_d", task="math", rank=4, a_seed=0)
    return train_task(BaseSpec(tiny), "math", spec, cfg, tmp_path / pad_token, limit=8, progress=False)


def test_training_with_add_gives_the_eos_losses(tiny, tmp_path):
    """Same data, seed and steps: the losses agree to 1e-4 relative. Not float rounding (about 1e-7 here):
    the <PAD> output row joins every softmax normaliser, adding -log(1 - p(<PAD>)) to each token's loss
    (p about 1/vocab = 2e-5 absolute on a loss of about 10.8, i.e. 2e-6 relative: previous test) and nudging
    the gradients by as little; 1e-4 leaves room for three steps of that and no more."""
    eos, add = _train(tiny, tmp_path, "eos"), _train(tiny, tmp_path, "add")
    le = [t["loss"] for t in eos.summary["trace"]]
    la = [t["loss"] for t in add.summary["trace"]]
    assert len(le) == len(la) == 3 and le[0] != le[-1]
    assert la == pytest.approx(le, rel=1e-4)
    assert eos.model.get_input_embeddings().weight.shape[0] + 1 == add.model.get_input_embeddings().weight.shape[0]
    assert add.adapter.meta["pad_token"] == "add" and eos.adapter.meta["pad_token"] == "eos"
    assert add.adapter.fingerprint != eos.adapter.fingerprint


def test_an_add_adapter_needs_a_base_loaded_with_add(tiny, tmp_path):
    from workbench.evaluate.api import load_for_eval

    result = _train(tiny, tmp_path, "add")
    # the file holds the LoRA factors only: PEFT would also copy the resized embedding and lm_head
    from safetensors import safe_open

    with safe_open(str(result.adapter_path / "adapter_model.safetensors"), "pt") as f:
        assert all(".lora_A." in k or ".lora_B." in k for k in f.keys()), list(f.keys())[:3]
    plain, _ = load_base(tiny)
    with pytest.raises(MismatchError, match="pad_token: add.*pad_token: eos"):
        check_base(result.adapter, plain)
    # evaluation reads the adapter's record and loads the base the same way (workbench eval ADAPTER)
    model, tok, _ = load_for_eval(result.adapter_path, base=tiny, device="cpu")
    assert tok.pad_token == ADDED_PAD and model.get_base_model().get_input_embeddings().weight.shape[0] == len(tok)


@pytest.mark.slow
def test_workbench_train_pad_token_add_on_the_tiny_model(tiny, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "workbench.cli", "train", "--task", "math", "--model", tiny,
                          "--pad-token", "add", "--steps", "1", "--batch-size", "2", "--max-samples", "2",
                          "--rank", "4", "--max-length", "64", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    meta = json.loads((out / "adapter" / "workbench.json").read_text())
    assert meta["pad_token"] == "add"
    assert meta["base_fingerprint"] == base_fingerprint(load_base(BaseSpec(tiny, pad_token="add"))[0])
    assert math.isfinite(json.loads((out / "train_summary.json").read_text())["last_loss"])
