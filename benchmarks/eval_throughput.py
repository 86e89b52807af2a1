"""Evaluation throughput: ``workbench.evaluate.generate`` vs transformers' batched ``generate`` (the peer a
user would pick).

History: ``generate`` here was a hand-written decode loop (finished rows dropped from the batch and the KV
cache). Against this peer it measured ratio 1.02, 1.11 and 0.90 in three runs (2-core machine, shared in
the third): not faster, so it was replaced by transformers' ``generate`` (issue 20). What is ours now is
the batching around it (length-sorted batches, per-sequence budgets, seeded sampling, stop strings cut),
so this benchmark checks that this wrapper costs nothing and changes no output.

Both sides run the embedded SmolLM2-135M-Instruct with the same rank-32 LoRA adapter on all 7 projections
(random small B, so the adapter changes the outputs), **merged** into the base weights for the run, on the
same prompts (GSM8K test questions in the math task's prompt format), greedy, the same ``max_new_tokens``,
the same stop strings and the same batch size, with the prompts in the same length-sorted batches (the
peer gets the sorting for free: it is the strongest form of the peer). Peer: ``model.generate`` with left
padding, ``stop_strings`` and ``tokenizer=``, one call per batch. Ours: ``workbench.evaluate.generate``. Completions are cut at the first stop string on both
sides (``generate`` keeps it) and compared exactly, with each other and with unpadded decoding (the same
``generate``, one prompt at a time: the reference for which side a disagreement comes from); tokens are counted the same way for both
(re-encoding the cut completions).

Each side runs in its own fresh process, so its peak resident memory (``ru_maxrss``) is its own.

Usage: python benchmarks/eval_throughput.py [--prompts 32] [--max-new-tokens 64] [--batch-size 16]
       [--threads 1] [--stop '\\n\\n']
Prints ``RESULT eval_throughput ratio=... peer=hf-batched-generate agree=N/M`` (ratio = our tokens/s over
the peer's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED_GSM8K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k" / "test.jsonl"


def questions(n: int) -> list[str]:
    """The first ``n`` GSM8K test questions (shared data copy), else the shipped math samples."""
    if SHARED_GSM8K.is_file():
        with open(SHARED_GSM8K, encoding="utf-8") as f:
            return [json.loads(line)["question"] for line in f if line.strip()][:n]
    from workbench.data.registry import get_task

    return [r["prompt"] for r in get_task("math").eval_records("test")][:n]


def lora_model(base, rank: int = 32, seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # PEFT draws A from torch's global generator: seeded, or each side's process races another adapter
    # (until 2026-12-01 it was not, and the sides agreed on only 22-23 of 32 completions)
    torch.manual_seed(seed)
    pm = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 2e-3
    return pm.eval()


def length_sorted_batches(tok, prompts: list[str], batch_size: int) -> list[list[int]]:
    """Indices of the prompts in batches of similar token length (longest first), as ours batches them."""
    from workbench.evaluate.generate import encode_prompt

    lengths = [len(encode_prompt(tok, p)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def peer_generate(model, tok, prompts: list[str], max_new: int, batch_size: int, stop: tuple[str, ...]) -> list[str]:
    """transformers' batched ``generate``: left padding, greedy, ``stop_strings``, one call per batch."""
    import torch

    from workbench.evaluate.generate import cut_at_stop, encode_prompt

    tok.padding_side = "left"
    out = [""] * len(prompts)
    for batch in length_sorted_batches(tok, prompts, batch_size):
        ids = [encode_prompt(tok, prompts[i]) for i in batch]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids])
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        with torch.no_grad():
            gen = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new,
                                 do_sample=False, pad_token_id=tok.pad_token_id, stop_strings=list(stop) or None,
                                 tokenizer=tok)
        for row, i in enumerate(batch):
            out[i] = cut_at_stop(tok.decode(gen[row, width:], skip_special_tokens=True), stop)
    return out


def run_side(side: str, args) -> dict:
    """Load, warm up and time one side; returns its completions, seconds and peak RSS."""
    import torch

    torch.set_num_threads(args.threads)
    from workbench.data.prompts import format_prompt
    from workbench.evaluate.generate import GenerationConfig, generate, merged_adapter
    from workbench.models.base import load_base

    base, tok = load_base("smollm2-135m-instruct")
    model = lora_model(base)
    prompts = [format_prompt(tok, q) for q in questions(args.prompts)]
    stop = tuple(args.stop)
    with merged_adapter(model):  # both sides: adapter merged for the run
        if side == "ours":
            cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop=stop,
                                   merge_adapter=False)  # already merged above
            def call(ps, n):
                return generate(model, tok, ps, dataclasses.replace(cfg, max_new_tokens=n))
        else:  # the peer, or (reference) the same generate one prompt at a time: no padding at all
            size = 1 if side == "reference" else args.batch_size
            def call(ps, n):
                return peer_generate(model, tok, ps, n, size, stop)
        call(prompts[:2], 4)  # warm-up
        t0 = time.perf_counter()
        texts = call(prompts, args.max_new_tokens)
        seconds = time.perf_counter() - t0
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"texts": texts, "seconds": seconds, "tokens": tokens, "peak_mb": peak_mb}


def in_child(side: str, argv: list[str]) -> dict:
    """Run one side in a fresh interpreter (its own peak memory) and read its JSON result."""
    proc = subprocess.run([sys.executable, __file__, "--side", side, *argv], capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 by default: OpenMP spinning on a shared machine slows both sides)")
    ap.add_argument("--stop", nargs="*", default=["\n\n"], help="stop strings, the same for both sides")
    ap.add_argument("--side", choices=["ours", "peer", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args)))
        return
    argv = [a for a in sys.argv[1:]]
    ours, peer, ref = in_child("ours", argv), in_child("peer", argv), in_child("reference", argv)
    tps_ours, tps_peer = ours["tokens"] / ours["seconds"], peer["tokens"] / peer["seconds"]
    agree = sum(a == b for a, b in zip(ours["texts"], peer["texts"]))
    n = len(ours["texts"])
    print(f"prompts={n} max_new_tokens={args.max_new_tokens} batch_size={args.batch_size} threads={args.threads} "
          f"stop={args.stop!r}")
    print(f"ours (workbench generate, merged):  {ours['seconds']:.1f} s, {tps_ours:.1f} tokens/s, "
          f"peak RSS {ours['peak_mb']:.0f} MB")
    print(f"peer (batched generate, merged):     {peer['seconds']:.1f} s, {tps_peer:.1f} tokens/s, "
          f"peak RSS {peer['peak_mb']:.0f} MB")
    print(f"identical completions: {agree}/{n}")
    # Which side differs from unpadded decoding (batch of one) when the two disagree: padding and a batch
    # that shrinks change float rounding, which can flip a near-tie in greedy decoding.
    ours_ref = sum(a == b for a, b in zip(ours["texts"], ref["texts"]))
    peer_ref = sum(a == b for a, b in zip(peer["texts"], ref["texts"]))
    print(f"identical to unpadded one-prompt generate: ours {ours_ref}/{n}, peer {peer_ref}/{n}")
    print(f"RESULT eval_throughput ratio={tps_ours / tps_peer:.2f} peer=hf-batched-generate agree={agree}/{n} "
          f"ours={tps_ours:.1f}tok/s peer_tps={tps_peer:.1f}tok/s peak_mb_ratio={ours['peak_mb'] / peer['peak_mb']:.2f} "
          f"ref_agree_ours={ours_ref}/{n} ref_agree_peer={peer_ref}/{n}")


if __name__ == "__main__":
    main()
