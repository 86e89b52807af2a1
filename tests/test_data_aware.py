"""Data-aware interference: known answers, the dense reference, random baselines, Σ collection, report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from workbench.adapters.factors import ModuleFactors
from workbench.analytics.data_aware import data_aware, dense_energies, module_energies, pair_energy
from workbench.analytics.data_moments import (
    InputMoments, collect_moments, load_moments, save_moments, task_moments, task_sequences,
)
from workbench.analytics.increments import increment
from workbench.errors import ConfigError, FileFormatError, MismatchError
from workbench.keys import file_key

FIELDS = ("energy", "own_energy", "inner", "energy_baseline", "inner_sq_baseline")


def mf(A, B, s=1.0) -> ModuleFactors:
    return ModuleFactors(torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64), s)


def energies(sigma, fi, fj):
    e = module_energies("m", sigma, {"i": fi, "j": fj})
    return pair_energy(e, 0, 1)


def test_hand_built_values_exact():
    # Σ = diag(4, 1, 0); ΔW_i = e1 e1ᵀ (reads coordinate 0), ΔW_j = e1 (e1 + e2)ᵀ
    sigma = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64))
    fi = mf([[1, 0, 0]], [[1], [0]])
    fj = mf([[2, 2, 0]], [[1], [0]], s=0.5)
    p = energies(sigma, fi, fj)
    assert p.own_energy == pytest.approx(4.0, rel=1e-14)             # 1 * 4 * 1
    assert p.energy == pytest.approx(5.0, rel=1e-14)                 # (1, 1) Σ (1, 1)ᵀ = 4 + 1
    assert p.energy_ratio == pytest.approx(5 / 4, rel=1e-14)
    assert p.overlap == pytest.approx(4 / math.sqrt(4 * 5), rel=1e-14)
    assert p.energy_ratio_baseline == pytest.approx((2 * 5 / 3) / 4, rel=1e-14)  # |ΔW_j|² trΣ / in / E_ii
    assert p.overlap_baseline == pytest.approx(math.sqrt(16 / (2 * 4 * 5)), rel=1e-14)  # |ΔW_iΣ|²/(out E_ii trΣ)


def test_update_orthogonal_to_task_inputs_scores_zero():
    g = torch.Generator().manual_seed(0)
    d, k = 30, 5
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    V, W = Q[:, :k], Q[:, k:]                                          # task i's input subspace and its complement
    X = torch.randn(200, k, generator=g, dtype=torch.float64) @ V.T   # inputs only in span(V)
    sigma = X.T @ X
    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)
    fi = ModuleFactors(rnd(4, k) @ V.T, rnd(12, 4), 2.0)                   # A_i reads span(V)
    fj = ModuleFactors(rnd(4, d - k) @ W.T, rnd(12, 4), 2.0)               # A_j's rows are orthogonal to it
    p = energies(sigma, fi, fj)
    assert p.own_energy > 1.0
    assert p.energy_ratio == pytest.approx(0.0, abs=1e-12)
    assert p.energy_ratio_baseline > 0.01                               # a random update would score clearly > 0
    assert p.overlap is None                                            # no energy: the cosine is undefined


def random_case(seed: int, out=24, d=40, r=4):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(60, d, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3.0, d, dtype=torch.float64)
    A = torch.randn(r, d, generator=g, dtype=torch.float64)

    def f(A_, s=0.7):
        return ModuleFactors(A_, torch.randn(out, A_.shape[0], generator=g, dtype=torch.float64), s)
    return X.T @ X, {"a": f(A), "b": f(A, 1.3), "c": f(torch.randn(r + 2, d, generator=g, dtype=torch.float64))}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_factorised_equals_dense(seed):
    sigma, fs = random_case(seed)
    fs["d"] = increment({"m": fs["b"]}, {"m": fs["c"]})["m"]          # rank 2r, different A's (merge-like)
    e = module_energies("m", sigma, fs)
    names = list(fs)
    for i in range(len(names)):
        for j in range(len(names)):
            if i == j:
                continue
            ours, dense = pair_energy(e, i, j), dense_energies(sigma, fs[names[i]], fs[names[j]])
            for k in FIELDS:
                assert getattr(ours, k) == pytest.approx(getattr(dense, k), rel=1e-6, abs=1e-9), (names[i], names[j], k)


def test_shared_a_chain_uses_one_block_and_matches_dense():
    # a chain's increment keeps A: the stacked A has one block, the numbers are the dense ones
    sigma, fs = random_case(3)
    later = ModuleFactors(fs["a"].A, fs["b"].B, fs["a"].scaling)    # same A and scaling, new B
    inc = increment({"m": later}, {"m": fs["a"]})["m"]
    assert torch.equal(inc.A, fs["a"].A)
    ours = energies(sigma, fs["a"], inc)
    dense = dense_energies(sigma, fs["a"], inc)
    for k in FIELDS:
        assert getattr(ours, k) == pytest.approx(getattr(dense, k), rel=1e-10)


def test_random_baselines_match_monte_carlo():
    """An isotropic update of j's norm: mean energy ratio and ratio-of-means overlap² vs the closed forms.

    Tolerance: 4 standard errors of the Monte Carlo mean (n = 20000), and the SE itself below 2%.
    """
    sigma, fs = random_case(4, out=8, d=12)
    fi, fj = fs["a"], fs["c"]
    p = energies(sigma, fi, fj)
    g = torch.Generator().manual_seed(5)
    n, norm_j = 20000, math.sqrt(dense_energies(sigma, fi, fj).energy_baseline * 12 / float(torch.trace(sigma)))
    U = torch.randn(n, 8, 12, generator=g, dtype=torch.float64)
    U = U / U.flatten(1).norm(dim=1)[:, None, None] * norm_j                        # uniform direction, j's norm
    energy = torch.einsum("nab,bc,nac->n", U, sigma, U)                             # tr(U Σ Uᵀ)
    Wi = fi.scaling * fi.B @ fi.A
    inner = torch.einsum("ab,bc,nac->n", Wi, sigma, U)                              # tr(ΔW_i Σ Uᵀ)
    ratio = energy / p.own_energy
    se = float(ratio.std()) / math.sqrt(n)
    assert se / p.energy_ratio_baseline < 0.02
    assert float(ratio.mean()) == pytest.approx(p.energy_ratio_baseline, abs=4 * se)
    inner_sq = inner ** 2
    se2 = float(inner_sq.std()) / math.sqrt(n)
    mc = float(inner_sq.mean()) / (p.own_energy * float(energy.mean()))
    assert se2 / float(inner_sq.mean()) < 0.02
    assert mc == pytest.approx(p.overlap_baseline ** 2, rel=4 * se2 / float(inner_sq.mean()) + 0.01)


def test_pair_totals_sum_modules_and_directions():
    sigma, fs = random_case(6)
    sigma2, fs2 = random_case(7)
    factors = {"x": {"m1": fs["a"], "m2": fs2["a"]}, "y": {"m1": fs["c"], "m2": fs2["c"]}}
    moments = {"tx": {"m1": sigma, "m2": sigma2}, "ty": {"m1": sigma2, "m2": sigma}}
    pairs = data_aware(factors, {"x": "tx", "y": "ty"}, moments)
    xy = next(p for p in pairs if (p.inputs_of, p.update) == ("x", "y"))
    yx = next(p for p in pairs if (p.inputs_of, p.update) == ("y", "x"))
    assert xy.later and not yx.later and xy.task == "tx"
    d1, d2 = dense_energies(sigma, fs["a"], fs["c"]), dense_energies(sigma2, fs2["a"], fs2["c"])
    assert xy.total.energy_ratio == pytest.approx((d1.energy + d2.energy) / (d1.own_energy + d2.own_energy), rel=1e-9)
    assert xy.total.overlap == pytest.approx((d1.inner + d2.inner) / math.sqrt(
        (d1.own_energy + d2.own_energy) * (d1.energy + d2.energy)), rel=1e-9)
    # y's row reads task ty's Σ: sigma2 for m1
    assert yx.modules["m1"].energy == pytest.approx(dense_energies(sigma2, fs["c"], fs["a"]).energy, rel=1e-9)


def test_module_only_the_later_update_adapts_counts_with_zero_own_energy():
    sigma, fs = random_case(9)
    factors = {"x": {"m1": fs["a"]}, "y": {"m1": fs["c"], "m2": fs["b"]}}
    (xy,) = data_aware(factors, {"x": "tx"}, {"tx": {"m1": sigma, "m2": sigma}})
    assert xy.modules["m2"].own_energy == 0 and xy.modules["m2"].energy_ratio is None
    d1, d2 = dense_energies(sigma, fs["a"], fs["c"]), dense_energies(sigma, fs["a"], fs["b"])
    assert xy.total.energy_ratio == pytest.approx((d1.energy + d2.energy) / d1.own_energy, rel=1e-9)


def test_missing_sigma_and_bad_shape_are_named():
    sigma, fs = random_case(8)
    factors = {"x": {"m1": fs["a"]}, "y": {"m1": fs["c"]}}
    with pytest.raises(MismatchError, match="task 'tx'.*m1"):
        data_aware(factors, {"x": "tx"}, {"tx": {}})
    with pytest.raises(MismatchError, match="Σ is"):
        data_aware(factors, {"x": "tx"}, {"tx": {"m1": sigma[:10, :10]}})


# --- Σ collection on the tiny model -------------------------------------------------------------------

MODULES = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"]


def by_hand(model, seqs, module):
    """Σ of ``module``'s input from a hand-written hook, one unpadded sequence at a time."""
    captured = []
    mod = dict(model.named_modules())[module]
    h = mod.register_forward_pre_hook(lambda _m, args: captured.append(args[0][0].to(torch.float64)))
    with torch.no_grad():
        for s in seqs:
            model(input_ids=torch.tensor([s]))
    h.remove()
    X = torch.cat(captured)
    return X.T @ X, X.shape[0]


