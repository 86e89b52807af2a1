"""The process-level base-model cache: a second load is a copy, never the cached model itself."""

import os
import time

import pytest
import torch

from workbench.models import cache
from workbench.models.base import load_base


@pytest.fixture()
def tiny_dir(tmp_path, monkeypatch):
    from workbench.models.tiny import save_tiny_llama

    monkeypatch.setenv("WORKBENCH_BASE_CACHE_MB", "4096")  # the cache is off by default
    cache.clear()
    yield save_tiny_llama(tmp_path / "model")
    cache.clear()


def test_second_load_is_an_equal_independent_copy(tiny_dir):
    m1, t1 = load_base(str(tiny_dir))
    m2, t2 = load_base(str(tiny_dir))
    assert cache._entry and cache._entry["model"] is not m1  # kept, and never handed out
    assert m1 is not m2 and t1 is not t2
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    with torch.no_grad():  # what a merge or PEFT's in-place wrapping does to the model it got
        next(m1.parameters()).add_(1.0)
    m3, _ = load_base(str(tiny_dir))
    assert torch.equal(next(m3.parameters()), next(m2.parameters()))
    assert not m3.training


def test_tied_weights_stay_tied_in_the_copy(tiny_dir):
    model, _ = load_base(str(tiny_dir))
    tied = model.config.tie_word_embeddings
    same = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert same == tied


def test_rewritten_model_dir_is_loaded_afresh(tiny_dir):
    from workbench.models.tiny import save_tiny_llama

    m1, _ = load_base(str(tiny_dir))
    time.sleep(0.01)
    save_tiny_llama(tiny_dir, seed=1)  # other weights, same place
    m2, _ = load_base(str(tiny_dir))
    assert not torch.equal(next(m1.parameters()), next(m2.parameters()))


def test_cache_off(tiny_dir, monkeypatch):
    monkeypatch.setenv("WORKBENCH_BASE_CACHE_MB", "0")
    load_base(str(tiny_dir))
    assert cache._entry == {}
    monkeypatch.delenv("WORKBENCH_BASE_CACHE_MB")  # unset: off (measured not to pay on the embedded model)
    load_base(str(tiny_dir))
    assert cache._entry == {}
    monkeypatch.setenv("WORKBENCH_BASE_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="WORKBENCH_BASE_CACHE_MB"):
        load_base(str(tiny_dir))
