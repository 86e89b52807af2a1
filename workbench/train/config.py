"""Training settings: a frozen value recorded with every checkpoint (resume refuses a changed one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from workbench.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")
BATCHING = ("packed", "padded")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Args:
        lr: peak learning rate (B's; ``lr_ratio`` methods scale groups from it).
        steps: optimizer steps; if 0, ``epochs`` decides.
        batch_size: sequences per optimizer step, over all processes and accumulation steps.
        grad_accum: micro-batches per optimizer step and process.
        max_length: tokens per sequence (longer ones are truncated by the tokenizer step).
        batching: ``padded`` (each step cut into length-sorted chunks of at most ``micro_tokens`` padded
            tokens: little padding) or ``packed`` (sequences concatenated in one row, attention kept per
            sequence through position ids: no pad tokens, but the block mask makes attention cost grow with
            the row; measured slower on CPU: benchmarks/train_throughput.py).
        micro_tokens: padded tokens per chunk (0: one chunk per micro-batch).
        checkpoint_every: optimizer steps between checkpoints (0: only the final adapter).
        keep_checkpoints: committed checkpoints kept (older ones are removed after a new one commits).
    """

    lr: float = 5e-4
    steps: int = 0
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    warmup_ratio: float = 0.03
    schedule: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "fp32"
    batching: str = "padded"
    micro_tokens: int = 1024
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 1
    deterministic: bool = False

    def __post_init__(self):
        checks = [
            ("lr", self.lr > 0, "must be > 0"), ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"), ("steps", self.steps >= 0, "must be >= 0"),
            ("epochs", self.steps > 0 or self.epochs > 0, "must be > 0 when steps is 0"),
            ("max_length", self.max_length >= 8, "must be >= 8"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {SCHEDULES}"),
            ("batching", self.batching in BATCHING, f"must be one of {BATCHING}"),
            ("precision", self.precision in PRECISIONS, f"must be one of {PRECISIONS}"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("micro_tokens", self.micro_tokens >= 0, "must be >= 0"),
        ]
        for name, ok, msg in checks:
            if not ok:
                raise ConfigError(f"{name}: {msg} (got {getattr(self, name)!r})")

    def to_dict(self) -> dict:
        return asdict(self)


# Fields that may differ on resume without changing the result.
RESUME_NEUTRAL_KEYS = ("checkpoint_every", "keep_checkpoints", "log_every")