def test_collected_sigma_equals_hand_computed(tiny_model):
    seqs = [[5, 9, 100, 7, 3], [11, 4], [8, 8, 8, 1000, 42, 17, 6]]    # unequal: batches hold padding
    sigma, n = collect_moments(tiny_model, seqs, MODULES, pad_id=2, batch_size=2)
    assert n == 14
    for module in (MODULES[0], MODULES[2]):
        ref, n_ref = by_hand(tiny_model, seqs, module)
        assert n_ref == n
        assert sigma[module].dtype == torch.float64
        assert torch.allclose(sigma[module], ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    assert torch.equal(sigma[MODULES[0]], sigma[MODULES[1]])             # q and k read the same tensor


def test_moments_file_round_trip_and_checks(tiny_model, tmp_path):
    sigma, n = collect_moments(tiny_model, [[5, 9, 100]], MODULES)
    m = InputMoments("safety", "llama-0123", sigma, n, 1, "ab" * 32)
    path = save_moments(tmp_path / "m.safetensors", m)
    back = load_moments(path)
    assert (back.task, back.base_fingerprint, back.n_tokens) == ("safety", "llama-0123", 3)
    assert back.prompts_hash == "ab" * 32
    assert set(back.sigma) == set(MODULES)
    assert torch.allclose(back.sigma[MODULES[1]].double(), sigma[MODULES[1]], rtol=1e-6)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert len(list(f.keys())) == 2                                   # q and k stored once
    from workbench.io.tensors import save_tensors
    save_tensors(tmp_path / "bad.safetensors", {"x": torch.zeros(2, 2)}, {"format": "workbench-moments/1"})
    with pytest.raises(FileFormatError, match="bad.safetensors.*'task'"):
        load_moments(tmp_path / "bad.safetensors")


def test_task_moments_cached_per_task_and_base(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    m1 = task_moments(tiny_model, tiny_tokenizer, "safety", MODULES, cache=tmp_path, limit=3, max_tokens=64)
    assert m1.path.is_file() and m1.n_sequences == 3 and m1.base_fingerprint in str(m1.path)
    seqs = task_sequences(tiny_tokenizer, "safety", limit=3, max_tokens=64)
    assert m1.n_tokens == sum(len(s) for s in seqs)
    import workbench.analytics.data_moments as dm

    monkeypatch.setattr(dm, "collect_moments", lambda *a, **k: pytest.fail("recollected despite the cache"))
    m2 = task_moments(tiny_model, tiny_tokenizer, "safety", MODULES[:2], cache=tmp_path, limit=3, max_tokens=64)
    assert m2.path == m1.path and torch.allclose(m2.sigma[MODULES[0]].double(), m1.sigma[MODULES[0]], rtol=1e-6)
    with pytest.raises(ConfigError, match="PEFT"):
        collect_moments(type("P", (), {"get_base_model": None})(), [[1]], MODULES)
    with pytest.raises(MismatchError, match="no module"):
        collect_moments(tiny_model, [[1, 2]], ["model.layers.9.mlp.up_proj"])


# --- the report -----------------------------------------------------------------------------------------

def test_build_report_data_section(tiny_model, tiny_tokenizer, tmp_path):
    from workbench.analytics import build_report
    from workbench.testing import TINY, llama_shapes, random_adapter

    shapes = llama_shapes(**TINY)
    adapters = [random_adapter(shapes, rank=4, seed=i, name=n) for i, n in enumerate(["s1", "s2"])]
    adapters[0].meta["task"], adapters[1].meta["task"] = "safety", "math"
    report = build_report(adapters, out_dir=tmp_path / "r", data=["safety", "math"], base=(tiny_model, tiny_tokenizer),
                          data_limit=2, moments_cache=tmp_path / "cache")
    d = report["data_aware"]
    assert d["rows"] == {"s1": "safety", "s2": "math"} and set(d["tasks"]) == {"safety", "math"}
    p = next(p for p in d["pairs"] if (p["inputs_of"], p["update"]) == ("s1", "s2"))
    assert p["later"] and p["n_modules"] == len(shapes) and d["matrices"]["energy_ratio"][0][1] == p["energy_ratio"]
    assert p["energy_ratio"] == pytest.approx(p["energy"] / p["own_energy"])
    assert sum(t["share"] for t in p["top_modules"]) <= 1 + 1e-12
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    assert written["data_aware"]["pairs"][0]["energy_ratio"] == d["pairs"][0]["energy_ratio"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Data-aware interference" in md and "s2 on s1 (safety inputs)" in md
    assert 'id="table-data_aware"' in (tmp_path / "r" / "report.html").read_text()
    with pytest.raises(ConfigError, match="no adapter records task 'code'"):
        build_report(adapters, out_dir=tmp_path / "r2", data=["code"], base=(tiny_model, tiny_tokenizer))
    with pytest.raises(ConfigError, match="unknown adapter 'zz'"):
        build_report(adapters, out_dir=tmp_path / "r2", data=["zz=code"], base=(tiny_model, tiny_tokenizer))


def test_cli_report_data(tmp_path, monkeypatch, capsys):
    from workbench.cli import main
    from workbench.models.tiny import save_tiny_llama
    from workbench.testing import TINY, llama_shapes, random_adapter

    base = save_tiny_llama(tmp_path / "base")
    dirs = []
    for i, task in enumerate(["safety", "code"]):
        a = random_adapter(llama_shapes(**TINY), rank=4, seed=i, name=task)
        a.meta.update(task=task, base=str(base))
        dirs.append(str(a.save(tmp_path / task)))
    out = tmp_path / "out"
    args = ["report", *dirs, "--data", "safety", "--data", "code", "--data-limit", "2", "--out", str(out)]
    monkeypatch.setattr("workbench.models.base.cache_dir", lambda: tmp_path / "cache")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "code on safety's safety inputs: energy ratio" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["data_aware"]["rows"] == {"safety": "safety", "code": "code"}
    assert list((tmp_path / "cache" / "moments").rglob("*.safetensors"))     # cached under the cache root
    assert main(["report", *dirs, "--data", "nosuch", "--out", str(out)]) == 2


# --- per-module attribution -----------------------------------------------------------------------------

def chain_pair(only: str | None = None):
    """An earlier adapter and a later one with the same A; the later B differs everywhere, or on ``only``."""
    from workbench.adapters.adapter import Adapter
    from workbench.testing import TINY, llama_shapes, random_adapter

    before = random_adapter(llama_shapes(**TINY), rank=4, seed=1, b_scale=0.5, name="before")
    other = random_adapter(llama_shapes(**TINY), rank=4, seed=2, b_scale=0.5)
    tensors = dict(before.tensors)
    for key, t in other.tensors.items():
        if key.endswith("lora_B.weight") and (only is None or key == file_key(only, "B")):
            tensors[key] = t
    return before, Adapter(tensors=tensors, config=before.config, meta={"name": "after"})


def heldout(n: int = 2) -> list[dict]:
    from workbench.data.registry import get_task

    return get_task("safety").heldout_pairs(limit=n)


def test_attribution_removing_everything_restores_the_earlier_nll(tiny_model, tiny_tokenizer, tmp_path):
    from workbench.adapters.live import load_onto
    from workbench.analytics.attribution import attribute_modules
    from workbench.evaluate.runner import Runner

    before, after = chain_pair()
    mods, pairs = before.modules(), heldout()
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    res = attribute_modules(tiny_model, tiny_tokenizer, before, after, {m: float(i) for i, m in enumerate(mods)}, pairs,
                    k=len(mods), n_random=1)
    assert res.nll_after != res.nll_before
    assert res.nll_top == res.nll_before and res.nll_random == [res.nll_before]   # exactly, not approximately
    assert res.recovered_top == 1.0
    assert all(torch.equal(v, state[k]) for k, v in tiny_model.state_dict().items())  # base restored bit for bit
    before.save(tmp_path / "before")                                                # the evaluation's own path
    nll = Runner(load_onto(tiny_model, before), tiny_tokenizer).response_nll(pairs)["nll"]
    assert nll == pytest.approx(res.nll_before, rel=1e-5)


def test_attribution_top_module_found_by_the_score(tiny_model, tiny_tokenizer):
    from workbench.analytics.attribution import attribute_modules

    target = "model.layers.0.mlp.down_proj"
    before, after = chain_pair(only=target)                                         # the update sits in one module
    scores = {m: (10.0 if m == target else 0.0) for m in before.modules()}
    res = attribute_modules(tiny_model, tiny_tokenizer, before, after, scores, heldout(), k=1, n_random=2, seed=3)
    assert res.top_modules == [target] and res.nll_top == res.nll_before
    for draw, nll in zip(res.random_modules, res.nll_random):
        assert nll == (res.nll_before if draw == [target] else res.nll_after)
    with pytest.raises(ConfigError, match="k must be"):
        attribute_modules(tiny_model, tiny_tokenizer, before, after, scores, heldout(), k=0)
