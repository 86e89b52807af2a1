"""Core adapter behaviour: what each method trains, exact freezing, PEFT compatibility, fingerprints."""

import pytest
import torch

from workbench.adapters.live import attach, extract, load_onto
from workbench.adapters.spec import AdapterSpec
from workbench.errors import ConfigError, MismatchError
from workbench.keys import file_key

SPEC = dict(rank=4, alpha=8)


def _steps(pm, n=3, wd=0.1, lr=5e-2):
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(1)
    pm.train()
    for _ in range(n):
        ids = torch.randint(0, 1000, (2, 12), generator=g)
        pm(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()


def _split(adapter):
    a = {k: v for k, v in adapter.tensors.items() if k.endswith("lora_A.weight")}
    b = {k: v for k, v in adapter.tensors.items() if k.endswith("lora_B.weight")}
    return a, b


def _random_mask(adapter, density=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g) < density for k, v in _split(adapter)[1].items()}


def test_lori_s_keeps_a_and_b_outside_mask_bitwise(tiny_model):
    from workbench.models.tiny import tiny_llama

    # An earlier task's adapter with non-zero B everywhere: its entries outside the new mask must survive
    # AdamW weight decay and momentum bit for bit.
    m0, _ = tiny_llama()
    pm0 = attach(m0, AdapterSpec(method="lori_d", **SPEC))
    _steps(pm0)
    earlier = extract(pm0, AdapterSpec(method="lori_d", **SPEC))
    mask = _random_mask(earlier)
    spec = AdapterSpec(method="lori_s", **SPEC)
    pm = attach(tiny_model, spec, init=earlier, mask=mask)
    _steps(pm, n=4)
    after = extract(pm, spec)
    a0, b0 = _split(earlier)
    a1, b1 = _split(after)
    changed_inside = 0
    for k in a0:
        assert torch.equal(a0[k], a1[k])
    for k, m in mask.items():
        assert torch.equal(b0[k][~m].view(torch.int32), b1[k][~m].view(torch.int32))
        changed_inside += int((b0[k][m] != b1[k][m]).sum())
    assert changed_inside > 0
    # optimizer state exists only for the masked entries
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    assert trainable == sum(int(m.sum()) for m in mask.values())


def test_lori_d_freezes_a_trains_b(tiny_model):
    spec = AdapterSpec(method="lori_d", **SPEC)
    pm = attach(tiny_model, spec)
    before = extract(pm, spec)
    _steps(pm)
    after = extract(pm, spec)
    for k, v in _split(before)[0].items():
        assert torch.equal(v, after.tensors[k])
    assert any(not torch.equal(v, after.tensors[k]) for k, v in _split(before)[1].items())


def test_lora_trains_both(tiny_model):
    spec = AdapterSpec(method="lora", **SPEC)
    pm = attach(tiny_model, spec)
    before = extract(pm, spec)
    _steps(pm)
    after = extract(pm, spec)
    a0, b0 = _split(before)
    assert any(not torch.equal(v, after.tensors[k]) for k, v in a0.items())
    assert any(not torch.equal(v, after.tensors[k]) for k, v in b0.items())


def test_a_is_seeded_per_adapter(tiny_model):
    from workbench.models.tiny import tiny_llama

    a1 = _split(extract(attach(tiny_model, AdapterSpec(method="lori_d", a_seed=1, **SPEC)), AdapterSpec()))[0]
    a2 = _split(extract(attach(tiny_llama()[0], AdapterSpec(method="lori_d", a_seed=2, **SPEC)), AdapterSpec()))[0]
    a1b = _split(extract(attach(tiny_llama()[0], AdapterSpec(method="lori_d", a_seed=1, **SPEC)), AdapterSpec()))[0]
    k = next(iter(a1))
    assert torch.equal(a1[k], a1b[k]) and not torch.equal(a1[k], a2[k])


def test_saved_adapter_loads_in_peft_with_same_logits(tiny_model, tmp_path):
    from peft import PeftModel

    from workbench.models.tiny import tiny_llama

    spec = AdapterSpec(method="lora", **SPEC)
    pm = attach(tiny_model, spec)
    _steps(pm)
    adapter = extract(pm, spec)
    adapter.save(tmp_path / "ad")
    ids = torch.randint(0, 1000, (2, 10))
    pm.eval()
    with torch.no_grad():
        ours = pm(input_ids=ids).logits
        theirs = PeftModel.from_pretrained(tiny_llama()[0], str(tmp_path / "ad")).eval()(input_ids=ids).logits
    assert (ours - theirs).abs().max().item() < 1e-5


def test_adapter_on_other_base_is_refused(tiny_model, tmp_path):
    from workbench.models.tiny import tiny_llama

    spec = AdapterSpec(method="lori_d", **SPEC)
    adapter = extract(attach(tiny_model, spec), spec)
    adapter.save(tmp_path / "ad")
    other, _ = tiny_llama(seed=1)  # same shapes, different weights
    with pytest.raises(MismatchError, match="llama-.*llama-"):
        load_onto(other, tmp_path / "ad")


def test_mask_rules(tiny_model):
    with pytest.raises(ConfigError, match="needs a mask"):
        attach(tiny_model, AdapterSpec(method="lori_s", **SPEC))


def test_mask_with_wrong_keys_is_refused(tiny_model):
    mask = {file_key("model.layers.0.self_attn.q_proj", "B"): torch.ones(64, 4, dtype=torch.bool)}
    with pytest.raises(MismatchError, match="mask does not fit"):
        attach(tiny_model, AdapterSpec(method="lori_s", **SPEC), mask=mask)


def test_fingerprint_is_stable_under_peft_wrapping(tiny_model):
    from workbench.models.fingerprint import base_fingerprint

    fp = base_fingerprint(tiny_model)
    pm = attach(tiny_model, AdapterSpec(method="lora", **SPEC))
    assert base_fingerprint(pm) == fp


def test_spec_validation():
    with pytest.raises(ConfigError, match="rank"):
        AdapterSpec(rank=0)
    with pytest.raises(ConfigError, match="unknown adapter method 'lori'"):
        from workbench.adapters.registry import get_method

        get_method("lori")
