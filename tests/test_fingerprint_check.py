"""One base-fingerprint check (``workbench.adapters.base_check.check_base``) on every path that puts an
adapter on a base: train (continuing), eval, merge (into base weights, API and CLI), export, inspect and
AdaLoRA's loader. Each refuses a wrong base with an error naming both fingerprints."""

import re

import pytest
import torch

from workbench.adapters.live import attach, extract
from workbench.adapters.spec import AdapterSpec
from workbench.errors import MismatchError
from workbench.models.fingerprint import base_fingerprint

SPEC = AdapterSpec(method="lori_d", rank=4, alpha=8)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Two tiny bases of the same shapes but other weights: (dir, fingerprint) each."""
    from workbench.models.tiny import save_tiny_llama, tiny_llama

    root = tmp_path_factory.mktemp("bases")
    out = []
    for seed in (0, 1):
        path = save_tiny_llama(root / f"base{seed}", seed=seed)
        out.append((path, base_fingerprint(tiny_llama(seed=seed)[0])))
    assert out[0][1] != out[1][1]
    return out


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A lori_d adapter made on base 0 (B moved off zero, so merges change weights)."""
    from workbench.models.tiny import tiny_llama

    pm = attach(tiny_llama(seed=0)[0], SPEC)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    return extract(pm, SPEC).save(tmp_path_factory.mktemp("ad") / "adapter")


def _other():
    from workbench.models.tiny import tiny_llama

    return tiny_llama(seed=1)[0]


def _names_both(text: str, bases) -> bool:
    (_, fp0), (_, fp1) = bases
    return re.search(rf"trained on base {fp0}, this base is {fp1}", text) is not None


def test_train_continuing_an_adapter_refuses_another_base(adapter_dir, bases, tmp_path):
    import sys
    from pathlib import Path

    from workbench.adapters.adapter import load_adapter
    from workbench.train.config import TrainConfig
    from workbench.train.loop import train

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_script import examples

    with pytest.raises(MismatchError) as err:
        train(_other(), examples(n=2), SPEC, TrainConfig(steps=1, batch_size=2), tmp_path,
              init=load_adapter(adapter_dir), progress=False)
    assert _names_both(str(err.value), bases) and str(adapter_dir) in str(err.value)
    assert not (tmp_path / "adapter").exists()


def test_eval_refuses_another_base(adapter_dir, bases):
    from workbench.evaluate.api import load_for_eval

    with pytest.raises(MismatchError) as err:
        load_for_eval(adapter_dir, base=str(bases[1][0]), device="cpu")
    assert _names_both(str(err.value), bases) and "--base" in str(err.value)
    model, _, info = load_for_eval(adapter_dir, base=str(bases[0][0]), device="cpu")  # the right base loads
    assert base_fingerprint(model) == bases[0][1] and hasattr(model, "peft_config")


def test_merge_into_base_refuses_another_base(adapter_dir, bases, tmp_path, capsys):
    from workbench.cli import main
    from workbench.merges.api import merge_adapters_into_base, merge_into_base

    for call in (lambda: merge_into_base(_other(), adapter_dir),
                 lambda: merge_adapters_into_base(_other(), [adapter_dir, adapter_dir], "linear")):
        with pytest.raises(MismatchError) as err:
            call()
        assert _names_both(str(err.value), bases)
    out = tmp_path / "merged"
    assert main(["merge", str(adapter_dir), "--into-base", "--base", str(bases[1][0]), "--out", str(out)]) == 2
    assert _names_both(capsys.readouterr().err, bases) and not out.exists()


def test_export_with_a_base_refuses_another_one(adapter_dir, bases, tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "compact"
    assert main(["export", "--compact", str(adapter_dir), "--out", str(out), "--base", str(bases[1][0])]) == 2
    assert _names_both(capsys.readouterr().err, bases) and not out.exists()
    assert main(["export", "--compact", str(adapter_dir), "--out", str(out), "--base", str(bases[0][0])]) == 0
    back = tmp_path / "peft"
    assert main(["export", "--peft", str(out), "--out", str(back), "--base", str(bases[1][0])]) == 2
    assert _names_both(capsys.readouterr().err, bases) and not back.exists()


def test_inspect_with_a_base_refuses_another_one(adapter_dir, bases, capsys):
    from workbench.cli import main

    assert main(["inspect", str(adapter_dir), "--base", str(bases[1][0])]) == 2
    assert _names_both(capsys.readouterr().err, bases)
    assert main(["inspect", str(adapter_dir), "--base", str(bases[0][0])]) == 0
    assert f"matches {bases[0][1]}" in capsys.readouterr().out


def test_adalora_loader_refuses_another_base(bases, tmp_path):
    from workbench.adapters.methods.adalora import load_adalora
    from workbench.models.tiny import tiny_llama

    spec = AdapterSpec(method="adalora", rank=4, alpha=8)
    path = extract(attach(tiny_llama(seed=0)[0], spec), spec).save(tmp_path / "ada")
    with pytest.raises(MismatchError) as err:
        load_adalora(_other(), path)
    assert _names_both(str(err.value), bases)
    assert load_adalora(tiny_llama(seed=0)[0], path) is not None
