"""The training loop: one explicit loop on accelerate (fp32/bf16, accumulation, clipping, schedules,
per-group learning rates, packed batches, checkpoints, exact resume, non-finite guard, DDP).

Loss normalisation: every micro-batch contributes ``sum of token losses / D`` (times the world size,
because DDP averages gradients), D being a count over the whole global batch: its label tokens with
``loss: token_mean`` (ours), its sequences with ``loss: sequence_sum_mean`` (the official LoRI loss:
each sequence's summed token loss, averaged over sequences: ``src/mask_trainers.py`` 294-307, where
the per-process mean is averaged again by FSDP over processes). So one process with accumulation and N
processes with the same global batch compute the same gradient under either form, and a packed batch
weighs tokens exactly like a padded one.

Clipping: ``clip: global_norm`` scales every gradient by one factor so that their joint norm is at most
``max_grad_norm``; ``clip: per_tensor`` clips each trainable tensor's gradient to ``max_grad_norm`` on
its own (the official ``grad_norm_strategy=even``: ``clip_grad_norm_(p, max_grad_norm)`` per parameter,
``src/apply_mask_in_backward.py`` 84-85 and 147-148).
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
from typing import Callable

import torch
import torch.nn.functional as F

from workbench.adapters.adapter import Adapter
from workbench.adapters.live import attach, extract
from workbench.adapters.registry import get_method
from workbench.adapters.spec import AdapterSpec
from workbench.errors import ConfigError, NonFiniteError
from workbench.hashing import tensors_hash
from workbench.io.atomic import clean_stale_temps
from workbench.models.fingerprint import base_fingerprint
from workbench.progress import progress as progress_bar
from workbench.settings import keyed
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
    ident = {f"config.{k}": v for k, v in cfg.to_dict().items() if k not in RESUME_NEUTRAL_KEYS and keyed(k, v)}
    ident.update({f"spec.{k}": v for k, v in spec.to_dict().items()})
    ident.update({"data": data_hash(examples), "base": base_fingerprint(model), "world_size": world_size,
                  "init": tensors_hash(init.tensors) if init else None,
                  "mask": tensors_hash(mask) if mask else None})
    return json.loads(json.dumps(ident, default=str))


def _scheduler(opt, cfg: TrainConfig, total: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.scheduler]
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


def clip_gradients(acc, params: list, cfg: TrainConfig) -> torch.Tensor:
    """Clip the gradients of ``params`` by ``cfg.clip`` (see the module docstring) to ``cfg.max_grad_norm``.

    Returns:
        The joint norm of the gradients before clipping (what ``global_norm`` clips by).
    """
    if cfg.clip == "global_norm":
        return acc.clip_grad_norm_(params, cfg.max_grad_norm)
    acc.unscale_gradients()  # fp16: the loss scale off first, as acc.clip_grad_norm_ does (no-op otherwise)
    # per_tensor: gradients are already reduced over processes here (DDP all-reduces in backward), so each
    # process clips the same tensor by the same factor
    norms = [torch.nn.utils.clip_grad_norm_(p, cfg.max_grad_norm) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


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
    ``WORKBENCH_FAULT_STAGE`` limits them to the run whose ``fault_tag`` (a stage name) matches,
    ``WORKBENCH_FAULT_RANK`` to one process of a multi-process run."""
    stage = os.environ.get("WORKBENCH_FAULT_STAGE")
    rank = os.environ.get("WORKBENCH_FAULT_RANK")  # one worker of a multi-process run (torchrun's RANK)
    return (os.environ.get(f"WORKBENCH_FAULT_{name}") == str(step) and (stage is None or stage == tag)
            and (rank is None or rank == os.environ.get("RANK", "0")))


