"""What every registered method owns (issue 14, "a method is one file"): its options (validated without
torch), its trainable-parameter count (``inspect`` equals ``requires_grad`` after attach), its handling of
an ``embed_tokens`` target, its base (qlora brings a 4-bit one), and a registry that imports no torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from workbench.adapters.live import attach, extract
from workbench.adapters.registry import METHODS, get_method, load_builtin_methods, method_options
from workbench.adapters.spec import AdapterSpec
from workbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(rank=4, alpha=8)
DROPPED = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj"]
OPTIONS = {"lora_plus": {"lr_ratio": 4}, "adalora": {"target_r": 2}, "longlora": {"group_size": 8},
           "lora_drop": {"dropped": DROPPED}}
load_builtin_methods()
ALL = METHODS.names()


def _model(quantized_dir=None):
    if quantized_dir is not None:
        from workbench.models.base import BaseSpec, load_base

        return load_base(BaseSpec(name=str(quantized_dir), quantize="nf4"), with_tokenizer=False)[0]
    from transformers import LlamaForCausalLM

    from workbench.models.tiny import tiny_llama_config

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _mask(pm, density=0.3):
    from workbench.adapters.method import lora_layers
    from workbench.keys import file_key

    g = torch.Generator().manual_seed(0)
    return {file_key(m, "B"): torch.rand(l.lora_B["default"].weight.shape, generator=g) < density
            for m, l in lora_layers(pm).items()}


# ---- torch-free registry and method modules --------------------------------------------------------

def test_registry_and_every_method_module_import_without_torch():
    code = ("import workbench.adapters.registry as r; r.load_builtin_methods(); import sys; "
            "assert len(r.METHODS.names()) >= 10, r.METHODS.names(); "
            "r.method_options('lora_plus', {'lr_ratio': 2}); "
            "heavy = [m for m in ('torch', 'peft', 'transformers', 'bitsandbytes') if m in sys.modules]; "
            "assert not heavy, heavy")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_methods_are_found_by_scanning_the_package():
    files = {p.stem for p in (ROOT / "workbench" / "adapters" / "methods").glob("*.py") if not p.stem.startswith("_")}
    assert files <= set(ALL)
    assert "BUILTIN" not in (ROOT / "workbench" / "adapters" / "methods" / "__init__.py").read_text()


def test_adapters_import_nothing_above_them():
    above = ("workbench.train", "workbench.stages", "workbench.pipeline", "workbench.evaluate",
             "workbench.commands", "workbench.graph", "workbench.merges", "workbench.analytics")
    bad = []
    for path in (ROOT / "workbench" / "adapters").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.name}: {n}" for n in names if n.startswith(above)]
    assert not bad, bad


# ---- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ALL)
def test_every_method_refuses_unknown_options(method):
    with pytest.raises(ValidationError) as err:
        method_options(method, {"no_such_option": 1})
    (e,) = err.value.errors()
    assert e["loc"] == ("no_such_option",) and e["type"] == "extra_forbidden"


def test_option_values_are_checked_with_the_field_named():
    assert method_options("lora_plus", {}).lr_ratio == 16.0
    with pytest.raises(ValidationError) as err:
        method_options("lora_plus", {"lr_ratio": 0})
    assert err.value.errors()[0]["loc"] == ("lr_ratio",)
    with pytest.raises(ValidationError, match="valid number"):
        method_options("lora_plus", {"lr_ratio": "16"})  # a string from YAML is not silently a number
    with pytest.raises(ValidationError) as err:
        method_options("adalora", {"target_r": 9, "beta1": 1.5}, rank=8)
    assert [e["loc"] for e in err.value.errors()] == [("target_r",), ("beta1",)]
    assert method_options("adalora", {"target_r": 9}).target_r == 9  # rank unknown: not bounded
    with pytest.raises(ConfigError, match="unknown adapter method"):
        method_options("lora_pluss", {})


def test_bad_options_fail_at_attach_and_in_the_cli_before_any_weight(tiny_model, tmp_path, capsys):
    from workbench.cli import main

    with pytest.raises(ConfigError, match=r"^options\.group_ratio: .*greater than 0"):
        attach(tiny_model, AdapterSpec(method="longlora", options={"group_ratio": 0}, **SPEC))
    with pytest.raises(ConfigError, match=r"options\.lr_ratio: Extra inputs .*method 'lora' takes: none"):
        attach(tiny_model, AdapterSpec(method="lora", options={"lr_ratio": 4}, **SPEC))
    # --model points nowhere: the option error must come first
    code = main(["train", "--task", "math", "--method", "lora_drop", "--option", "threshold=2",
                 "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "options.threshold: Input should be less than or equal to 1" in err, err


# ---- trainable parameter counts ------------------------------------------------------------------

@pytest.fixture(scope="module")
def nf4_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("nf4") / "tiny")


@pytest.mark.parametrize("method", ALL)
def test_inspect_counts_what_requires_grad_after_attach(method, nf4_dir, tmp_path):
    from workbench.adapters.adapter import load_adapter
    from workbench.adapters.inspect import describe_adapter
    from workbench.adapters.registry import loadable_peft_types

    spec = AdapterSpec(method=method, options=OPTIONS.get(method, {}), **SPEC)
    model = _model(nf4_dir if method == "qlora" else None)
    mask = None
    if get_method(method).uses_mask:
        mask = _mask(attach(_model(), AdapterSpec(method="lori_d", **SPEC)))
    pm = attach(model, spec, mask=mask)
    live = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    if mask is not None:
        assert live == sum(int(m.sum()) for m in mask.values())
    extract(pm, spec).save(tmp_path / "ad")
    info = describe_adapter(load_adapter(tmp_path / "ad", peft_types=loadable_peft_types()))
    assert info["trainable"] == live, (method, info["trainable"], live)


# ---- embed_tokens among the targets --------------------------------------------------------------

EMBED = dict(target_modules=("q_proj", "embed_tokens"), a_seed=3, **SPEC)
# PEFT notes that the tied embedding is adapted; these tests look at the LoRA factors only
tied_warning = pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")


def _embedding(pm):
    from workbench.adapters.method import embedding_layers

    (layer,) = embedding_layers(pm).values()
    return layer.lora_embedding_A["default"], layer.lora_embedding_B["default"]


@tied_warning
@pytest.mark.parametrize("method", ["lora_fa", "lori_d", "lora"])
def test_embedding_a_is_seeded_and_frozen_like_every_a(method, tiny_model):
    from workbench.adapters.init import seeded_a

    pm = attach(tiny_model, AdapterSpec(method=method, **EMBED))
    a, b = _embedding(pm)
    assert torch.equal(a, seeded_a(3, "model.embed_tokens", *a.shape))
    assert torch.count_nonzero(b) == 0 and b.requires_grad
    assert a.requires_grad == get_method(method).train_a


@tied_warning
def test_lora_plus_puts_the_embedding_a_in_the_slow_group(tiny_model):
    spec = AdapterSpec(method="lora_plus", options={"lr_ratio": 8}, **EMBED)
    pm = attach(tiny_model, spec)
    a, b = _embedding(pm)
    groups = {g["lr"]: {id(p) for p in g["params"]} for g in get_method("lora_plus").param_groups(pm, spec, 1.0, 0.0)}
    assert id(a) in groups[1.0 / 8] and id(b) in groups[1.0]


@tied_warning
def test_lori_s_refuses_an_embedding_target_no_mask_covers(tiny_model):
    pm = attach(_model(), AdapterSpec(method="lori_d", **EMBED))
    with pytest.raises(ConfigError, match="model.embed_tokens is an embedding"):
        attach(tiny_model, AdapterSpec(method="lori_s", **EMBED), mask=_mask(pm))


@tied_warning
def test_continuing_restores_the_embedding_factors(tiny_model):
    spec = AdapterSpec(method="lori_d", **EMBED)
    first = attach(_model(), spec)
    with torch.no_grad():
        _embedding(first)[1].normal_()
    earlier = extract(first, spec)
    a, b = _embedding(attach(tiny_model, spec, init=earlier))
    assert torch.equal(b, _embedding(first)[1]) and torch.equal(a, _embedding(first)[0])


# ---- qlora brings its own 4-bit base --------------------------------------------------------------

def test_qlora_resolves_its_base_to_nf4_and_refuses_an_explicit_full_precision_one():
    from workbench.models.base import BaseSpec

    qlora = get_method("qlora")
    assert qlora.resolve_base(BaseSpec("m")).quantize == "nf4"
    assert qlora.resolve_base(BaseSpec("m", quantize="nf4")).quantize == "nf4"
    with pytest.raises(ConfigError, match="base.quantize: 'none' conflicts with method 'qlora'.*4-bit"):
        qlora.resolve_base(BaseSpec("m", quantize="none"))
    assert get_method("lora").resolve_base(BaseSpec("m")).quantize is None


def test_cli_train_qlora_needs_no_other_flag(tiny_dir, tmp_path, capsys):
    from workbench.adapters.adapter import load_adapter
    from workbench.cli import main

    out = tmp_path / "X"
    small = ["--model", str(tiny_dir), "--limit", "4", "--batch-size", "2", "--max-length", "64"]
    assert main(["train", "--method", "qlora", "--task", "math", "--steps", "3", "--out", str(out), *small]) == 0
    assert load_adapter(out).method == "qlora"
    assert main(["train", "--method", "qlora", "--task", "math", "--steps", "3", "--quantize", "none",
                 "--out", str(tmp_path / "Y"), *small]) == 2
    assert "conflicts with method 'qlora'" in capsys.readouterr().err and not (tmp_path / "Y").exists()


def test_pipeline_stage_with_qlora_gets_a_4bit_base(tiny_dir, tmp_path, monkeypatch):
    import workbench.stages.train as stage_train
    from workbench.stages.run import run

    loaded = []
    real = stage_train.load_base
    monkeypatch.setattr(stage_train, "load_base", lambda spec: loaded.append(spec.quantize) or real(spec))
    pipe = tmp_path / "q.yaml"
    pipe.write_text(f"name: q\nbase: {{model: {tiny_dir}}}\n"
                    "defaults: {steps: 2, batch_size: 2, max_length: 64, max_samples: 4, rank: 4, alpha: 8}\n"
                    "stages:\n  q: {kind: train, task: math, method: qlora}\n")
    results = run(str(pipe), tmp_path / "run", progress=False)
    assert loaded == ["nf4"] and results["q"].artifacts["adapter"]
