"""Train the tiny random Llama on fixed synthetic data; used by tests in subprocesses (kill, DDP).

usage: python tests/train_script.py OUT [--method M] [--grad-accum N] [--steps N] [--checkpoint-every N]
       [--lr X] [--seed N] [--weight-decay X]
Prints ``HASH <sha256 of the adapter tensors>`` at the end.
"""

import argparse
import logging
import warnings

import torch


def examples(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(10, 48, (1,), generator=g))
        ids = torch.randint(3, 300, (length,), generator=g).tolist()
        cut = length // 3
        out.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
    return out


def main():
    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers import LlamaForCausalLM

    from workbench.hashing import tensors_hash
    from workbench.adapters.spec import AdapterSpec
    from workbench.models.tiny import tiny_llama_config
    from workbench.train.config import TrainConfig
    from workbench.train.loop import train

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--method", default="lori_d")
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--checkpoint-every", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--batching", default="packed")
    p.add_argument("--data-seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    cfg = TrainConfig(lr=a.lr, steps=a.steps, batch_size=4, grad_accum=a.grad_accum, weight_decay=a.weight_decay,
                      checkpoint_every=a.checkpoint_every, seed=a.seed, batching=a.batching, warmup_ratio=0.1)
    r = train(model, examples(seed=a.data_seed), AdapterSpec(method=a.method, rank=4, alpha=8), cfg, a.out, progress=False)
    if r.adapter_path is not None:
        print("HASH", tensors_hash(r.adapter.tensors))
        print("LOSS", r.summary["first_loss"], r.summary["last_loss"])


if __name__ == "__main__":
    main()
