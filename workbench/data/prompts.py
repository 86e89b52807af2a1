"""Prompt formatting and tokenization of (prompt, response) pairs for causal-LM fine-tuning.

Formatting: a tokenizer with a chat template (SmolLM2-Instruct, Llama-3-Instruct, ...) gets one user turn
and the generation prompt; no system prompt is added unless the template adds its own (SmolLM2's does).
Without a template (base models) the Alpaca template is used.

Tokenization: the loss is on the response only (prompt labels are -100), and the response ends with the
token that closes an assistant turn (``<|im_end|>``, ``<|eot_id|>``; EOS for the Alpaca format) so that
the model learns to stop.

Truncation to ``max_length``: the prompt is cut from the **left** (its end holds the question and the
generation prompt, which the response depends on) and the response from the **right** (losing its end
token: the model is not taught to stop where it was merely cut). The prompt keeps at least half of the
window when it needs it; the response gets the rest.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from workbench.errors import ConfigError

IGNORE_INDEX = -100
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                "{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
_PROBE = "\u2063WB-RESPONSE\u2063"  # a marker no template contains, to find what follows a response


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, instruction: str, input: str = "") -> str:
    """The text a model sees before its answer.

    Args:
        tokenizer: a transformers tokenizer (or None for the Alpaca template).
        instruction: the request.
        input: optional context; chat models get it after a blank line, Alpaca in ``### Input:``.

    Returns:
        The chat-templated user turn with the generation prompt, or the Alpaca prompt.
    """
    input = (input or "").strip()
    if tokenizer is not None and has_chat_template(tokenizer):
        content = f"{instruction}\n\n{input}" if input else instruction
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    return ALPACA_INPUT.format(instruction=instruction, input=input) if input else ALPACA.format(instruction=instruction)


def end_of_response_id(tokenizer) -> int:
    """The token that ends an assistant turn: the first special token the chat template writes after the
    response, or EOS without a template.

    Raises:
        ConfigError: the tokenizer has neither (nothing would teach the model to stop).
    """
    if has_chat_template(tokenizer):
        messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _PROBE}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        tail = text.split(_PROBE, 1)[1] if _PROBE in text else ""
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
            if token_id in special:
                return int(token_id)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no EOS token and no chat template")
    return int(tokenizer.eos_token_id)


def prompt_ids(tokenizer, prompt_text: str) -> list[int]:
    """Token ids of a prompt, with BOS prepended when the tokenizer normally adds one and the text lacks it."""
    ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    # Chat templates write BOS themselves (Llama-3); Alpaca prompts rely on the tokenizer's own default.
    adds_bos = bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
    return [bos] + ids if adds_bos and ids[:1] != [bos] else ids


def fit_lengths(n_prompt: int, n_response: int, max_length: int) -> tuple[int, int]:
    """How many prompt and response tokens to keep in ``max_length`` (see the module docstring)."""
    if n_prompt + n_response <= max_length:
        return n_prompt, n_response
    keep_prompt = max(max_length - n_response, min(n_prompt, max_length // 2))
    return keep_prompt, max_length - keep_prompt


def tokenize_pair(tokenizer, prompt_text: str, response: str, max_length: int,
                  end_id: int | None = None) -> dict[str, list[int]]:
    """Token ids and labels for one formatted prompt and its response.

    Args:
        tokenizer: the model's tokenizer.
        prompt_text: the formatted prompt (:func:`format_prompt`).
        response: the answer text; the end-of-turn token is appended.
        max_length: the most tokens to return (>= 2).
        end_id: the end token (default :func:`end_of_response_id`; pass it to skip recomputing).

    Returns:
        ``{"input_ids": [...], "labels": [...]}`` of equal length; labels are -100 on prompt tokens.

    Raises:
        ConfigError: ``max_length`` below 2.
    """
    if not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length must be an integer >= 2, got {max_length!r}")
    end_id = end_of_response_id(tokenizer) if end_id is None else end_id
    p_ids = prompt_ids(tokenizer, prompt_text)
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [end_id]
    n_prompt, n_response = fit_lengths(len(p_ids), len(r_ids), max_length)
    p_ids, r_ids = p_ids[len(p_ids) - n_prompt:], r_ids[:n_response]
    return {"input_ids": p_ids + r_ids, "labels": [IGNORE_INDEX] * len(p_ids) + list(r_ids)}


def tokenize_records(tokenizer, records: Iterable[Mapping], max_length: int) -> list[dict[str, list[int]]]:
    """Format and tokenize ``{"prompt", "response"}`` records (see :func:`tokenize_pair`).

    Raises:
        ConfigError: a record without ``prompt``/``response`` text, or a bad ``max_length``.
    """
    end_id = end_of_response_id(tokenizer)
    out = []
    for index, record in enumerate(records):
        prompt, response = record.get("prompt"), record.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise ConfigError(f"record {index}: needs 'prompt' and 'response' strings")
        out.append(tokenize_pair(tokenizer, format_prompt(tokenizer, prompt), response, max_length, end_id))
    return out
