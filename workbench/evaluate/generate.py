"""Batched generation for evaluation: left padding, KV cache, greedy by default, stop strings.

Prompts are sorted by length so a batch holds similar lengths (little padding), and the outputs are
returned in the caller's order. Each step runs only the sequences still going: a finished row (EOS or a
stop string) is dropped from the batch and its KV cache. A PEFT adapter can be merged into the base
weights for the duration (one matmul per layer instead of three).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

DEFAULT_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class GenerationConfig:
    """Settings for :func:`generate`; recorded next to every number they produced.

    ``max_new_tokens`` None means "the task kind's default". ``stop``: strings that end a sequence (cut
    from the output); the kind's default stop strings are added to these.
    """

    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    batch_size: int = 16
    merge_adapter: bool = True
    sort_by_length: bool = True

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


def eos_ids(model, tokenizer) -> set[int]:
    """Every id that ends a sequence: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos] if gen_eos is not None else [])
    return {int(i) for i in ids}


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt; special tokens are added only when the text does not already start with BOS
    (a chat template usually writes it, and a second BOS changes the output)."""
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


@contextlib.contextmanager
def merged_adapter(model, enabled: bool = True):
    """Merge a PEFT adapter into the base weights inside the block, unmerge after.

    Unmerging subtracts the same delta, so base weights come back up to float rounding (~1e-7 relative
    in fp32). Skipped for non-PEFT models, quantized bases (merging would requantize) and already-merged
    adapters.
    """
    quantized = getattr(getattr(model, "config", None), "quantization_config", None) is not None
    merged_already = any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "merge"))
    if not enabled or quantized or merged_already or not hasattr(model, "merge_adapter"):
        yield model
        return
    model.merge_adapter()
    try:
        yield model
    finally:
        model.unmerge_adapter()


def _pick(logits: torch.Tensor, cfg: GenerationConfig, gen: torch.Generator | None) -> torch.Tensor:
    """Next token per row from (B, V) logits: argmax, or temperature / top-p sampling."""
    if not cfg.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / max(cfg.temperature, 1e-5), dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < cfg.top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def _hit_stop(tokenizer, tokens: list[int], stop: tuple[str, ...], window: int) -> bool:
    # Decoding only the tail keeps the check O(1) per step; window tokens cover the longest stop string.
    return bool(stop) and any(s in tokenizer.decode(tokens[-window:]) for s in stop)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def _cache_keyword() -> str:
    # transformers 5.x renamed ``past_key_values`` to ``cache`` (argument and output field).
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def left_pad(batch: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids):] = 1
    return input_ids.to(device), attention.to(device)


@torch.no_grad()
def _generate_batch(model, tokenizer, batch: list[list[int]], cfg: GenerationConfig, max_new: int,
                    stop: tuple[str, ...], eos: set[int], gen: torch.Generator | None) -> list[list[int]]:
    """Generated token ids (EOS excluded) for one batch of prompt ids."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    input_ids, attention = left_pad(batch, pad_id, device)  # (B, T)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
    out_tokens: list[list[int]] = [[] for _ in batch]
    rows = list(range(len(batch)))  # batch row -> original index, for the rows still generating
    window = max((len(s) for s in stop), default=0) + 8
    past, cache_kw = None, _cache_keyword()
    for _ in range(max_new):
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                    use_cache=True, logits_to_keep=1, **{cache_kw: past})
        past = getattr(out, cache_kw)
        next_tok = _pick(out.logits[:, -1, :].float(), cfg, gen).tolist()  # (B,)
        keep = []
        for row, (orig, tok) in enumerate(zip(rows, next_tok)):
            if tok in eos:
                continue
            out_tokens[orig].append(tok)
            if not _hit_stop(tokenizer, out_tokens[orig], stop, window):
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(rows):  # drop finished rows from the batch and the cache
            index = torch.tensor(keep, device=device)
            past.batch_select_indices(index)
            attention, positions = attention[index], positions[index]
            next_tok = [next_tok[r] for r in keep]
            rows = [rows[r] for r in keep]
        input_ids = torch.tensor(next_tok, device=device).unsqueeze(-1)  # (B', 1)
        attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=-1)
        positions = positions[:, -1:] + 1
    return out_tokens


def generate(model, tokenizer, prompts: list[str], config: GenerationConfig | None = None, seed: int = 0) -> list[str]:
    """Generate a completion for each prompt.

    Args:
        model: a causal LM (transformers or a PEFT wrapper), in eval mode.
        tokenizer: its tokenizer.
        prompts: fully formatted prompt strings.
        config: settings (defaults: greedy, 256 new tokens, batches of 16, adapter merged).
        seed: seeds the sampler (unused when greedy).

    Returns:
        The decoded completions (special tokens skipped, cut before the first stop string), in input order.
    """
    cfg = config or GenerationConfig()
    max_new = cfg.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i])) if cfg.sort_by_length else list(range(len(ids)))
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed) if cfg.do_sample else None
    eos, stop = eos_ids(model, tokenizer), tuple(cfg.stop)
    texts: list[str] = [""] * len(prompts)
    with merged_adapter(model, cfg.merge_adapter):
        for start in range(0, len(order), cfg.batch_size):
            chunk = order[start:start + cfg.batch_size]
            tokens = _generate_batch(model, tokenizer, [ids[i] for i in chunk], cfg, max_new, stop, eos, gen)
            for i, toks in zip(chunk, tokens):
                texts[i] = cut_at_stop(tokenizer.decode(toks, skip_special_tokens=True), stop)
    return texts
