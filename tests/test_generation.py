"""Batched generation and log-likelihood scoring on the tiny random Llama (fp32)."""

import pytest
import torch

from workbench.evaluate.generate import GenerationConfig, cut_at_stop, encode_prompt, generate, merged_adapter
from workbench.evaluate.loglik import continuation_logprobs, mean_nll, option_logprobs

PROMPTS = ["Hello there, how are", "The capital of France is", "1 2 3 4 5 6 7 8 9 10 11 12 13 14",
           "Q: what?", "A much longer prompt that keeps going for a while so that padding matters here"]


def _reference(model, tok, prompt, max_new):
    ids = torch.tensor([encode_prompt(tok, prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_batched_greedy_equals_unbatched(tiny_model, tiny_tokenizer):
    ours = generate(tiny_model, tiny_tokenizer, PROMPTS, GenerationConfig(max_new_tokens=12, batch_size=3))
    for prompt, text in zip(PROMPTS, ours):  # order restored after the length sort
        ref = _reference(tiny_model, tiny_tokenizer, prompt, 12)
        assert text == tiny_tokenizer.decode(ref, skip_special_tokens=True)


def test_stop_strings_cut_and_end_generation(tiny_model, tiny_tokenizer):
    full = generate(tiny_model, tiny_tokenizer, PROMPTS, GenerationConfig(max_new_tokens=16))
    stop = full[0][len(full[0]) // 3: len(full[0]) // 3 + 3]
    assert stop
    cut = generate(tiny_model, tiny_tokenizer, PROMPTS, GenerationConfig(max_new_tokens=16, stop=(stop,)))
    for f, c in zip(full, cut):
        assert c == cut_at_stop(f, (stop,)) and stop not in c
    assert len(cut[0]) < len(full[0])


def test_rows_finish_independently_on_eos(tiny_model, tiny_tokenizer):
    first = _reference(tiny_model, tiny_tokenizer, PROMPTS[1], 1)[0]
    tiny_model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, first]
    out = generate(tiny_model, tiny_tokenizer, PROMPTS, GenerationConfig(max_new_tokens=8))
    assert out[1] == ""  # its first token is now an end token
    refs = {i: _reference(tiny_model, tiny_tokenizer, PROMPTS[i], 8) for i in range(len(PROMPTS)) if i != 1}
    others = [i for i, ref in refs.items() if first not in ref]
    assert any(out[i] for i in others)
    for i in others:  # the rows still going are unaffected by a finished row leaving the batch
        assert out[i] == tiny_tokenizer.decode(refs[i], skip_special_tokens=True)


def test_sampling_is_seeded(tiny_model, tiny_tokenizer):
    cfg = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5)
    a = generate(tiny_model, tiny_tokenizer, PROMPTS, cfg, seed=1)
    assert a == generate(tiny_model, tiny_tokenizer, PROMPTS, cfg, seed=1)
    assert a != generate(tiny_model, tiny_tokenizer, PROMPTS, cfg, seed=2)


def _peft(model, seed=0):
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    g = torch.Generator().manual_seed(seed)
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.5
    return pm.eval()


def test_merged_adapter_gives_same_outputs_and_restores_weights(tiny_model, tiny_tokenizer):
    pm = _peft(tiny_model)
    before = {k: v.clone() for k, v in pm.state_dict().items()}
    unmerged = generate(pm, tiny_tokenizer, PROMPTS, GenerationConfig(max_new_tokens=10, merge_adapter=False))
    merged = generate(pm, tiny_tokenizer, PROMPTS, GenerationConfig(max_new_tokens=10, merge_adapter=True))
    assert merged == unmerged
    after = pm.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=1e-5, atol=1e-6)
    with merged_adapter(pm):
        assert any(getattr(m, "merged", False) for m in pm.modules())
    assert not any(getattr(m, "merged", False) for m in pm.modules())


def _direct_logprob(model, tok, context, continuation):
    ctx, cont = encode_prompt(tok, context), tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = model(ids).logits[0].log_softmax(-1)
    return sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def test_continuation_logprobs_equal_direct_computation(tiny_model, tiny_tokenizer):
    contexts = ["Question: is the sky blue?", "A", "Some much longer context that needs left padding in a batch"]
    conts = [" yes", " no no no", " answer2"]
    scored = continuation_logprobs(tiny_model, tiny_tokenizer, contexts, conts, batch_size=2)
    for (s, n), c, x in zip(scored, contexts, conts):
        assert s == pytest.approx(_direct_logprob(tiny_model, tiny_tokenizer, c, x), abs=1e-3)
        assert n == len(tiny_tokenizer(x, add_special_tokens=False)["input_ids"])


def test_option_scoring_picks_the_option_the_model_prefers(tiny_model, tiny_tokenizer):
    # Make the model love the tokens of " option2": a hook adds +8 to their logits everywhere.
    liked = tiny_tokenizer(" option2", add_special_tokens=False)["input_ids"]
    options = [[" option1", " option2"], [" option2", " option1"]]
    plain = option_logprobs(tiny_model, tiny_tokenizer, ["Pick:", "Choose now:"], options)

    def boost(_module, _inputs, logits):
        logits[..., liked] += 8.0
        return logits

    handle = tiny_model.lm_head.register_forward_hook(boost)
    try:
        scores = option_logprobs(tiny_model, tiny_tokenizer, ["Pick:", "Choose now:"], options)
    finally:
        handle.remove()
    assert scores[0][1] > scores[0][0] and scores[1][0] > scores[1][1]
    assert plain != scores


def test_mean_nll_is_token_weighted(tiny_model, tiny_tokenizer):
    contexts, responses = ["Say hi:", "Count:"], [" hi", " one two three four"]
    result = mean_nll(tiny_model, tiny_tokenizer, contexts, responses)
    direct = [_direct_logprob(tiny_model, tiny_tokenizer, c, r) for c, r in zip(contexts, responses)]
    assert result["tokens"] == sum(len(tiny_tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses)
    assert result["nll"] == pytest.approx(-sum(direct) / result["tokens"], abs=1e-4)
    assert result["nll"] > 0


def test_cli_eval_end_to_end_on_tiny_model(tmp_path, capsys):
    import json

    from peft import LoraConfig, get_peft_model

    from workbench.cli import main
    from workbench.models.tiny import save_tiny_llama, tiny_llama

    base_dir = save_tiny_llama(tmp_path / "base")
    model, _ = tiny_llama()
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    pm.save_pretrained(tmp_path / "run" / "adapter")  # a training output dir holds the adapter in adapter/
    out = tmp_path / "eval.json"
    rc = main(["eval", str(tmp_path / "run"), "--base", str(base_dir), "--task", "math", "--task", "nlu",
               "--limit", "2", "--max-new-tokens", "3", "--seeds", "0,1", "--nlu-mode", "loglik",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    math_result = report["tasks"]["math"]
    assert math_result["settings"]["seeds"] == [0, 1] and math_result["settings"]["generation"]["max_new_tokens"] == 3
    assert 0.0 <= math_result["metrics"]["accuracy"] <= 1.0 and math_result["metrics"]["nll"] > 0
    assert report["tasks"]["nlu"]["settings"]["nlu_mode"] == "loglik"
    assert len(report["tasks"]["nlu"]["details"]["per_seed"]) == 2
    assert "accuracy *" in capsys.readouterr().out
    assert main(["eval", "--base-only", str(tmp_path / "run"), "--task", "math"]) == 2
    assert main(["eval", "--base-only", "--base", str(base_dir), "--task", "nosuch"]) == 2


@pytest.mark.integration
def test_embedded_model_batched_matches_and_evaluates():
    from workbench.data.prompts import format_prompt
    from workbench.evaluate.api import evaluate_task
    from workbench.models.base import load_base

    model, tok = load_base("smollm2-135m-instruct")
    prompts = [format_prompt(tok, q) for q in ("What is 2 + 3?", "Name a colour of the sky on a clear day.")]
    ours = generate(model, tok, prompts, GenerationConfig(max_new_tokens=16))
    for p, text in zip(prompts, ours):
        assert text == tok.decode(_reference(model, tok, p, 16), skip_special_tokens=True).split("<|im_end|>")[0]
    result = evaluate_task(model, tok, "safety", limit=2, gen=GenerationConfig(max_new_tokens=24))
    assert 0.0 <= result["metrics"]["refusal_rate"] <= 1.0 and result["metrics"]["nll"] > 0
