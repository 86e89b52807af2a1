"""Evaluation throughput: batched generation (ours) vs one prompt at a time with ``model.generate`` (peer).

Both run the embedded SmolLM2-135M-Instruct with a rank-32 LoRA adapter on all 7 projections (random
small B, so the adapter changes the outputs), greedy, the same prompts (GSM8K test questions) and the same
``max_new_tokens``. Ours: left-padded batches sorted by length, KV cache, finished rows dropped, adapter
merged for the run. Peer: the usual loop, ``PeftModel.generate`` per prompt. Tokens are counted the same
way for both (re-encoding the decoded completions). Also reports how many completions agree exactly
(left padding and merging change float rounding, which can flip a near-tie in greedy decoding).

Usage: python benchmarks/eval_throughput.py [--prompts 32] [--max-new-tokens 64] [--batch-size 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

SHARED_GSM8K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k" / "test.jsonl"


def questions(n: int) -> list[str]:
    """The first ``n`` GSM8K test questions (shared data copy), else the shipped math samples."""
    if SHARED_GSM8K.is_file():
        with open(SHARED_GSM8K, encoding="utf-8") as f:
            return [json.loads(line)["question"] for line in f if line.strip()][:n]
    from workbench.data.registry import get_task

    return [r["prompt"] for r in get_task("math").eval_records("test")][:n]


def lora_model(base, rank: int = 32, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    pm = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 2e-3
    return pm.eval()


def peer_generate(model, tok, prompts: list[str], max_new: int) -> list[str]:
    from workbench.evaluate.generate import encode_prompt

    out = []
    for p in prompts:
        ids = torch.tensor([encode_prompt(tok, p)])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def count_tokens(tok, texts: list[str]) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 by default: OpenMP spinning on a shared machine slows both sides)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from workbench.data.prompts import format_prompt
    from workbench.evaluate.generate import GenerationConfig, generate
    from workbench.models.base import load_base

    base, tok = load_base("smollm2-135m-instruct")
    model = lora_model(base)
    prompts = [format_prompt(tok, q) for q in questions(args.prompts)]
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    generate(model, tok, prompts[:2], GenerationConfig(max_new_tokens=4))  # warm-up, both paths
    peer_generate(model, tok, prompts[:1], 4)

    t0 = time.perf_counter()
    ours = generate(model, tok, prompts, cfg)
    t_ours = time.perf_counter() - t0
    print(f"ours done in {t_ours:.1f} s", flush=True)
    t0 = time.perf_counter()
    peer = peer_generate(model, tok, prompts, args.max_new_tokens)
    t_peer = time.perf_counter() - t0

    tps_ours, tps_peer = count_tokens(tok, ours) / t_ours, count_tokens(tok, peer) / t_peer
    agree = sum(a == b for a, b in zip(ours, peer))
    print(f"prompts={len(prompts)} max_new_tokens={args.max_new_tokens} batch_size={args.batch_size} "
          f"threads={torch.get_num_threads()}")
    print(f"ours (batched, merged): {t_ours:.1f} s, {tps_ours:.1f} tokens/s")
    print(f"peer (one at a time):   {t_peer:.1f} s, {tps_peer:.1f} tokens/s")
    print(f"identical completions: {agree}/{len(prompts)}")
    print(f"RESULT eval_throughput ratio={tps_ours / tps_peer:.2f} ours={tps_ours:.1f}tok/s peer={tps_peer:.1f}tok/s "
          f"agree={agree}/{len(prompts)}")


if __name__ == "__main__":
    main()
