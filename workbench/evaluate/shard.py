"""Evaluation split over data-parallel processes: each process computes every N-th batch, and the results
are gathered back into prompt order on every process.

The batches are the ones a single process forms (same length-sorted order, same boundaries), so each
batch's padding, and therefore each number, is bitwise the one-process number; only which process computes
which batch changes. Every process then holds the full, ordered results, so the task evaluators (judges,
the code sandbox, metrics) run unchanged after the gather; only the main process writes files.

Built on ``torch.distributed`` (the process group accelerate's launcher sets up, gloo on CPU, NCCL on
GPUs): two ``all_gather`` calls carry each process's results as JSON bytes, not ``all_gather_object``'s
pickle (the workbench unpickles nothing, even from its own processes; workbench/stages/launch.py). JSON
round-trips what evaluation returns exactly (strings; Python floats by their shortest repr).
"""

from __future__ import annotations

import json
from typing import Callable

import torch

# batches this process computed since the last reset() / record()
_computed = 0


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, ``(0, 1)`` without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def mine(n_batches: int) -> list[int]:
    """The batch indices (of ``n_batches``, in order) this process computes: every world-size-th one."""
    rank, size = world()
    return list(range(rank, n_batches, size))


def map_batches(order: list[int], batch_size: int, fn: Callable[[int, list[int]], list]) -> dict[int, object]:
    """``{item: result}`` for every item of ``order``, cut into batches of ``batch_size`` as one process
    would; ``fn(batch index, items)`` returns one result per item and runs here only for this process's
    batches (:func:`mine`); the others' results arrive by :func:`gather`."""
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    done = {b: fn(b, chunks[b]) for b in mine(len(chunks))}
    return {i: r for chunk, outs in zip(chunks, gather(done, len(chunks))) for i, r in zip(chunk, outs)}


def gather(local: dict[int, object], n_batches: int) -> list:
    """Every process's ``{batch index: result}`` joined into a list in batch order (on every process).

    With one process it is ``local`` in order. Raises ``RuntimeError`` when a batch is missing (a process
    skipped one: the split would silently lose prompts otherwise).
    """
    global _computed
    _computed += len(local)
    if world()[1] > 1:
        joined = {int(i): r for part in all_gather_json({str(i): r for i, r in local.items()}) for i, r in part.items()}
    else:
        joined = local
    missing = [i for i in range(n_batches) if i not in joined]
    if missing:
        raise RuntimeError(f"evaluation split: batches {missing} of {n_batches} were computed by no process")
    return [joined[i] for i in range(n_batches)]


def reset() -> None:
    """Start counting afresh (an evaluate stage's start: a training stage's held-out NLL in the same
    process is computed in batches too, and is not this stage's)."""
    global _computed
    _computed = 0


def record() -> dict:
    """How the evaluation so far was split: ``{"world_size", "batches": [per rank]}``, gathered from the
    processes themselves (a collective: every process calls it). Resets the count."""
    size = world()[1]
    counts = [int(c) for c in all_gather_json(_computed)] if size > 1 else [_computed]
    reset()
    return {"world_size": size, "batches": counts}


def all_gather_json(obj) -> list:
    """``obj`` of every process, in rank order: JSON bytes in a uint8 tensor, padded to the longest (the
    lengths gathered first), on the device the backend needs (NCCL: this process's GPU)."""
    dist = torch.distributed
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8).to(device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.long, device=device))
    width = max(int(n) for n in sizes)
    padded = torch.zeros(width, dtype=torch.uint8, device=device)
    padded[:data.numel()] = data
    parts = [torch.empty(width, dtype=torch.uint8, device=device) for _ in sizes]
    dist.all_gather(parts, padded)
    return [json.loads(bytes(p[:int(n)].cpu().numpy())) for p, n in zip(parts, sizes)]


def init_process_group() -> None:
    """Join the launcher's process group (``accelerate launch``/torchrun environment) when there is one:
    accelerate's ``PartialState``, with ``cpu=True`` where there is no accelerator (else it reports one
    process; ``workbench.models.base.has_accelerator``)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or world()[1] > 1:
        return
    from accelerate import PartialState

    from workbench.models.base import has_accelerator

    PartialState(cpu=not has_accelerator())


def device() -> str | None:
    """This process's device under a launcher with accelerators (``cuda:LOCAL_RANK``), else None."""
    import os

    if world()[1] > 1 and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None
