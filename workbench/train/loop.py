"""The training loop: one explicit loop on accelerate (fp32/bf16, accumulation, clipping, schedules,
per-group learning rates, packed batches, checkpoints, exact resume, non-finite guard, DDP).

Loss normalisation: every micro-batch contributes ``sum of token losses / label tokens of the whole
global batch`` (times the world size, because DDP averages gradients). So one process with accumulation
and N processes with the same global batch compute the same gradient, and a packed batch weighs tokens
exactly like a padded one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from workbench.adapters.adapter import Adapter
from workbench.adapters.init import tensors_hash
from workbench.adapters.live import attach, extract
from workbench.adapters.registry import get_method
from workbench.adapters.spec import AdapterSpec
from workbench.errors import ConfigError, NonFiniteError
from workbench.io.atomic import clean_stale_temps
from workbench.models.fingerprint import base_fingerprint
from workbench.train.batches import (collate_packed, collate_padded, label_tokens, length_chunks, plan_steps,
                                     split_micro)
from workbench.train.checkpoint import (check_same_world, latest_checkpoint,
                                        prune_checkpoints, restore_checkpoint, save_checkpoint)
from workbench.train.config import RESUME_NEUTRAL_KEYS, TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    adapter: Adapter
    adapter_path: Path | None
    summary: dict
    model: object = field(repr=False, default=None)


def data_hash(examples: list[dict]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex["input_ids"], ex["labels"]]).encode())
    return h.hexdigest()[:16]


def _identity(model, examples, spec, cfg, init, mask, world_size) -> dict:
    ident = {f"config.{k}": v for k, v in cfg.to_dict().items() if k not in RESUME_NEUTRAL_KEYS}
    ident.update({f"spec.{k}": v for k, v in spec.to_dict().items()})
    ident.update({"data": data_hash(examples), "base": base_fingerprint(model), "world_size": world_size,
                  "init": tensors_hash(init.tensors) if init else None,
                  "mask": tensors_hash(mask) if mask else None})
    return json.loads(json.dumps(ident, default=str))


def _scheduler(opt, cfg: TrainConfig, total: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.schedule]
    return get_scheduler(name, opt, num_warmup_steps=math.ceil(cfg.warmup_ratio * total), num_training_steps=total)


def _token_loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    labels = batch.pop("labels")
    # Position p predicts token p + 1. Only positions whose next token carries loss get logits
    # (``logits_to_keep`` as a bool mask): the LM head and the softmax over the vocabulary run on response
    # tokens only, not on prompt tokens (about half of an SFT batch) or padding.
    target = torch.full_like(labels, -100)
    target[:, :-1] = labels[:, 1:]
    keep = target != -100
    logits = model(**batch, use_cache=False, logits_to_keep=keep).logits  # (n_keep, v)
    logits = logits.reshape(-1, logits.shape[-1]).float()
    loss = F.cross_entropy(logits, target[keep], reduction="sum")
    return loss, int(keep.sum())


def _rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc; None elsewhere). Sampled once per optimizer step, so
    a stage's peak is measured per stage, unlike ru_maxrss which keeps the whole process's maximum."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _fault(name: str, step: int, tag: str | None) -> bool:
    """Fault-injection points for the fault tests (environment variables; no effect when unset).
    ``WORKBENCH_FAULT_STAGE`` limits them to the run whose ``fault_tag`` (a stage name) matches."""
    stage = os.environ.get("WORKBENCH_FAULT_STAGE")
    return os.environ.get(f"WORKBENCH_FAULT_{name}") == str(step) and (stage is None or stage == tag)


def train(model, examples: list[dict], spec: AdapterSpec, cfg: TrainConfig, out_dir, *,
          init: Adapter | None = None, mask: dict[str, torch.Tensor] | None = None, pad_id: int = 0,
          force: bool = False, progress: bool = True, meta: dict | None = None,
          fault_tag: str | None = None) -> TrainResult:
    """Train an adapter on tokenized examples and write it to ``out_dir/adapter``.

    Args:
        model: a transformers causal LM (wrapped in place by the method's PEFT layers).
        examples: ``[{"input_ids": [...], "labels": [...]}]`` (labels -100 on prompt tokens).
        spec: adapter settings (method, rank, seed...).
        cfg: training settings.
        out_dir: stage directory: ``checkpoints/``, ``adapter/``, ``train_summary.json``.
        init: adapter to continue (continual learning); mask: lora_B key -> bool trainable entries.
        force: discard checkpoints recorded under different settings instead of refusing to resume.

    Raises:
        ConfigError: empty data, batch too small for the processes, or resume with changed settings.
        NonFiniteError: the loss became NaN/inf; the last committed checkpoint stays the newest.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not examples:
        raise ConfigError("training data is empty")
    out_dir = Path(out_dir)
    acc = Accelerator(mixed_precision="bf16" if cfg.precision == "bf16" else "no")
    parts = cfg.grad_accum * acc.num_processes
    if cfg.batch_size % parts:
        raise ConfigError(f"batch_size: {cfg.batch_size} is not a multiple of grad_accum x processes = {parts}")
    set_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    if acc.is_main_process:  # an adapter save killed in the last run left a temp directory here
        clean_stale_temps(out_dir)
    ident = _identity(model, examples, spec, cfg, init, mask, acc.num_processes)
    pm = attach(model, spec, init=init, mask=mask)
    if cfg.gradient_checkpointing:
        pm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        pm.enable_input_require_grads()
    method = get_method(spec.method)
    opt = torch.optim.AdamW(method.param_groups(pm, spec, cfg.lr, cfg.weight_decay), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = plan_steps(len(examples), cfg.batch_size, cfg.steps, cfg.epochs, cfg.seed)
    sched = _scheduler(opt, cfg, len(plan))
    method.on_train_start(pm, len(plan))
    params = {n: p for n, p in pm.named_parameters() if p.requires_grad}
    ckpt_root = out_dir / "checkpoints"
    start, trace = _maybe_resume(ckpt_root, ident, params, opt, sched, force)
    pm.train()
    pm_, opt_ = acc.prepare(pm, opt)
    lengths = [len(ex["input_ids"]) for ex in examples]
    bar = _progress(progress and acc.is_main_process, len(plan), start)
    t0, tokens_seen, peak = time.perf_counter(), 0, _rss_mb()
    for step in range(start, len(plan)):
        micro = split_micro(plan[step], lengths, parts)
        mine = micro[acc.process_index * cfg.grad_accum:(acc.process_index + 1) * cfg.grad_accum]
        global_tokens = label_tokens([examples[i] for i in plan[step]])
        local_sum = torch.zeros((), dtype=torch.float64)
        chunks = [c for idx in mine for c in length_chunks(idx, lengths, cfg)]
        for j, idx in enumerate(chunks):
            batch = _collate([examples[i] for i in idx], cfg.batching, pad_id)
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            sync = contextlib.nullcontext() if j == len(chunks) - 1 else acc.no_sync(pm_)
            with sync, acc.autocast():
                loss_sum, _ = _token_loss_sum(pm_, batch)
                if _fault("NAN_AT", step, fault_tag):
                    loss_sum = loss_sum * float("nan")
                loss = loss_sum * (acc.num_processes / max(global_tokens, 1))
                extra = method.loss_extra(pm)
                if extra is not None:  # a per-step term: split over the chunks so it counts once
                    loss = loss + extra / len(chunks)
                acc.backward(loss)
            local_sum += loss_sum.detach().double().cpu()
            tokens_seen += sum(lengths[i] for i in idx)
        step_loss = float(acc.reduce(local_sum.to(acc.device), reduction="sum")) / max(global_tokens, 1)
        if not math.isfinite(step_loss):
            raise NonFiniteError(f"non-finite loss ({step_loss}) at step {step + 1}; the last committed "
                                 f"checkpoint in {ckpt_root} is kept; lower the learning rate or check the data")
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_([p for p in pm.parameters() if p.requires_grad], cfg.max_grad_norm)
        opt_.step()
        sched.step()
        method.on_step(pm, step)  # before zero_grad: AdaLoRA's allocator scores weights by |w * grad|
        opt_.zero_grad(set_to_none=True)
        trace.append({"step": step + 1, "examples": plan[step], "loss": step_loss})
        peak = max(filter(None, (peak, _rss_mb())), default=None)
        _tick(bar, step_loss, tokens_seen, t0)
        if _should_checkpoint(cfg, step, len(plan)) and acc.is_main_process:
            save_checkpoint(ckpt_root, step + 1, params, opt, {"world": ident, "trace": trace})
            prune_checkpoints(ckpt_root, cfg.keep_checkpoints)
        if _fault("KILL_AFTER", step + 1, fault_tag):
            os.kill(os.getpid(), signal.SIGKILL)
        acc.wait_for_everyone()
    if bar is not None:
        bar.close()
    extra = {"trainable_params": sum(p.numel() for p in params.values()), "peak_rss_mb": round(peak, 1) if peak else None}
    return _finish(acc, pm, spec, out_dir, trace, ident, tokens_seen, time.perf_counter() - t0, meta or {}, extra)


def _maybe_resume(root: Path, ident: dict, params, opt, sched, force: bool) -> tuple[int, list]:
    ckpt = latest_checkpoint(root)
    if ckpt is None or not check_same_world(ckpt.state["world"], ident, root, force):
        return 0, []
    restore_checkpoint(ckpt, params, opt)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore")
        for _ in range(ckpt.step):  # the schedule is a pure function of the step count
            sched.step()
    log.info("resumed from %s (step %d)", ckpt.path, ckpt.step)
    return ckpt.step, list(ckpt.state.get("trace", []))


def _should_checkpoint(cfg: TrainConfig, step: int, total: int) -> bool:
    return cfg.checkpoint_every > 0 and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total


def _collate(examples: list[dict], batching: str, pad_id: int) -> dict:
    return collate_packed(examples) if batching == "packed" else collate_padded(examples, pad_id)


def _progress(enabled: bool, total: int, start: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)


def _tick(bar, loss: float, tokens: int, t0: float) -> None:
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f}")
        bar.update(1)


def loss_ends(losses: list[float]) -> tuple[float | None, float | None, int]:
    """Mean loss over the first and the last k steps, k = a fifth of the run (1 to 10): one batch's loss
    says more about that batch than about training."""
    if not losses:
        return None, None, 0
    k = max(1, min(10, len(losses) // 5))
    return sum(losses[:k]) / k, sum(losses[-k:]) / k, k


def _finish(acc, pm, spec, out_dir: Path, trace, ident, tokens, seconds, meta, extra) -> TrainResult:
    losses = [t["loss"] for t in trace]
    head, tail, k = loss_ends(losses)
    summary = {**extra, "steps": len(trace), "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, "loss_head": head, "loss_tail": tail, "loss_window": k,
               "tokens": tokens, "seconds": round(seconds, 3),
               "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None, "world": ident,
               "trace": trace}
    adapter = extract(pm, spec, training={k: v for k, v in summary.items() if k not in ("trace", "world")}, **meta)
    path = None
    if acc.is_main_process:
        from workbench.io.atomic import atomic_write_json

        path = adapter.save(out_dir / "adapter", overwrite=True)
        atomic_write_json(out_dir / "train_summary.json", summary)
    acc.wait_for_everyone()
    return TrainResult(adapter=adapter, adapter_path=path, summary=summary, model=pm)
