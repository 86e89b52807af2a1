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

Templates (``TEMPLATES``): all of the above is the ``workbench`` template, the default. ``lori_official``
reproduces the official LoRI code byte for byte (``workbench.data.lori_official``): its own prompt texts
per task, no BOS, EOS appended to the response, its truncation rule. :func:`format_example` builds one
record's prompt and response under either template; tasks built with ``template="lori_official"`` give
records carrying ``model_input`` and ``template``, which :func:`tokenize_records` honours.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from workbench.data import lori_official as lori
from workbench.errors import ConfigError, unknown_name

IGNORE_INDEX = -100
DEFAULT_TEMPLATE = "workbench"
TEMPLATES = ("workbench", "lori_official")
# The workbench's HumanEval prompt for chat models; the official harness sends the raw prompt instead.
CODE_INSTRUCTION = "Complete the following Python function. Reply with the full function in a Python code block."
_NO_INPUT = ("<noinput>", "<no input>", "noinput")
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
                  end_id: int | None = None, template: str = DEFAULT_TEMPLATE) -> dict[str, list[int]]:
    """Token ids and labels for one formatted prompt and its response.

    Args:
        tokenizer: the model's tokenizer.
        prompt_text: the formatted prompt (:func:`format_prompt`, or a ``model_input``).
        response: the answer text; the end-of-turn token is appended.
        max_length: the most tokens to return (>= 2).
        end_id: the end token (default :func:`end_of_response_id`; pass it to skip recomputing).
        template: ``workbench`` (BOS as the tokenizer adds it, end-of-turn token, prompt cut from the left)
            or ``lori_official`` (no BOS, EOS, prompt cut from the right: ``workbench.data.lori_official``).

    Returns:
        ``{"input_ids": [...], "labels": [...]}`` of equal length; labels are -100 on prompt tokens.

    Raises:
        ConfigError: ``max_length`` below 2, an unknown template, or (``lori_official``) no EOS token.
    """
    if not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length must be an integer >= 2, got {max_length!r}")
    check_template(template)
    if template == "lori_official":
        return _tokenize_official(tokenizer, prompt_text, response, max_length)
    end_id = end_of_response_id(tokenizer) if end_id is None else end_id
    p_ids = prompt_ids(tokenizer, prompt_text)
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [end_id]
    n_prompt, n_response = fit_lengths(len(p_ids), len(r_ids), max_length)
    p_ids, r_ids = p_ids[len(p_ids) - n_prompt:], r_ids[:n_response]
    return {"input_ids": p_ids + r_ids, "labels": [IGNORE_INDEX] * len(p_ids) + list(r_ids)}


def _tokenize_official(tokenizer, prompt_text: str, response: str, max_length: int) -> dict[str, list[int]]:
    if tokenizer.eos_token_id is None:
        name = getattr(tokenizer, "name_or_path", "")
        raise ConfigError(f"tokenizer {name!r} has no EOS token (the lori_official template appends it)")
    p_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [int(tokenizer.eos_token_id)]
    n_prompt, n_response = lori.fit_official(len(p_ids), len(r_ids), max_length)
    p_ids, r_ids = p_ids[:n_prompt], r_ids[:n_response]
    return {"input_ids": p_ids + r_ids, "labels": [IGNORE_INDEX] * len(p_ids) + list(r_ids)}


def tokenize_records(tokenizer, records: Iterable[Mapping], max_length: int) -> list[dict[str, list[int]]]:
    """Format and tokenize ``{"prompt", "response"}`` records (see :func:`tokenize_pair`).

    A record with ``template`` and ``model_input`` (a task built with ``template="lori_official"``) is
    already formatted: its ``model_input`` is the prompt text, tokenized under that template's rules.

    Raises:
        ConfigError: a record without ``prompt``/``response`` text, an unknown template, a bad ``max_length``.
    """
    end_id = None
    out = []
    for index, record in enumerate(records):
        prompt, response = record.get("prompt"), record.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise ConfigError(f"record {index}: needs 'prompt' and 'response' strings")
        template = record.get("template", DEFAULT_TEMPLATE)
        if template != DEFAULT_TEMPLATE:
            text = record.get("model_input")
            if not isinstance(text, str):
                raise ConfigError(f"record {index}: template '{template}' needs a 'model_input' string")
            out.append(tokenize_pair(tokenizer, text, response, max_length, template=template))
            continue
        end_id = end_of_response_id(tokenizer) if end_id is None else end_id
        out.append(tokenize_pair(tokenizer, format_prompt(tokenizer, prompt), response, max_length, end_id))
    return out


