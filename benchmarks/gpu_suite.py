"""The GPU run, ready for the first GPU machine: training throughput and MFU of the workbench loop vs PEFT +
transformers ``Trainer``, batched evaluation throughput, and peak memory, on a Llama-3-8B-shaped model with
random weights (nothing is downloaded: the shape is written here, the tokenizer is the embedded one, the
data are the shipped task samples).

Training: bf16 weights, bf16 autocast, rank-32 LoRA on all 7 projections, the same real variable-length
math + code examples in the same order on both sides, the same steps and batch size. Each part runs in
its own process, so each peak memory (``torch.cuda.max_memory_allocated``, or max RSS on CPU) is its own.

MFU counts the matmul FLOPs of a LoRA step: forward ``2 N`` per token, backward ``2 N`` (activation
gradients only: the frozen weights get no weight gradient), plus ``6 N_lora`` for the adapter, over the
device's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s; ``--peak-tflops`` for others). Attention's
sequence-quadratic term is left out (short sequences here), so the MFU is a slight underestimate.

``--tiny`` runs the same code on the tiny random Llama on CPU in well under a minute, so that the script
runs in CI and cannot rot; its numbers mean nothing.

    .venv/bin/python benchmarks/gpu_suite.py [--tiny] [--steps 30] [--batch-size 4] [--max-length 512]

Prints ``RESULT gpu_suite.<part> ...`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

# Llama-3-8B (meta-llama/Meta-Llama-3-8B config.json), written out so that nothing is downloaded
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def build_model(args):
    """A random-weight Llama of the benchmark's shape on the benchmark's device, and the embedded tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from transformers import AutoTokenizer

    from workbench.models.tiny import embedded_tokenizer_dir, tiny_llama

    if args.tiny:
        return tiny_llama(seed=0)
    tok = AutoTokenizer.from_pretrained(str(embedded_tokenizer_dir()))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    with torch.device("cuda"):  # built on the GPU in bf16 directly: no 32 GB fp32 copy on the host
        model = LlamaForCausalLM._from_config(LlamaConfig(**LLAMA3_8B), torch_dtype=torch.bfloat16)
    return model.eval(), tok


