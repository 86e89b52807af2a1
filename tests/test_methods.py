"""The LoRA family as adapter methods (QLoRA, LoRA+, LoRA-FA, LoRA-drop, AdaLoRA, DoRA, LongLoRA).

A method matrix trains each method with the workbench loop on the tiny Llama (the loss must drop), saves
it, reloads it with PEFT's loader and checks identical outputs; then each method's own claim is checked
(two learning rates, frozen A, importance ranking, rank budget, magnitude training, S2-Attn against an
explicit-mask reference, 4-bit base and its footprint).
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workbench.adapters.live import attach, extract, load_onto
from workbench.adapters.method import lora_layers
from workbench.adapters.spec import AdapterSpec
from workbench.errors import ConfigError
from workbench.train.config import TrainConfig
from workbench.train.loop import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_script import examples  # noqa: E402

SPEC = dict(rank=4, alpha=8)
CFG = TrainConfig(lr=5e-2, steps=16, batch_size=2, warmup_ratio=0.0, schedule="constant", max_grad_norm=1.0)
OPTIONS = {
    "lora_plus": {"lr_ratio": 4},
    "adalora": {"target_r": 2, "tinit": 2, "tfinal": 4, "orth_reg_weight": 0.1},
    "longlora": {"group_size": 8},
    "lora_drop": {"threshold": 0.6, "probe_fraction": 0.5, "probe_steps": 4},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matmuls on a shared 2-core machine: two threads are ~20x slower than one under contention.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return [{"input_ids": ex["input_ids"][:20], "labels": ex["labels"][:20]} for ex in examples(n=4)]


@pytest.fixture(scope="module")
def nf4_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("nf4") / "tiny")


def _model(quantized_dir=None):
    if quantized_dir is not None:
        from workbench.models.base import BaseSpec, load_base

        return load_base(BaseSpec(name=str(quantized_dir), quantize="nf4"), with_tokenizer=False)[0]
    from transformers import LlamaForCausalLM

    from workbench.models.tiny import tiny_llama_config

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


def _train(method, data, out, base):
    spec = AdapterSpec(method=method, options=OPTIONS.get(method, {}), **SPEC)
    return spec, train(base, data, spec, CFG, out, progress=False)  # lora_drop: its run hook's two phases


def _reload(method, path, base):
    return load_onto(base, path)  # the adapter's method loads it (AdaLoRA: its reduced ranks)


@pytest.mark.parametrize("method", ["lora_plus", "lora_fa", "dora", "adalora", "longlora", "qlora", "lora_drop"])
def test_method_trains_saves_and_reloads(method, data, nf4_dir, tmp_path):
    qdir = nf4_dir if method == "qlora" else None
    spec, r = _train(method, data, tmp_path, _model(qdir))
    first, last = r.summary["first_loss"], r.summary["last_loss"]
    print(f"\n{method}: loss {first:.4f} -> {last:.4f}")
    assert last < first - 0.05, (first, last)
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    pm = r.model.eval()
    with torch.no_grad():
        ours = pm(input_ids=ids).logits
        theirs = _reload(method, r.adapter_path, _model(qdir))(input_ids=ids).logits
    assert (ours - theirs).abs().max().item() < 1e-5
    CHECKS.get(method, lambda *a: None)(r, spec)


def _check_lora_fa(r, spec):
    from workbench.keys import file_key
    from workbench.adapters.init import seeded_a

    for module in r.adapter.modules():
        a = r.adapter.tensors[file_key(module, "A")]
        assert torch.equal(a, seeded_a(spec.a_seed, module, *a.shape))  # A bit-identical to its init
    assert any(v.abs().sum() > 0 for v in (r.adapter.tensors[k] for k in r.adapter.b_keys()))


def _check_dora(r, spec):
    from workbench.adapters.methods.dora import magnitude_key

    base = _model()
    moved = 0
    for module in r.adapter.modules():
        w = base.get_submodule(module).weight
        m = r.adapter.tensors[magnitude_key(module)]
        moved += int(not torch.allclose(m, w.norm(dim=1), atol=1e-6))  # init: row norms of W
    assert moved > 0


def _check_adalora(r, spec):
    from workbench.adapters.methods.adalora import adalora_ranks

    ranks = adalora_ranks(r.model)
    assert sum(ranks.values()) == spec.option("target_r") * len(ranks)  # the budget, exactly
    assert max(ranks.values()) <= spec.rank and len(set(ranks.values())) > 1  # allocated, not uniform
    assert r.adapter.config["peft_type"] == "ADALORA" and r.adapter.config["rank_pattern"]


def _check_lora_drop(r, spec):
    record = r.adapter.meta["lora_drop"]
    assert record["kept"] and record["dropped"]
    layers = lora_layers(r.model)
    dropped = [m for m in record["dropped"] if m.endswith("q_proj")] or record["dropped"][:1]
    same = [m for m in record["dropped"] if m.rsplit(".", 1)[1] == dropped[0].rsplit(".", 1)[1]]
    assert all(layers[m].lora_B["default"].weight is layers[same[0]].lora_B["default"].weight for m in same)
    kept_b = {id(layers[m].lora_B["default"].weight) for m in record["kept"]}
    assert len(kept_b) == len(record["kept"])  # kept modules own their LoRA


def _check_qlora(r, spec):
    from workbench.adapters.methods.qlora import is_4bit, linear_weight_bytes

    assert is_4bit(r.model)
    fp = linear_weight_bytes(r.model.get_base_model())
    print(f"\nQLoRA tiny base linear weights: nf4 {fp['stored']} bytes vs fp32 {fp['fp32']} bytes "
          f"(ratio {fp['ratio']:.3f}, {fp['layers']} layers)")
    assert fp["ratio"] < 0.2


CHECKS = {"lora_fa": _check_lora_fa, "dora": _check_dora, "adalora": _check_adalora,
          "lora_drop": _check_lora_drop, "qlora": _check_qlora}


# ---- LoRA+ -------------------------------------------------------------------------------------------

def test_lora_plus_has_two_learning_rates():
    from workbench.adapters.registry import get_method

    spec = AdapterSpec(method="lora_plus", options={"lr_ratio": 16}, **SPEC)
    pm = attach(_model(), spec)
    groups = get_method("lora_plus").param_groups(pm, spec, 1e-3, 0.0)
    a_ids = {id(l.lora_A["default"].weight) for l in lora_layers(pm).values()}
    b_ids = {id(l.lora_B["default"].weight) for l in lora_layers(pm).values()}
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr == {1e-3 / 16: a_ids, 1e-3: b_ids}
    opt = torch.optim.AdamW(groups, lr=1e-3)
    assert sorted(g["lr"] for g in opt.param_groups) == [1e-3 / 16, 1e-3]
    with pytest.raises(ConfigError, match="lr_ratio"):
        get_method("lora_plus").param_groups(pm, AdapterSpec(method="lora_plus", options={"lr_ratio": 0}), 1e-3, 0.0)


# ---- LoRA-drop ---------------------------------------------------------------------------------------

def test_lora_drop_select_by_threshold_and_top_n():
    from workbench.adapters.methods.lora_drop import lora_drop_select

    scores = {"d": 1.0, "a": 10.0, "c": 3.0, "b": 6.0}  # shares 0.5, 0.3, 0.15, 0.05
    assert lora_drop_select(scores, 0.9) == (["a", "b", "c"], ["d"])
    assert lora_drop_select(scores, 0.8) == (["a", "b"], ["c", "d"])
    assert lora_drop_select(scores, 0.5) == (["a"], ["b", "c", "d"])
    assert lora_drop_select(scores, top_n=3) == (["a", "b", "c"], ["d"])
    with pytest.raises(ConfigError, match="threshold"):
        lora_drop_select(scores, 1.5)


def test_lora_drop_importances_match_hand_computation():
    from workbench.adapters.methods.lora_drop import lora_drop_select, lora_importances

    pm = attach(_model(), AdapterSpec(method="lora", **SPEC))
    g = torch.Generator().manual_seed(3)
    layers = lora_layers(pm)
    with torch.no_grad():  # a "briefly trained" adapter: B no longer zero, differently sized per module
        for i, layer in enumerate(layers.values()):
            b = layer.lora_B["default"].weight
            b.copy_(torch.randn(b.shape, generator=g) * (0.01 * (i + 1)))
    sample = torch.randint(3, 300, (2, 9), generator=g)
    inputs = {}
    hooks = [l.register_forward_pre_hook(lambda mod, args, m=m: inputs.__setitem__(m, args[0].detach()))
             for m, l in layers.items()]
    with torch.no_grad():
        pm.eval()(input_ids=sample)
    for h in hooks:
        h.remove()
    hand = {}
    for m, layer in layers.items():
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        out = inputs[m] @ a.T @ b.T * layer.scaling["default"]  # (b, t, in) -> (b, t, out)
        hand[m] = out.pow(2).sum(-1).mean().item()
    ours = lora_importances(pm, sample)
    for m in hand:
        assert math.isclose(ours[m], hand[m], rel_tol=1e-4)
    order = sorted(hand, key=lambda m: -hand[m])
    total, cum, kept = sum(hand.values()), 0.0, []
    for m in order:
        kept.append(m)
        cum += hand[m] / total
        if cum >= 0.7:
            break
    assert lora_drop_select(ours, 0.7)[0] == kept


def test_lora_drop_needs_a_selection():
    with pytest.raises(ConfigError, match="needs its module selection"):
        attach(_model(), AdapterSpec(method="lora_drop", **SPEC))


# ---- AdaLoRA -----------------------------------------------------------------------------------------

def test_adalora_orth_regulariser_equals_peft():
    from workbench.adapters.registry import get_method

    spec = AdapterSpec(method="adalora", options={"orth_reg_weight": 0.3}, **SPEC)
    pm = attach(_model(), spec)
    ids = torch.randint(3, 300, (1, 10))
    with torch.no_grad():
        out = pm(input_ids=ids, labels=ids)  # PEFT adds its regulariser when labels are given
        ce = F.cross_entropy(out.logits[0, :-1], ids[0, 1:])
        ours = get_method("adalora").loss_extra(pm)
    assert math.isclose(out.loss.item() - ce.item(), ours.item(), rel_tol=1e-4)


# ---- LongLoRA / S2-Attn ------------------------------------------------------------------------------

def _reference_s2(q, k, v, group, mask=None):
    """S2-Attn from explicit (t, t) masks: same group (shifted by G/2 for the second half of heads) and causal."""
    b, h, t, d = q.shape
    i, j = torch.arange(t)[:, None], torch.arange(t)[None]
    out = []
    for head in range(h):
        off = group // 2 if head >= h // 2 and group < t else 0
        allowed = (j <= i) & ((i + off) // group == (j + off) // group)
        if mask is not None:
            allowed = allowed & mask[:, 0]
        scores = (q[:, head] @ k[:, head].transpose(-1, -2) / math.sqrt(d)).masked_fill(~allowed, float("-inf"))
        out.append(torch.softmax(scores, -1) @ v[:, head])
    return torch.stack(out, 1)


def test_s2attn_one_group_is_full_causal_attention():
    from workbench.adapters.s2attn import s2_attention

    q, k, v = torch.randn(3, 2, 4, 12, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (s2_attention(q, k, v, group=12) - full).abs().max() < 1e-6
    assert (s2_attention(q, k, v, group=64) - full).abs().max() < 1e-6


@pytest.mark.parametrize("group", [2, 3, 4, 5])
def test_s2attn_matches_explicit_mask_reference(group):
    from workbench.adapters.s2attn import s2_attention

    q, k, v = torch.randn(3, 2, 4, 11, 8, generator=torch.Generator().manual_seed(group)).unbind(0)
    assert (s2_attention(q, k, v, group) - _reference_s2(q, k, v, group)).abs().max() < 1e-5
    doc = torch.tensor([0] * 5 + [1] * 6)  # two packed sequences: no attention across them
    mask = ((doc[:, None] == doc[None]) & torch.ones(11, 11, dtype=torch.bool).tril())[None, None].expand(2, 1, 11, 11)
    assert (s2_attention(q, k, v, group, mask=mask) - _reference_s2(q, k, v, group, mask)).abs().max() < 1e-5


def test_longlora_uses_s2attn_in_training_only(monkeypatch):
    import workbench.adapters.s2attn as s2

    calls = []
    real = s2.s2_attention
    monkeypatch.setattr(s2, "s2_attention", lambda *a, **kw: calls.append(a[3]) or real(*a, **kw))
    ids = torch.randint(3, 300, (1, 16))
    with torch.no_grad():
        plain = _model()(input_ids=ids).logits
        pm = attach(_model(), AdapterSpec(method="longlora", options={"group_size": 4}, **SPEC))
        evaluated = pm.eval()(input_ids=ids).logits
        assert not calls and (evaluated - plain).abs().max() < 1e-6  # B = 0 and SDPA at inference
        trained = pm.train()(input_ids=ids).logits
    assert calls and set(calls) == {4}
    assert (trained - plain).abs().max() > 1e-4  # grouped attention really differs from full attention
    trainable = {n.split(".modules_to_save")[0] for n, p in pm.named_parameters() if p.requires_grad and "lora_" not in n}
    assert any(n.endswith("embed_tokens") for n in trainable) and any(n.endswith("norm") for n in trainable)


# ---- QLoRA -------------------------------------------------------------------------------------------

def test_qlora_refuses_a_full_precision_base():
    with pytest.raises(ConfigError, match="4-bit"):
        attach(_model(), AdapterSpec(method="qlora", **SPEC))


def test_lori_s_on_nf4_base_keeps_b_outside_mask_bitwise(nf4_dir):
    from workbench.adapters.methods.qlora import is_4bit
    from workbench.testing import random_adapter

    earlier = random_adapter(rank=4, alpha=8, seed=1)
    b_keys = earlier.b_keys()
    g = torch.Generator().manual_seed(0)
    mask = {k: torch.rand(earlier.tensors[k].shape, generator=g) < 0.1 for k in b_keys}
    spec = AdapterSpec(method="lori_s", **SPEC)
    pm = attach(_model(nf4_dir), spec, init=earlier, mask=mask)
    assert is_4bit(pm)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=5e-2, weight_decay=0.1)
    pm.train()
    for _ in range(3):
        ids = torch.randint(3, 300, (2, 10), generator=g)
        pm(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    after = extract(pm, spec)
    changed = 0
    for k, m in mask.items():
        assert torch.equal(earlier.tensors[k][~m].view(torch.int32), after.tensors[k][~m].view(torch.int32))
        changed += int((earlier.tensors[k][m] != after.tensors[k][m]).sum())
    assert changed > 0
