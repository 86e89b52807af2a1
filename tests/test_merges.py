"""Merge strategies: PEFT parity, invariants, reload under PEFT's loader, errors, API and CLI.

Random adapters on the tiny Llama (2 layers, hidden 64): every test runs in well under a second or two.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from workbench.adapters.adapter import Adapter, load_adapter
from workbench.adapters.factors import ModuleFactors
from workbench.errors import ConfigError, MismatchError, NonFiniteError, WorkbenchError
from workbench.keys import file_key
from workbench.merges import MERGES, MergeContext, merge, merge_adapters_into_base, merge_into_base, register_merge
from workbench.merges.primitives import module_order, prune_magnitude
from workbench.testing import TINY, llama_shapes, random_adapter

SHAPES = llama_shapes(**TINY)
PEFT_TYPES = {"concat": "cat", "linear": "linear", "ties": "ties", "dare_linear": "dare_linear",
              "dare_ties": "dare_ties", "magnitude_prune": "magnitude_prune"}
DENSITY = {"ties": 0.5, "dare_linear": 0.6, "dare_ties": 0.6, "magnitude_prune": 0.4}
IDS = torch.tensor([[1, 17, 400, 23, 9001, 5, 77, 3]])


@pytest.fixture(autouse=True)
def one_thread():
    # Threaded LAPACK on tiny matrices is slower by orders of magnitude on a busy 2-core machine
    # (a 128x64 SVD took 0.5 s with 2 threads, 1 ms with 1); these tests only use tiny tensors.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def adapters(n=3, rank=4, **kw) -> list[Adapter]:
    return [random_adapter(SHAPES, rank=rank, alpha=8 + 4 * i, seed=i, name=f"a{i}", **kw) for i in range(n)]


def patterned(seed: int, **kw) -> Adapter:
    """Rank 4 except q_proj (rank 2, alpha 6) and down_proj (rank 6): a rank_pattern/alpha_pattern adapter."""
    pattern = {"q_proj": 2, "down_proj": 6}
    a = random_adapter(SHAPES, rank=4, alpha=8, seed=seed, name=f"p{seed}", rank_pattern=pattern,
                       alpha_pattern={"q_proj": 6}, **kw)
    g = torch.Generator().manual_seed(100 + seed)
    for m, (out_f, in_f) in SHAPES.items():
        r = pattern.get(m.rsplit(".", 1)[-1])
        if r:
            a.tensors[file_key(m, "A")] = torch.randn(r, in_f, generator=g) / in_f ** 0.5
            a.tensors[file_key(m, "B")] = torch.randn(out_f, r, generator=g) * 0.02
    return a


def save_all(items, tmp_path) -> list[Path]:
    return [a.save(tmp_path / f"in{i}") for i, a in enumerate(items)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def weighted_sum_of_deltas(items, weights) -> dict[str, torch.Tensor]:
    fs = [a.factors() for a in items]
    return {m: sum(w * f[m].delta() for f, w in zip(fs, weights)) for m in fs[0]}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def peft_model(base, paths):
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel.from_pretrained(base, str(paths[0]), adapter_name="a0")
        for i, p in enumerate(paths[1:], start=1):
            pm.load_adapter(str(p), adapter_name=f"a{i}")
    return pm


def peft_merged_deltas(pm, name) -> dict[str, torch.Tensor]:
    out = {}
    for key, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and name in mod.lora_A:
            out[key.replace("base_model.model.", "", 1)] = mod.get_delta_weight(name)
    return out


def reseed_after_inject(pm, seed, monkeypatch):
    # add_weighted_adapter first injects the new adapter (nn.Linear init draws from the global RNG), then
    # draws DARE masks; reseeding right after injection puts PEFT's masks at the start of the seed's stream.
    lora_model = pm.base_model
    original = type(lora_model).inject_adapter

    def inject_then_seed(*args, **kwargs):
        result = original(lora_model, *args, **kwargs)
        torch.manual_seed(seed)
        return result

    monkeypatch.setattr(lora_model, "inject_adapter", inject_then_seed, raising=False)


# ---- parity with PEFT's add_weighted_adapter -------------------------------------------------------

@pytest.mark.parametrize("strategy", sorted(PEFT_TYPES))
def test_factor_space_equals_peft(strategy, tiny_model, tmp_path, monkeypatch):
    items = adapters(3)
    paths = save_all(items, tmp_path)
    weights = [0.7, -0.4, 1.3]
    params = {"density": DENSITY[strategy]} if strategy in DENSITY else {}
    if strategy.startswith("dare"):
        params["seed"] = 11
    pm = peft_model(tiny_model, paths)
    reseed_after_inject(pm, params.get("seed", 0), monkeypatch)
    pm.add_weighted_adapter(["a0", "a1", "a2"], weights, "m", combination_type=PEFT_TYPES[strategy],
                            density=params.get("density"))
    ref = peft_merged_deltas(pm, "m")
    ours = merge(paths, strategy, weights, **params).factors()
    assert set(ref) == set(ours)
    for m in ref:
        assert rel(ours[m].delta(), ref[m]) < 1e-6, m


def test_svd_equals_peft_svd(tiny_model, tmp_path):
    items = adapters(3)
    paths = save_all(items, tmp_path)
    pm = peft_model(tiny_model, paths)
    pm.add_weighted_adapter(["a0", "a1", "a2"], [0.5, 1.0, -0.8], "m", combination_type="svd", svd_rank=5)
    ref = peft_merged_deltas(pm, "m")
    ours = merge(paths, "svd", [0.5, 1.0, -0.8], rank=5).factors()
    for m in ref:
        assert ours[m].rank == 5
        assert rel(ours[m].delta(), ref[m]) < 1e-4, m


def test_svd_is_the_truncated_svd_of_the_sum():
    items = adapters(3)
    exact = weighted_sum_of_deltas(items, [1.0, 2.0, -1.0])
    merged = merge(items, "svd", [1.0, 2.0, -1.0], rank=3).factors()
    full = merge(items, "svd", [1.0, 2.0, -1.0], rank=12).factors()
    for m, d in exact.items():
        u, s, vh = torch.linalg.svd(d.double(), full_matrices=False)
        best = (u[:, :3] * s[:3]) @ vh[:3]
        assert rel(merged[m].delta().double(), best) < 1e-5
        assert rel(full[m].delta(), d) < 1e-5  # rank >= sum of ranks: exact


def test_magnitude_pruning_keeps_exactly_k_even_with_equal_magnitudes():
    t = torch.tensor([[1.0, -1.0, 1.0], [1.0, 2.0, -1.0]])
    pruned = prune_magnitude(t, 0.5)  # k = 3: the 2 and two of the five equal magnitudes
    assert int((pruned != 0).sum()) == 3 and pruned[1, 1] == 2.0
    mask = torch.zeros(6)
    mask[torch.topk(t.abs().reshape(-1), 3).indices] = 1  # PEFT's rule picks the same entries
    assert torch.equal(pruned, t * mask.view(2, 3))


def test_module_order_is_the_models_order(tiny_model):
    linears = [n for n, mod in tiny_model.named_modules() if isinstance(mod, torch.nn.Linear) and "layers" in n]
    assert module_order(sorted(linears)) == linears


# ---- invariants ------------------------------------------------------------------------------------

SINGLE = [("concat", {}), ("linear", {}), ("svd", {}), ("lori_disjoint", {}), ("task_arithmetic", {}),
          ("task_arithmetic", {"space": "delta"})] + [
    (s, {"density": 1.0, "space": space}) for s in DENSITY for space in ("factor", "delta")]


@pytest.mark.parametrize("strategy,params", SINGLE, ids=[f"{s}-{p.get('space', 'factor')}" for s, p in SINGLE])
def test_one_adapter_with_weight_one_is_itself(strategy, params):
    (a,) = adapters(1, use_rslora=True)
    merged = merge([a], strategy, [1.0], **params)
    for m, f in a.factors().items():
        assert rel(merged.factors()[m].delta(), f.delta()) < 1e-5, m
    if strategy in ("concat", "lori_disjoint"):
        assert all(torch.equal(merged.tensors[k], a.tensors[k]) for k in a.tensors if ".lora_A." in k)


def test_concat_is_the_sum_of_deltas_with_any_ranks_and_scalings():
    items = [patterned(0), random_adapter(SHAPES, rank=3, alpha=5, seed=7, use_rslora=True), adapters(1)[0]]
    weights = [0.5, -1.5, 2.0]
    merged = merge(items, "concat", weights)
    exact = weighted_sum_of_deltas(items, weights)
    for m, f in merged.factors().items():
        assert f.rank == sum(a.factors()[m].rank for a in items)
        assert rel(f.delta(), exact[m]) < 1e-6, m


def test_merge_into_base_equals_base_plus_adapter(tiny_model, tmp_path):
    (a,) = adapters(1, use_rslora=True)
    path = a.save(tmp_path / "a")
    merged_model = merge_into_base(copy.deepcopy(tiny_model), a)
    reference = peft_model(tiny_model, [path])
    assert (logits(merged_model) - logits(reference)).abs().max() < 1e-5


RELOAD = {
    "concat_rank_pattern": (lambda: [patterned(0), patterned(1), adapters(1)[0]], "concat", {}),
    "concat_rslora": (lambda: adapters(2, use_rslora=True), "concat", {}),
    "svd_rank_pattern": (lambda: [patterned(0), patterned(1)], "svd", {"rank": 3}),
    "linear_rank_pattern": (lambda: [patterned(0), patterned(1)], "linear", {}),  # PEFT issue #3737
    "ties_rslora": (lambda: adapters(2, use_rslora=True), "ties", {"density": 0.5}),
    "ties_delta_rank_pattern": (lambda: [patterned(0), patterned(1)], "ties", {"density": 0.5, "space": "delta"}),
}


@pytest.mark.parametrize("case", sorted(RELOAD))
def test_saved_merge_reloads_under_peft_with_the_same_outputs(case, tiny_model, tmp_path):
    from peft import PeftModel

    make, strategy, params = RELOAD[case]
    merged = merge(make(), strategy, [0.8, 1.2, 0.5][: len(make())], **params)
    path = merged.save(tmp_path / "merged")
    reloaded = PeftModel.from_pretrained(copy.deepcopy(tiny_model), str(path))
    reference = merge_into_base(copy.deepcopy(tiny_model), merged)
    assert (logits(reloaded) - logits(reference)).abs().max() < 1e-5
    assert rel(logits(reference), logits(tiny_model)) > 1e-4  # the merge changed something


def test_concat_reload_matches_the_sources_as_peft_reads_them(tiny_model, tmp_path):
    from peft import PeftModel

    items = [patterned(0), random_adapter(SHAPES, rank=3, alpha=5, seed=7, use_rslora=True)]
    paths = save_all(items, tmp_path)
    reference = copy.deepcopy(tiny_model)
    for p in paths:  # weights 1: merging each source with PEFT gives base + sum of deltas
        reference = PeftModel.from_pretrained(reference, str(p)).merge_and_unload()
    merged = merge(paths, "concat").save(tmp_path / "merged")
    reloaded = PeftModel.from_pretrained(tiny_model, str(merged))
    assert (logits(reloaded) - logits(reference)).abs().max() < 1e-5


# ---- delta space: known answers on hand-built matrices -------------------------------------------

D1 = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
D2 = torch.tensor([[2.0, 1.0], [-1.5, 0.5]])


def dense_as_factors(d: torch.Tensor) -> ModuleFactors:
    return ModuleFactors(torch.eye(2), d.clone(), 1.0)  # B @ I = d


def run_strategy(name, weights, **params):
    entry = MERGES.entry(name)
    ctx = MergeContext(module="m", sources=["x", "y"], generator=torch.Generator().manual_seed(0))
    return entry.obj([dense_as_factors(D1), dense_as_factors(D2)], weights, entry.params(**params), ctx)


def test_delta_ties_elects_signs_and_divides_by_agreeing_weights():
    out = run_strategy("ties", [2.0, 1.0], density=1.0, space="delta")
    assert torch.allclose(out, torch.tensor([[4 / 3, -2.0], [3.0, 0.5]]))


def test_delta_magnitude_prune_and_task_arithmetic():
    pruned = run_strategy("magnitude_prune", [1.0, 1.0], density=0.5, space="delta")
    assert torch.allclose(pruned, torch.tensor([[0.0, -2.0], [3.0, 0.0]]) + torch.tensor([[2.0, 0.0], [-1.5, 0.0]]))
    summed = run_strategy("dare_linear", [1.0, -1.0], density=1.0, space="delta")
    assert torch.allclose(summed, D1 - D2)


def test_delta_dare_keeps_the_expected_fraction_and_rescales():
    big = torch.ones(200, 200)
    entry = MERGES.entry("dare_linear")
    ctx = MergeContext(module="m", sources=["x"], generator=torch.Generator().manual_seed(0))
    out = entry.obj([ModuleFactors(torch.eye(200), big, 1.0)], [1.0], entry.params(density=0.25, space="delta"), ctx)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.25) < 0.02
    assert torch.allclose(out[kept], torch.full_like(out[kept], 4.0))


# ---- LoRI-S adapters --------------------------------------------------------------------------------

def lori_s_chain(n=3, overlap=False) -> list[Adapter]:
    """n adapters sharing A (seed 0), B masked to disjoint random supports (90% zeros overall)."""
    base = random_adapter(SHAPES, rank=4, seed=0)
    out = []
    for i in range(n):
        tensors = dict(base.tensors)
        for k in base.b_keys():
            owner = torch.randint(0, 10, base.tensors[k].shape, generator=torch.Generator().manual_seed(1234))
            mask = (owner == i) | (overlap and i == 1 and owner == 0)
            tensors[k] = torch.randn(base.tensors[k].shape, generator=torch.Generator().manual_seed(i)) * mask * 0.02
        out.append(Adapter(tensors=tensors, config=dict(base.config), meta={"name": f"lori{i}"}))
    return out


def test_lori_disjoint_is_the_exact_sum_with_the_shared_a():
    chain = lori_s_chain()
    merged = merge(chain, "lori_disjoint", [1.0, 0.5, 2.0])
    exact = weighted_sum_of_deltas(chain, [1.0, 0.5, 2.0])
    for m, f in merged.factors().items():
        assert torch.equal(f.A, chain[0].factors()[m].A)
        assert rel(f.delta(), exact[m]) < 1e-6


def test_lori_disjoint_refuses_overlap_and_different_a():
    with pytest.raises(MismatchError, match=r"overlap: first at module model\.layers\.0\.self_attn\.q_proj, \d+ overlapping"):
        merge(lori_s_chain(overlap=True), "lori_disjoint")
    chain = lori_s_chain(2)
    chain[1].tensors[file_key("model.layers.1.mlp.up_proj", "A")] = torch.randn(4, 64)
    with pytest.raises(MismatchError, match="model.layers.1.mlp.up_proj has a different lora_A"):
        merge(chain, "lori_disjoint")


@pytest.mark.parametrize("strategy", sorted(DENSITY))
def test_pruning_refuses_sparse_lori_s_b(strategy):
    with pytest.raises(ConfigError, match=r"9\d% of B's entries are exactly zero"):
        merge(lori_s_chain(2), strategy, density=0.5)


# ---- errors ----------------------------------------------------------------------------------------

def test_linear_refuses_unequal_ranks():
    items = [random_adapter(SHAPES, rank=4, seed=0), random_adapter(SHAPES, rank=2, seed=1)]
    with pytest.raises(ConfigError, match="needs equal ranks: module model.layers.0.self_attn.q_proj has rank 4"):
        merge(items, "linear")
    assert merge(items, "concat").factors()["model.layers.0.mlp.up_proj"].rank == 6


def test_different_bases_are_refused():
    items = adapters(2)
    items[0].meta["base_fingerprint"], items[1].meta["base_fingerprint"] = "llama-aaaa", "llama-bbbb"
    with pytest.raises(MismatchError, match="different base models"):
        merge(items, "concat")


def test_non_finite_inputs_and_weights_are_refused():
    items = adapters(2)
    items[1].tensors[file_key("model.layers.1.mlp.down_proj", "B")][0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="lora_B.weight' has NaN"):
        merge(items, "concat")
    with pytest.raises(NonFiniteError, match="weights"):
        merge(adapters(2), "concat", [1.0, math.inf])


def test_existing_output_path_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(WorkbenchError, match="already exists"):
        merge(adapters(2), "concat").save(out)


def test_inputs_no_strategy_can_merge():
    dora = adapters(2)
    dora[0].config["use_dora"] = True
    with pytest.raises(ConfigError, match="DoRA"):
        merge(dora, "concat")
    bias = adapters(2)
    bias[1].tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias"] = torch.zeros(64)
    with pytest.raises(ConfigError, match="bias key"):
        merge(bias, "concat")
    fewer = adapters(2)
    for k in [file_key("model.layers.1.mlp.up_proj", f) for f in "AB"]:
        del fewer[1].tensors[k]
    with pytest.raises(MismatchError, match="lacks module model.layers.1.mlp.up_proj"):
        merge(fewer, "concat")


def test_parameter_errors_name_the_field():
    with pytest.raises(ConfigError, match="unknown merge strategy 'tie'.*did you mean 'ties'"):
        merge(adapters(2), "tie")
    with pytest.raises(ConfigError, match="density: Field required"):
        merge(adapters(2), "ties")
    with pytest.raises(ConfigError, match="concat.*seed: unknown parameter"):
        merge(adapters(2), "concat", seed=1)
    with pytest.raises(ConfigError, match="rank applies only with space='delta'"):
        merge(adapters(2), "ties", density=0.5, rank=2)
    with pytest.raises(ConfigError, match="2 given for 3 adapters"):
        merge(adapters(3), "concat", [1.0, 2.0])


# ---- API: custom strategies and the record ----------------------------------------------------------

def test_custom_strategy_by_decorator_and_plain_callable():
    @register_merge("test_first_only")
    def first_only(factors, weights, params, ctx):
        return ModuleFactors(factors[0].A, factors[0].B * weights[0], factors[0].scaling)

    items = adapters(2)
    merged = merge(items, "test_first_only", [2.0, 1.0])
    for m, f in items[0].factors().items():
        assert rel(merged.factors()[m].delta(), 2.0 * f.delta()) < 1e-6

    def mean_delta(factors, weights, params, ctx):
        return sum(w * f.delta() for f, w in zip(factors, weights)) / len(factors)

    dense = merge(items, mean_delta, rank=8)  # 8 = sum of ranks: the compression is exact
    exact = weighted_sum_of_deltas(items, [1.0, 1.0])
    assert dense.meta["strategy"] == "mean_delta" and dense.meta["params"] == {"rank": 8}
    for m, f in dense.factors().items():
        assert f.rank == 8 and rel(f.delta(), exact[m] / 2) < 1e-5


def test_strategy_results_are_checked():
    def wrong_shape(factors, weights, params, ctx):
        return torch.zeros(3, 3)

    def not_finite(factors, weights, params, ctx):
        return factors[0].delta() * float("inf")

    with pytest.raises(WorkbenchError, match=r"returned shape \(3, 3\) at module model.layers.0.self_attn.q_proj"):
        merge(adapters(2), wrong_shape)
    with pytest.raises(NonFiniteError, match="'not_finite' produced NaN or infinite values"):
        merge(adapters(2), not_finite)


def test_merge_into_base_refuses_another_base(tiny_model):
    (a,) = adapters(1)
    a.meta["base_fingerprint"] = "llama-0000000000000000"
    with pytest.raises(MismatchError, match="trained on base llama-0000000000000000, this base is llama-"):
        merge_into_base(tiny_model, a)


def test_record_names_sources_hashes_strategy_and_params(tmp_path):
    paths = save_all(adapters(2), tmp_path)
    out = merge(paths, "dare_ties", [0.3, 0.7], density=0.5, seed=4).save(tmp_path / "merged")
    meta = load_adapter(out).meta
    assert meta["method"] == "merged" and meta["strategy"] == "dare_ties" and meta["weights"] == [0.3, 0.7]
    assert meta["params"] == {"rank": None, "space": "factor", "density": 0.5, "majority_sign_method": "total", "seed": 4}
    assert [s["path"] for s in meta["sources"]] == [str(p) for p in paths]
    assert all(len(s["weights_sha256"]) == 64 for s in meta["sources"])
    assert "base_fingerprint" in meta


# ---- CLI ---------------------------------------------------------------------------------------------

def test_cli_merges_into_an_adapter_and_refuses_existing_out(tmp_path, capsys):
    from workbench.cli import main

    paths = save_all(adapters(2), tmp_path)
    out = tmp_path / "merged"
    args = ["merge", *map(str, paths), "--strategy", "svd", "--weights", "1", "0.5", "--rank", "3", "--out", str(out)]
    assert main(args) == 0
    api = merge(paths, "svd", [1, 0.5], rank=3).factors()
    for m, f in load_adapter(out).factors().items():
        assert rel(f.delta(), api[m].delta()) < 1e-6
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["merge", str(paths[0]), "--into-base", "--out", str(tmp_path / "x")]) == 2


def test_cli_into_base_writes_a_model_transformers_loads(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    from workbench.cli import main
    from workbench.models.tiny import save_tiny_llama

    base_dir = save_tiny_llama(tmp_path / "base", seed=0)
    paths = save_all(adapters(2), tmp_path)
    out = tmp_path / "merged_model"
    assert main(["merge", *map(str, paths), "--strategy", "ties", "--density", "0.5", "--space", "delta",
                 "--into-base", "--base", str(base_dir), "--out", str(out)]) == 0
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval()
    reference, _ = merge_adapters_into_base(base, paths, "ties", density=0.5, space="delta")
    assert (logits(loaded) - logits(reference)).abs().max() < 1e-5
    record = json.loads((out / "workbench.json").read_text())
    assert record["strategy"] == "ties" and record["method"] == "merged_model" and record["base"] == str(base_dir)
    assert record["base_fingerprint"].startswith("llama-") and (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("strategy", ["concat", "linear", "task_arithmetic"])
def test_dora_identity_merge_reproduces_outputs(tmp_path, strategy):
    from peft import PeftModel

    from workbench.adapters.live import attach, extract
    from workbench.adapters.spec import AdapterSpec
    from workbench.merges.api import merge
    from workbench.models.tiny import tiny_llama

    spec = AdapterSpec(method="dora", rank=4, alpha=8)
    model, _ = tiny_llama()
    pm = attach(model, spec)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=5e-2)
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        pm(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    extract(pm, spec).save(tmp_path / "dora")
    merge([tmp_path / "dora"], strategy).save(tmp_path / "merged")
    with torch.no_grad():
        want = PeftModel.from_pretrained(tiny_llama()[0], str(tmp_path / "dora")).eval()(input_ids=ids).logits
        got = PeftModel.from_pretrained(tiny_llama()[0], str(tmp_path / "merged")).eval()(input_ids=ids).logits
    assert (want - got).abs().max().item() < 1e-5


def test_dora_merge_that_changes_the_update_is_refused(tmp_path):
    from workbench.merges.api import merge

    ad = random_adapter(rank=4, seed=0)
    ad.config["use_dora"] = True
    for m in ad.modules():
        ad.tensors[f"base_model.model.{m}.lora_magnitude_vector"] = torch.ones(ad.factors()[m].B.shape[0])
    with pytest.raises(ConfigError, match="DoRA"):
        merge([ad], "ties", density=0.5)