def examples(tok, n: int, max_length: int) -> list[dict]:
    """``n`` real variable-length examples: shipped math and code samples, interleaved, repeated if short."""
    from workbench.data.prompts import tokenize_records
    from workbench.data.registry import get_task

    recs = get_task("math").train_records(limit=n, seed=0) + get_task("code").train_records(limit=n, seed=0)
    recs = [recs[i] for i in sorted(range(len(recs)), key=lambda i: (i % 2, i))]
    data = tokenize_records(tok, recs, max_length)
    return (data * (n // max(len(data), 1) + 1))[:n]


def flops_per_token(model) -> tuple[float, int, int]:
    """(matmul FLOPs per trained token, frozen params, LoRA params) as the module docstring counts them."""
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad and "embed" not in n)
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4.0 * frozen + 6.0 * lora, frozen, lora


def _peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_ours(args) -> dict:
    from workbench.adapters.spec import AdapterSpec
    from workbench.train.config import TrainConfig
    from workbench.train.loop import train

    model, tok = build_model(args)
    data = examples(tok, args.steps * args.batch_size, args.max_length)
    cfg = TrainConfig(lr=1e-4, steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                      warmup_ratio=0.0, precision="fp32" if args.tiny else "bf16")
    spec = AdapterSpec(method="lora", rank=32, alpha=64, target_modules=PROJECTIONS)
    with tempfile.TemporaryDirectory() as out:
        r = train(model, data, spec, cfg, out, pad_id=tok.pad_token_id, progress=False)
    used = [data[i] for step in r.summary["trace"] for i in step["examples"]]
    fpt, frozen, lora = flops_per_token(model)
    return {"tokens": sum(len(e["input_ids"]) for e in used), "seconds": r.summary["seconds"],
            "flops_per_token": fpt, "frozen_params": frozen, "lora_params": lora}


def train_peer(args) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model, tok = build_model(args)
    data = examples(tok, args.steps * args.batch_size, args.max_length)
    pm = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, target_modules=list(PROJECTIONS), task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                                  learning_rate=1e-4, report_to=[], save_strategy="no", logging_strategy="no",
                                  use_cpu=args.tiny, bf16=not args.tiny, dataloader_num_workers=0,
                                  disable_tqdm=True, seed=0)
        trainer = Trainer(model=pm, args=targs, train_dataset=data,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
        secs = trainer.train().metrics["train_runtime"]
    fpt, frozen, lora = flops_per_token(pm)
    return {"tokens": sum(len(e["input_ids"]) for e in data), "seconds": secs, "flops_per_token": fpt,
            "frozen_params": frozen, "lora_params": lora}


def evaluate(args) -> dict:
    """Our batched generation (workbench.evaluate.generate) on math prompts, greedy."""
    from workbench.data.prompts import format_prompt
    from workbench.data.registry import get_task
    from workbench.evaluate.generate import GenerationConfig, generate

    model, tok = build_model(args)
    recs = get_task("math").train_records(limit=args.prompts, seed=1)
    prompts = [format_prompt(tok, r["prompt"]) for r in recs]
    prompts = (prompts * (args.prompts // max(len(prompts), 1) + 1))[:args.prompts]
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.eval_batch_size, stop=())
    generate(model, tok, prompts[:2], GenerationConfig(max_new_tokens=2, batch_size=2, stop=()))  # warm-up
    _sync()
    t0 = time.perf_counter()
    texts = generate(model, tok, prompts, cfg)
    _sync()
    secs = time.perf_counter() - t0
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return {"tokens": tokens, "seconds": secs, "prompts": len(prompts)}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


PARTS = {"train_ours": train_ours, "train_peer": train_peer, "eval": evaluate}


def child(args) -> None:
    import torch

    if args.tiny:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out = PARTS[args.part](args)
    out["peak_mb"] = _peak_mb()
    out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print("JSON " + json.dumps(out), flush=True)


def peak_tflops(device: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_TFLOPS.items() if k in device), None)


def parent(args, argv: list[str]) -> int:
    res = {}
    for part in PARTS:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, *argv, "--part", part], capture_output=True, text=True,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
        if proc.returncode:
            print(f"{part} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        res[part] = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("JSON "))[5:])
        res[part]["wall_s"] = time.perf_counter() - t0
    model = "tiny-llama" if args.tiny else "llama3-8b-shape"
    peak = peak_tflops(res["train_ours"]["device"], args.peak_tflops)
    for side in ("train_ours", "train_peer"):
        r = res[side]
        r["tok_s"] = r["tokens"] / r["seconds"]
        tflops = r["tok_s"] * r["flops_per_token"] / 1e12
        mfu = f"{tflops / peak:.3f}" if peak else "n/a"
        print(f"RESULT gpu_suite.{side} model={model} device={r['device'].replace(' ', '_')} tok_s={r['tok_s']:.1f} "
              f"tflops={tflops:.3f} mfu={mfu} peak_mb={r['peak_mb']:.0f} steps={args.steps} batch={args.batch_size}")
    ratio = res["train_ours"]["tok_s"] / res["train_peer"]["tok_s"]
    mem = res["train_ours"]["peak_mb"] / res["train_peer"]["peak_mb"]
    print(f"RESULT gpu_suite.train_ratio ours_over_peer_tok_s={ratio:.2f} ours_over_peer_peak_mem={mem:.2f}")
    e = res["eval"]
    print(f"RESULT gpu_suite.eval model={model} tok_s={e['tokens'] / e['seconds']:.1f} prompts={e['prompts']} "
          f"batch={args.eval_batch_size} max_new_tokens={args.max_new_tokens} peak_mb={e['peak_mb']:.0f}")
    print(f"RESULT gpu_suite.wall seconds={sum(r['wall_s'] for r in res.values()):.1f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="the tiny random Llama on CPU (CI; numbers mean nothing)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--prompts", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: known H100/H200/A100)")
    p.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    small = dict(steps=2, batch_size=4, max_length=64, prompts=4, eval_batch_size=4, max_new_tokens=4)
    # batch 4 x 512 tokens: activations of the 32 layers without checkpointing fit beside 16 GB of weights on 80 GB
    full = dict(steps=30, batch_size=4, max_length=512, prompts=64, eval_batch_size=32, max_new_tokens=128)
    for k, v in (small if args.tiny else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.part:
        child(args)
        return 0
    if not args.tiny:
        import torch

        if not torch.cuda.is_available():
            sys.exit("gpu_suite: no CUDA device; use --tiny on CPU")
    argv = list(sys.argv[1:])
    for k in ("steps", "batch_size", "max_length", "prompts", "eval_batch_size", "max_new_tokens"):
        argv += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    return parent(args, argv)


if __name__ == "__main__":
    sys.exit(main())
