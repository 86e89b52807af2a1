"""Training throughput: the workbench loop vs PEFT LoRA + transformers ``Trainer`` (its usual padding
collator), side by side on the same examples and the same model.

Both sides: SmolLM2-135M-Instruct (embedded default), rank-32 LoRA on all 7 projections, fp32, the same
variable-length GSM8K + CodeAlpaca mix in the same order, the same number of optimizer steps and batch
size. Each side runs in its own subprocess so peak memory (max RSS) is measured separately.
Non-pad tokens/s counts only real tokens (the Trainer also computes on pad tokens; we count what is
useful). Prints one ``RESULT`` line.

    .venv/bin/python benchmarks/train_throughput.py [--steps 8] [--batch-size 8] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys


def examples(tokenizer, n: int, max_length: int) -> list[dict]:
    from workbench.data.prompts import tokenize_records
    from workbench.data.registry import get_task

    half = n // 2
    recs = get_task("math").train_records(limit=half, seed=0) + get_task("code").train_records(limit=n - half, seed=0)
    recs = [recs[i] for i in sorted(range(len(recs)), key=lambda i: (i % 2, i))]  # interleave the two tasks
    return tokenize_records(tokenizer, recs, max_length)


def run_ours(args) -> dict:
    from workbench.adapters.spec import AdapterSpec
    from workbench.models.base import load_base
    from workbench.train.config import TrainConfig
    from workbench.train.loop import train

    model, tok = load_base(args.model)
    data = examples(tok, args.steps * args.batch_size, args.max_length)
    cfg = TrainConfig(lr=1e-4, steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                      warmup_ratio=0.0, batching=args.batching)
    r = train(model, data, AdapterSpec(method="lora", rank=32, alpha=64), cfg, args.out, pad_id=tok.pad_token_id,
              progress=False)
    secs = r.summary["seconds"]  # the loop itself: no adapter attach before, no adapter save after
    used = [data[i] for step in r.summary["trace"] for i in step["examples"]]
    return {"tokens": sum(len(e["input_ids"]) for e in used), "seconds": secs}


def run_trainer(args) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from workbench.models.base import load_base

    model, tok = load_base(args.model)
    data = examples(tok, args.steps * args.batch_size, args.max_length)
    pm = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                             "gate_proj", "up_proj", "down_proj"],
                                          task_type="CAUSAL_LM"))
    targs = TrainingArguments(output_dir=args.out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                              learning_rate=1e-4, report_to=[], save_strategy="no", logging_strategy="no",
                              use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = Trainer(model=pm, args=targs, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    secs = trainer.train().metrics["train_runtime"]  # the Trainer's own loop timing
    # The Trainer's sampler shuffles with its seed: every example is used once (steps x batch = all).
    return {"tokens": sum(len(e["input_ids"]) for e in data), "seconds": secs}


def child(args) -> None:
    out = run_ours(args) if args.side == "ours" else run_trainer(args)
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("JSON " + json.dumps(out))


def parent(args) -> None:
    import tempfile

    res = {}
    for side in ("ours", "peer"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--side", side, "--out", tmp, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--model", args.model, "--batching", args.batching]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            if proc.returncode:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            res[side] = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("JSON "))[5:])
    for side, r in res.items():
        r["tok_s"] = r["tokens"] / r["seconds"]
        print(f"{side:5s}: {r['tokens']} non-pad tokens in {r['seconds']:.1f}s = {r['tok_s']:.1f} tok/s, "
              f"peak RSS {r['max_rss_mb']:.0f} MB")
    ratio = res["ours"]["tok_s"] / res["peer"]["tok_s"]
    mem = res["ours"]["max_rss_mb"] / res["peer"]["max_rss_mb"]
    print(f"memory ratio (ours/peer, lower is better): {mem:.2f}")
    print(f"RESULT train_throughput ratio={ratio:.2f} ours={res['ours']['tok_s']:.1f}tok/s peer={res['peer']['tok_s']:.1f}tok/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batching", default="padded", choices=["packed", "padded"])
    p.add_argument("--side", choices=["ours", "peer"])
    p.add_argument("--out")
    args = p.parse_args()
    child(args) if args.side else parent(args)


if __name__ == "__main__":
    main()