def train(model, examples: list[dict], spec: AdapterSpec, cfg: TrainConfig, out_dir, **kw) -> TrainResult:
    """Train an adapter on tokenized examples and write it to ``out_dir/adapter``: the method's training
    phases (:meth:`~workbench.adapters.method.Method.run`; one :func:`train_phase` for most methods, a probe
    and a full run for lora_drop), each a run of the loop below.

    Args:
        model, examples, spec, cfg, out_dir, **kw: as for :func:`train_phase`.

    Raises:
        ConfigError: unknown method or bad options (named ``options.<field>``), before any step;
            and everything :func:`train_phase` raises.
    """
    method = get_method(spec.method)
    method.options(spec)
    return method.run(train_phase, model, examples, spec, cfg, out_dir, **kw)


def train_phase(model, examples: list[dict], spec: AdapterSpec, cfg: TrainConfig, out_dir, *,
                init: Adapter | None = None, mask: dict[str, torch.Tensor] | None = None, pad_id: int = 0,
                force: bool = False, progress: bool = True, meta: dict | None = None,
                fault_tag: str | None = None, log_step: Callable[[dict, int], None] | None = None) -> TrainResult:
    """One run of the training loop: attach ``spec``'s method, train, write ``out_dir/adapter``.

    Args:
        model: a transformers causal LM (wrapped in place by the method's PEFT layers).
        examples: ``[{"input_ids": [...], "labels": [...]}]`` (labels -100 on prompt tokens).
        spec: adapter settings (method, rank, seed...).
        cfg: training settings.
        out_dir: stage directory: ``checkpoints/``, ``adapter/``, ``train_summary.json``.
        init: adapter to continue (continual learning); mask: lora_B key -> bool trainable entries.
        force: discard checkpoints recorded under different settings instead of refusing to resume.
        log_step: called on the main process after each optimizer step with ``{loss, lr, grad_norm,
            tokens_per_s}`` and the step number (experiment trackers: workbench/tracking.py).

    Raises:
        ConfigError: empty data, batch too small for the processes, or resume with changed settings.
        NonFiniteError: the loss became NaN/inf; the last committed checkpoint stays the newest.
    """
    from accelerate.utils import set_seed

    if not examples:
        raise ConfigError("training data is empty")
    out_dir = Path(out_dir)
    acc = make_accelerator(cfg.precision)
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
    method.on_train_start(pm, spec, len(plan))
    params = {n: p for n, p in pm.named_parameters() if p.requires_grad}
    if log_step is not None and acc.is_main_process:
        log_step({"trainable_params": sum(p.numel() for p in params.values())}, 0)
    ckpt_root = out_dir / "checkpoints"
    start, trace = _maybe_resume(acc, ckpt_root, ident, params, opt, sched, force)
    pm.train()
    pm_, opt_ = acc.prepare(pm, opt)
    lengths = [len(ex["input_ids"]) for ex in examples]
    bar = progress_bar(len(plan), "train", "step", initial=start, enabled=progress and acc.is_main_process)
    t0, tokens_seen, peak = time.perf_counter(), 0, _rss_mb()  # tokens_seen: this run's, every process's
    for step in range(start, len(plan)):
        micro = split_micro(plan[step], lengths, parts)
        mine = micro[acc.process_index * cfg.grad_accum:(acc.process_index + 1) * cfg.grad_accum]
        global_tokens = label_tokens([examples[i] for i in plan[step]])
        denom = max(global_tokens if cfg.loss == "token_mean" else len(plan[step]), 1)
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
                loss = loss_sum * (acc.num_processes / denom)
                extra = method.loss_extra(pm)
                if extra is not None:  # a per-step term: split over the chunks so it counts once
                    loss = loss + extra / len(chunks)
                acc.backward(loss)
            local_sum += loss_sum.detach().double().cpu()
        step_tokens = sum(lengths[i] for i in plan[step])  # the global batch: every process's micro-batches
        tokens_seen += step_tokens
        step_loss = float(acc.reduce(local_sum.to(acc.device), reduction="sum")) / denom
        if not math.isfinite(step_loss):
            raise NonFiniteError(f"non-finite loss ({step_loss}) at step {step + 1}; the last committed "
                                 f"checkpoint in {ckpt_root} is kept; lower the learning rate or check the data")
        grad_norm = None
        if cfg.max_grad_norm > 0:
            grad_norm = clip_gradients(acc, [p for p in pm.parameters() if p.requires_grad], cfg)
        opt_.step()
        sched.step()
        method.on_step(pm, step)  # before zero_grad: AdaLoRA's allocator scores weights by |w * grad|
        opt_.zero_grad(set_to_none=True)
        trace.append({"step": step + 1, "examples": plan[step], "loss": step_loss, "tokens": step_tokens,
                      **_shards(acc, chunks)})
        peak = max(filter(None, (peak, _rss_mb())), default=None)
        _tick(bar, step_loss, tokens_seen, t0)
        if log_step is not None and acc.is_main_process:
            log_step({"loss": step_loss, "lr": sched.get_last_lr()[0],
                      "grad_norm": None if grad_norm is None else float(grad_norm),
                      "tokens_per_s": tokens_seen / max(time.perf_counter() - t0, 1e-9)}, step + 1)
        if _should_checkpoint(cfg, step, len(plan)) and acc.is_main_process:
            save_checkpoint(ckpt_root, step + 1, params, opt, {"world": ident, "trace": trace})
            prune_checkpoints(ckpt_root, cfg.keep_checkpoints)
        if _fault("KILL_AFTER", step + 1, fault_tag):
            os.kill(os.getpid(), signal.SIGKILL)
        acc.wait_for_everyone()
    if bar is not None:
        bar.close()
    extra = {"trainable_params": sum(p.numel() for p in params.values()), "peak_rss_mb": round(peak, 1) if peak else None}
    extra.update(world_size=acc.num_processes, resumed_from=start or None, steps_this_run=len(plan) - start,
                 tokens_this_run=tokens_seen)
    # the base must be loaded the same way wherever the adapter goes (workbench/models/base.py, pad token)
    meta = {**(meta or {}), "pad_token": cfg.pad_token}
    return _finish(acc, pm, spec, out_dir, trace, ident, tokens_seen, time.perf_counter() - t0, meta, extra)


