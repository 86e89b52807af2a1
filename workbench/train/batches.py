"""Deterministic batch plans and collation without wasted pad tokens.

The plan (which examples form each micro-batch of each optimizer step) depends only on the seed, the
example lengths and the batch settings, so a resumed run replays exactly the same order and a multi-process
run splits exactly the same global batches.
"""

from __future__ import annotations

import math

import torch

IGNORE = -100


def plan_steps(n_examples: int, batch_size: int, steps: int, epochs: float, seed: int) -> list[list[int]]:
    """Global batches (lists of example indices), one per optimizer step.

    Each epoch is a fresh permutation from ``(seed, epoch)``; a batch never spans two epochs' orders.
    """
    if n_examples == 0:
        return []
    per_epoch = max(1, n_examples // batch_size)
    total = steps if steps > 0 else max(1, math.ceil(per_epoch * epochs))
    out: list[list[int]] = []
    epoch = 0
    while len(out) < total:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n_examples, generator=g).tolist()
        for i in range(per_epoch):
            chunk = perm[i * batch_size:(i + 1) * batch_size]
            if len(chunk) < batch_size:  # fewer examples than a batch: wrap within the permutation
                chunk = (perm * batch_size)[:batch_size]
            out.append(chunk)
            if len(out) == total:
                break
        epoch += 1
    return out


def split_micro(batch: list[int], lengths: list[int], parts: int) -> list[list[int]]:
    """Split one global batch into ``parts`` micro-batches of equal size and near-equal token counts.

    Examples are sorted by length (ties by index) and dealt greedily to the lightest part that is not yet
    full, so each micro-batch holds ``len(batch) / parts`` examples (each of N processes sees 1/N of every
    global batch), similar lengths (little padding when padded) and similar work across processes.
    ``len(batch)`` must be a multiple of ``parts`` (the loop checks ``batch_size``).
    """
    order = sorted(batch, key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    size = -(-len(batch) // parts)
    for i in order:
        j = min((p for p in range(parts) if len(bins[p]) < size), key=lambda p: (load[p], p))
        bins[j].append(i)
        load[j] += lengths[i]
    return bins


def length_chunks(idx: list[int], lengths: list[int], cfg) -> list[list[int]]:
    """Split one micro-batch into length-sorted padded chunks of at most ``cfg.micro_tokens`` padded tokens.

    The loss is normalised by the label tokens of the whole global batch, so how a step is cut into chunks
    does not change its gradient; cutting by length only removes padding (and bounds activation memory).
    Packed batches and ``micro_tokens=0`` are left whole.
    """
    if cfg.batching != "padded" or cfg.micro_tokens <= 0:
        return [idx]
    out: list[list[int]] = []
    for i in sorted(idx, key=lambda i: (-lengths[i], i)):
        if out and (len(out[-1]) + 1) * lengths[out[-1][0]] <= cfg.micro_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def collate_packed(examples: list[dict]) -> dict[str, torch.Tensor]:
    """One row: sequences concatenated, position ids restart per sequence (transformers then keeps
    attention within each sequence). The first label of each sequence is ignored so no token is
    predicted across a boundary."""
    ids, labels, pos = [], [], []
    for ex in examples:
        n = len(ex["input_ids"])
        ids.extend(ex["input_ids"])
        lab = list(ex["labels"])
        lab[0] = IGNORE
        labels.extend(lab)
        pos.extend(range(n))
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([pos])}


def collate_padded(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded rows (to the longest in this micro-batch) with an attention mask."""
    width = max(len(ex["input_ids"]) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, ex in enumerate(examples):
        n = len(ex["input_ids"])
        ids[r, :n] = torch.tensor(ex["input_ids"])
        labels[r, :n] = torch.tensor(ex["labels"])
        mask[r, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def label_tokens(examples: list[dict]) -> int:
    """Tokens that carry loss (after the shift: the first label of each sequence never counts)."""
    return sum(sum(1 for x in ex["labels"][1:] if x != IGNORE) for ex in examples)
