"""``workbench train --task math --method lori_s --mask MASK [--from ADAPTER] ... --out DIR``."""

from __future__ import annotations

from workbench.models.base import EMBEDDED


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train an adapter on a task")
    p.add_argument("--task", required=True, help="task name (see `workbench tasks`)")
    p.add_argument("--method", default="lori_d", help="adapter method (default lori_d)")
    p.add_argument("--mask", help="mask file (lori_s)")
    p.add_argument("--from", dest="init", metavar="ADAPTER", help="continue this adapter (continual learning)")
    p.add_argument("--model", default=EMBEDDED, help=f"base model: alias, hub id, directory or .gguf (default {EMBEDDED})")
    p.add_argument("--quantize", choices=["nf4"], help="load the base in 4 bits (QLoRA)")
    p.add_argument("--out", required=True, help="output directory (adapter in OUT/adapter, checkpoints in OUT/checkpoints)")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default 2 x rank)")
    p.add_argument("--a-seed", type=int, default=0, help="seed of A's random init")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--targets", default=None, help="comma-separated target modules (default all 7 projections)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=0)
    steps.add_argument("--epochs", type=float, default=None)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "linear", "constant"])
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--batching", default="padded", choices=["packed", "padded"])
    p.add_argument("--micro-tokens", type=int, default=1024, help="padded tokens per chunk (padded batching)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=0, help="optimizer steps between resumable checkpoints")
    p.add_argument("--limit", type=int, default=None, help="use at most N training records")
    p.add_argument("--data-dir", default=None, help="directory with full datasets (default: shipped subsets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, e.g. --option lr_ratio=16 (lora_plus); see docs/methods.md")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, e.g. --task-option safety_fraction=0.3 (see `workbench tasks`)")
    p.add_argument("--force", action="store_true", help="restart instead of refusing to resume with changed settings")
    p.set_defaults(func=run)


def parse_options(items: list[str]) -> dict:
    """``["lr_ratio=16", "top_n=4"]`` -> ``{"lr_ratio": 16, "top_n": 4}`` (values read as YAML scalars)."""
    import yaml

    from workbench.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def run(args) -> int:
    from workbench.adapters.peft_config import DEFAULT_TARGETS
    from workbench.adapters.spec import AdapterSpec
    from workbench.models.base import BaseSpec
    from workbench.stages.train import train_task
    from workbench.train.config import TrainConfig

    targets = tuple(args.targets.split(",")) if args.targets else DEFAULT_TARGETS
    spec = AdapterSpec(method=args.method, rank=args.rank, alpha=args.alpha or 2.0 * args.rank,
                       target_modules=targets, dropout=args.dropout, a_seed=args.a_seed, task=args.task,
                       options=tuple(parse_options(args.option).items()))
    cfg = TrainConfig(lr=args.lr, steps=args.steps, epochs=args.epochs or 1.0, batch_size=args.batch_size,
                      grad_accum=args.grad_accum, max_length=args.max_length, weight_decay=args.weight_decay,
                      schedule=args.schedule, warmup_ratio=args.warmup_ratio, precision=args.precision,
                      batching=args.batching, micro_tokens=args.micro_tokens, gradient_checkpointing=args.gradient_checkpointing,
                      checkpoint_every=args.checkpoint_every, seed=args.seed, deterministic=args.deterministic)
    base = BaseSpec(name=args.model, quantize=args.quantize)
    task = args.task
    if args.task_option:
        from workbench.data.registry import get_task

        task = get_task(args.task, **parse_options(args.task_option))
    result = train_task(base, task, spec, cfg, args.out, init=args.init, mask=args.mask, limit=args.limit,
                        data_dir=args.data_dir, force=args.force)
    s = result.summary
    print(f"trained {s['steps']} steps: loss {s['loss_head']:.4f} -> {s['loss_tail']:.4f} "
          f"(mean of the first/last {s['loss_window']} steps), "
          f"{s['tokens_per_s']} tokens/s; adapter: {result.adapter_path}")
    return 0
