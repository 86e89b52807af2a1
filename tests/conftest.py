import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_base_eval_index(tmp_path_factory):
    """No test reads or writes the user's ~/.cache base-evaluation index, and every run evaluates its base
    model as before (workbench/stages/reuse.py); tests/test_reuse.py turns reuse on with its own index.
    Session scope so that module-scoped fixtures running pipelines see it too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_BASE_EVAL_INDEX", str(tmp_path_factory.mktemp("cache") / "base-evals.json"))
        mp.setenv("WORKBENCH_REUSE_BASE_EVAL", "0")
        yield


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from workbench.models.tiny import embedded_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(str(embedded_tokenizer_dir()))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture()
def tiny_model():
    """A fresh tiny random Llama (seed 0) for each test: tests may wrap or train it."""
    import torch
    from transformers import LlamaForCausalLM

    from workbench.models.tiny import tiny_llama_config

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


def pytest_configure(config):
    # Unit tests use tiny models: one thread avoids oversubscription on small CPUs (2 threads made small
    # matmuls up to 24x slower on a loaded 2-core machine); subprocess tests set their own.
    import torch

    torch.set_num_threads(1)