def make_accelerator(precision: str):
    """The run's :class:`accelerate.Accelerator`, multi-process wherever the launcher says so.

    Without an accelerator device, ``cpu=True``: accelerate 1.x only picks ``MULTI_CPU`` (gloo) under
    torchrun or ``accelerate launch --multi_gpu`` when told ``cpu=True``
    (``accelerate.state.PartialState._prepare_backend``); without it those env vars give
    ``DistributedType.NO`` and every process trains the whole batch alone as world size 1.

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16`` (the loop's ``precision`` setting).

    Raises:
        ConfigError: launched with FSDP (see below).
    """
    from accelerate import Accelerator

    from accelerate.utils import DistributedType

    from workbench.models.base import has_accelerator

    acc = Accelerator(cpu=not has_accelerator(), mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision])
    if acc.distributed_type == DistributedType.FSDP:
        # checkpoints and the adapter are read from the live parameters, which FSDP shards across the
        # processes: refuse rather than write a partial adapter (not testable on CPU, so not built yet)
        raise ConfigError("launch.fsdp: the training loop does not gather FSDP-sharded parameters for its "
                          "checkpoints and adapter yet; use data parallel (fsdp: false)")
    return acc


def _shards(acc, chunks: list[list[int]]) -> dict:
    """``{"shards": [examples process 0 trained on, process 1's, ...]}`` of one step, gathered from the
    processes themselves (so a test sees what each one did, not what the plan says); ``{}`` on one process."""
    if acc.num_processes == 1:
        return {}
    from accelerate.utils import gather_object

    return {"shards": gather_object([sorted(i for idx in chunks for i in idx)])}


def _maybe_resume(acc, root: Path, ident: dict, params, opt, sched, force: bool) -> tuple[int, list]:
    # the main process has cleaned stale temps under out_dir; the others read only once it has
    acc.wait_for_everyone()
    ckpt = latest_checkpoint(root, clean=False)
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
               # tokens: the whole stage's (a resumed run's trace holds the steps before it too);
               # tokens_per_s: this run's, over this run's time
               "tokens": sum(t.get("tokens", 0) for t in trace), "seconds": round(seconds, 3),
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