def check_template(name: str) -> str:
    """Return ``name`` if it is a prompt template.

    Raises:
        ConfigError: unknown template (with the valid names and a did-you-mean).
    """
    if name not in TEMPLATES:
        raise unknown_name("prompt template", name, TEMPLATES)
    return name


def _no_input(text) -> str:
    # Self-instruct data (alpaca-libre) writes "<noinput>" where Alpaca writes "": both mean no input.
    text = "" if text is None else str(text)
    return "" if text.strip().lower() in _NO_INPUT else text


def format_example(record: Mapping, kind: str, template: str = DEFAULT_TEMPLATE, use: str = "train",
                   tokenizer=None) -> dict:
    """One source record's prompt text and target under a prompt template.

    Args:
        record: a source record: Alpaca schema (``instruction``, optional ``input``, ``output``) for the
            safety, code and NLU training files and the NLU test files; GSM8K (``question``, ``answer``);
            a safety evaluation prompt (``instruction``: HEx-PHI and the safety-eval sets); HumanEval
            (``prompt``) for code evaluation.
        kind: the task kind (``safety``, ``math``, ``code``, ``nlu``).
        template: ``workbench`` (the default: the chat template or Alpaca via :func:`format_prompt`, BOS,
            the input joined to the instruction) or ``lori_official``.
        use: ``train`` (training pairs) or ``eval`` (evaluation prompts).
        tokenizer: needed by ``workbench`` (chat template); unused by ``lori_official``.

    Returns:
        ``{"prompt": text sent to the model, "response": target or None, "add_bos": bool}``; ``add_bos``
        says whether the tokenizer's BOS goes in front (``lori_official``: only for HumanEval, whose
        official harness tokenizes with the tokenizer's defaults).

    Raises:
        ConfigError: unknown template, kind or use.
    """
    check_template(template)
    if use not in ("train", "eval"):
        raise ConfigError(f"format_example: use must be 'train' or 'eval', got {use!r}")
    if kind not in ("safety", "math", "code", "nlu"):
        raise unknown_name("task kind for a prompt template", kind, ("safety", "math", "code", "nlu"))
    if template == "lori_official":
        return _format_official(record, kind, use)
    return _format_workbench(record, kind, use, tokenizer)


def _format_official(record: Mapping, kind: str, use: str) -> dict:
    if kind == "math":
        answer = record.get("answer")
        return {"prompt": lori.gsm8k_prompt(record["question"]),
                "response": None if answer is None else lori.gsm8k_target(answer), "add_bos": False}
    if use == "eval" and kind == "code":
        return {"prompt": lori.humaneval_prompt(record["prompt"]), "response": None, "add_bos": True}
    if use == "eval" and kind == "safety":
        return {"prompt": lori.hexphi_prompt(record["instruction"]), "response": None, "add_bos": False}
    if use == "eval":  # nlu
        return {"prompt": lori.nlu_eval_prompt(record["instruction"]), "response": record.get("output"),
                "add_bos": False}
    return {"prompt": lori.alpaca_prompt(record["instruction"], _no_input(record.get("input"))),
            "response": record.get("output"), "add_bos": False}


def _format_workbench(record: Mapping, kind: str, use: str, tokenizer) -> dict:
    from workbench.data.selection import join_instruction

    if kind == "math":
        return {"prompt": format_prompt(tokenizer, record["question"]), "response": record.get("answer"),
                "add_bos": True}
    if use == "eval" and kind == "code":
        return {"prompt": format_prompt(tokenizer, CODE_INSTRUCTION, record["prompt"]), "response": None,
                "add_bos": True}
    request = join_instruction(record["instruction"], str(record.get("input") or ""))
    return {"prompt": format_prompt(tokenizer, request), "response": record.get("output"), "add_bos": True}
