"""Log-likelihood scoring: continuation log-probs (multiple-choice options) and held-out response NLL.

Rows are left-padded so every continuation ends at the last position; the model is asked only for the
logits of the last ``max continuation + 1`` positions (``logits_to_keep``), which keeps the (B, T, V)
logits tensor small even with a 128k vocabulary.
"""

from __future__ import annotations

import math

import torch

from workbench.evaluate import shard
from workbench.evaluate.generate import left_pad, encode_prompt, merged_adapter


@torch.no_grad()
def _score_batch(model, tokenizer, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
    """Summed log-prob of each continuation given its context, for one batch of id pairs."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids, attention = left_pad([c + x for c, x in pairs], pad_id, device)  # (B, T)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    keep = max(len(x) for _, x in pairs) + 1
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=False,
                   logits_to_keep=keep).logits  # (B, keep, V)
    scores = []
    for row, (_, cont) in enumerate(pairs):
        n = len(cont)
        # logits at position t predict token t+1: the continuation's n tokens use the n positions before the end
        step = logits[row, keep - 1 - n:keep - 1].float().log_softmax(-1)  # (n, V)
        target = input_ids[row, -n:]
        scores.append(step.gather(-1, target.unsqueeze(-1)).sum().item())
    return scores


def continuation_logprobs(model, tokenizer, contexts: list[str], continuations: list[str],
                          batch_size: int = 8, merge: bool = True, add_bos: bool = True) -> list[tuple[float, int]]:
    """Log p(continuation | context) for each pair.

    The context and the continuation are tokenized apart and concatenated (lm-evaluation-harness style),
    so the continuation's tokens are the same whatever the context ends with.

    Args:
        model: a causal LM (transformers or PEFT), in eval mode.
        tokenizer: its tokenizer.
        contexts: prompt strings (special tokens added as :func:`encode_prompt` does).
        continuations: the strings to score, one per context.
        batch_size: pairs per forward pass.
        merge: merge a PEFT adapter for the duration.
        add_bos: contexts get BOS as :func:`encode_prompt` adds it (False: none, the official LoRI rule).

    Returns:
        ``(summed log-prob, number of continuation tokens)`` per pair, in input order.

    Raises:
        ValueError: the lists differ in length, or a continuation is empty after tokenization.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    pairs = [(encode_prompt(tokenizer, c, add_bos), tokenizer(x, add_special_tokens=False)["input_ids"])
             for c, x in zip(contexts, continuations)]
    for i, (_, cont) in enumerate(pairs):
        if not cont:
            raise ValueError(f"continuation {i} ({continuations[i]!r}) has no tokens")
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    with merged_adapter(model, merge):  # under N processes each scores every N-th batch (shard.py)
        scores = shard.map_batches(order, batch_size,
                                   lambda b, chunk: _score_batch(model, tokenizer, [pairs[i] for i in chunk]))
    return [(scores[i], len(pairs[i][1])) for i in range(len(pairs))]


def option_logprobs(model, tokenizer, contexts: list[str], options: list[list[str]], batch_size: int = 8,
                    merge: bool = True) -> list[list[float]]:
    """Summed log-prob of every option after its context: ``result[i][j]`` for option j of item i."""
    flat_ctx = [c for c, opts in zip(contexts, options) for _ in opts]
    flat_opt = [o for opts in options for o in opts]
    scores = iter(s for s, _ in continuation_logprobs(model, tokenizer, flat_ctx, flat_opt, batch_size, merge))
    return [[next(scores) for _ in opts] for opts in options]


def mean_nll(model, tokenizer, contexts: list[str], responses: list[str], batch_size: int = 8,
             merge: bool = True, add_bos: bool = True) -> dict:
    """Mean negative log-likelihood per response token (response tokens only, token-weighted).

    Returns:
        ``{"nll": float, "perplexity": float, "tokens": int, "n": int}``.
    """
    scored = continuation_logprobs(model, tokenizer, contexts, responses, batch_size, merge, add_bos)
    tokens = sum(n for _, n in scored)
    nll = -sum(s for s, _ in scored) / tokens if tokens else float("nan")
    return {"nll": nll, "perplexity": math.exp(nll) if tokens else float("nan"), "tokens": tokens, "n": len(scored)}
