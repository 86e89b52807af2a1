"""Batched generation for evaluation: transformers' ``generate`` on left-padded, length-sorted batches.

Prompts are sorted by length so a batch holds similar lengths (little padding), and the outputs are
returned in the caller's order; greedy by default, temperature / top-p sampling seeded per call, stop
strings (``generate``'s ``stop_strings``; the text is cut before the first one). A PEFT adapter is merged
into the base weights for the duration (one matmul per layer instead of three).

Decoding is transformers' own: a hand-written loop (which dropped finished rows from the batch and the KV
cache) raced ``generate`` on the same batches in ``benchmarks/eval_throughput.py`` and was not faster
(0.90x-1.11x over three runs on this project's 2-core machine), so it was removed. What stays ours is the
batching, the per-sequence budget (``max_length`` caps prompt plus generation for each sequence, as
bigcode-evaluation-harness does one prompt at a time) and the seeded sampling.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

from workbench.evaluate import shard

DEFAULT_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class GenerationConfig:
    """Settings for :func:`generate`; recorded next to every number they produced.

    ``max_new_tokens`` None means "the task kind's default". ``stop``: strings that end a sequence (cut
    from the output); the kind's default stop strings are added to these. ``add_bos``: prompts get the
    tokenizer's special tokens (BOS) unless they already start with BOS; False sends the text's tokens
    only (the official LoRI ``eval_model.py`` does). ``max_length``: a cap on prompt plus generated tokens
    per sequence (bigcode-evaluation-harness's ``max_length_generation``), on top of ``max_new_tokens``.
    """

    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    batch_size: int = 16
    merge_adapter: bool = True
    sort_by_length: bool = True
    add_bos: bool = True
    max_length: int | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


def eos_ids(model, tokenizer) -> set[int]:
    """Every id that ends a sequence: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos] if gen_eos is not None else [])
    return {int(i) for i in ids}


def encode_prompt(tokenizer, text: str, add_bos: bool = True) -> list[int]:
    """Token ids of a prompt; special tokens are added only when ``add_bos`` and the text does not already
    start with BOS (a chat template usually writes it, and a second BOS changes the output)."""
    if not add_bos:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
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


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def left_pad(batch: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids):] = 1
    return input_ids.to(device), attention.to(device)


@torch.no_grad()
def _generate_batch(model, tokenizer, batch: list[list[int]], cfg: GenerationConfig, budgets: list[int],
                    stop: tuple[str, ...], eos: set[int]) -> list[list[int]]:
    """Generated token ids (EOS excluded) for one batch of prompt ids, each row cut to its own budget."""
    from transformers import GenerationConfig as HFGenerationConfig

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    input_ids, attention = left_pad(batch, pad_id, device)  # (B, T)
    sampling = {"temperature": max(cfg.temperature, 1e-5), "top_p": cfg.top_p} if cfg.do_sample else {}
    # An explicit config: nothing inherited from the model's generation_config.json (repetition penalty,
    # sampling defaults), so every number records the settings that made it.
    hf = HFGenerationConfig(max_new_tokens=max(budgets), do_sample=cfg.do_sample, eos_token_id=sorted(eos),
                            pad_token_id=pad_id, stop_strings=list(stop) or None, **sampling)
    out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=hf,
                         tokenizer=tokenizer if stop else None)  # (B, T + new)
    rows = []
    for row, budget in zip(out[:, input_ids.shape[1]:].tolist(), budgets):
        end = next((i for i, tok in enumerate(row) if tok in eos), len(row))  # then only padding follows
        rows.append(row[:min(end, budget)])
    return rows


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
    ids = [encode_prompt(tokenizer, p, cfg.add_bos) for p in prompts]
    # max_length caps prompt + generation per sequence; a prompt already at the cap generates nothing
    budget = [min(max_new, cfg.max_length - len(x)) if cfg.max_length else max_new for x in ids]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i])) if cfg.sort_by_length else list(range(len(ids)))
    order = [i for i in order if budget[i] > 0]
    eos, stop = eos_ids(model, tokenizer), tuple(cfg.stop)

    def one_batch(b: int, chunk: list[int]) -> list[str]:
        torch.manual_seed(batch_seed(seed, b))
        tokens = _generate_batch(model, tokenizer, [ids[i] for i in chunk], cfg, [budget[i] for i in chunk], stop, eos)
        return [cut_at_stop(tokenizer.decode(toks, skip_special_tokens=True), stop) for toks in tokens]

    # sampling draws from torch's global RNG inside generate: seeded per batch (so a batch samples the same
    # whichever process computes it, workbench.evaluate.shard), and the caller's state restored
    with merged_adapter(model, cfg.merge_adapter), torch.random.fork_rng(devices=_cuda_devices(model)):
        texts = shard.map_batches(order, cfg.batch_size, one_batch)
    return [texts.get(i, "") for i in range(len(prompts))]  # a prompt over its budget generates nothing


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of one batch: ``seed`` for the first, a distinct one for each later batch."""
    return (seed + 1_000_003 * batch) % 2**63


def _cuda_devices(model) -> list[int]:
    device = next(model.parameters()).device
    return [device.index or 0] if device.type == "cuda" else []
