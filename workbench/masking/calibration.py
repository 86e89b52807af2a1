"""Magnitude calibration of LoRI-S masks, with disjoint allocation across tasks.

LoRI (arXiv:2504.07448, Sec. 3.2) trains a dense adapter (LoRI-D), then keeps the largest-magnitude
entries of every B, ranked globally across layers and projections, and retrains only those (LoRI-S).

Exactness: each group keeps exactly ``round_half_up((1 - sparsity) * n)`` entries, ``n`` being the
group's size. Entries are ordered by |B| descending, ties broken by flat index ascending, the flat index
running over the group's tensors concatenated in sorted key order. The official code thresholds with
``|B| >= t`` instead, which keeps far too many entries when B has many equal values (e.g. mostly zeros).

Disjoint allocation: entries owned by an ``exclude`` mask are never chosen, so a chain of tasks gets
pairwise-disjoint masks whose densities add up. Sparsity keeps its meaning relative to the whole group
(density ``1 - sparsity`` of all entries); when the excluded masks leave too few free entries, that is an
error rather than a silently smaller mask.

Tie rules (``TIE_RULES``): ``exact`` is the rule above (the default). ``official`` reproduces
juzhengz/LoRI @ 9183468 ``src/extract_mask.py`` ``get_model_mask`` (lines 65-100): excluded entries count
as zeros, ``k = int((1 - sparsity) * n)`` (floor), the threshold is the k-th largest value
(``torch.topk(...).values[-1]``) and every entry with ``|B| >= threshold`` outside the excluded masks is
kept, so ties at the threshold all survive and the count can exceed k.

Several sparsities in one pass (:func:`calibrate_many`, as ``extract_mask.py`` does for its ten ratios):
one ranking per group, then one cut per sparsity; each mask equals :func:`calibrate` with that sparsity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from workbench.errors import ConfigError, MismatchError, NonFiniteError, WorkbenchError, unknown_name
from workbench.masking.checks import check_mask_matches
from workbench.masking.mask import Mask
from workbench.masking.scopes import group_keys


def round_half_up(x: float) -> int:
    """Nearest integer, halves rounded up (Python's ``round`` rounds halves to even)."""
    return int(math.floor(x + 0.5))


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float in [0, 1).

    Raises:
        ConfigError: not a number, NaN, or outside [0, 1).
    """
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ConfigError(f"sparsity: expected a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ConfigError(f"sparsity: must be in [0, 1) (the fraction of B entries frozen), got {sparsity!r}")
    return value


TIE_RULES = ("exact", "official")


def check_tie_rule(tie_rule: str) -> str:
    """Return ``tie_rule`` if known.

    Raises:
        ConfigError: unknown rule (with the valid names).
    """
    if tie_rule not in TIE_RULES:
        raise unknown_name("calibration tie rule", tie_rule, TIE_RULES)
    return tie_rule


def calibrate(b_tensors: Mapping[str, torch.Tensor], sparsity: float, scope: str = "global",
              exclude: Sequence[Mask] | None = None, tie_rule: str = "exact") -> Mask:
    """Keep the top ``1 - sparsity`` fraction of |B| in each scope group, outside the ``exclude`` masks.

    Args:
        b_tensors: lora_B file key -> B ``(out, r)``; any float dtype.
        sparsity: fraction of entries to freeze, in [0, 1) (LoRI uses 0.9).
        scope: registered scope name (``global``, ``module``, ``projection``, ``layer``, ``matrix``).
        exclude: masks whose trainable entries are unavailable (earlier tasks in a chain).
        tie_rule: ``exact`` or ``official`` (module docstring).

    Returns:
        A Mask with meta ``sparsity``, ``scope`` and ``excluded`` (the excluded masks' content hashes);
        ``source_adapter_hash`` and ``base_fingerprint`` are None (see :func:`calibrate_adapter`); meta
        ``tie_rule`` only when it is ``official``.

    Raises:
        ConfigError: sparsity outside [0, 1), unknown scope, no tensors, or excluded masks leaving too
            few free entries in a group (densities adding up to more than 1).
        MismatchError: an excluded mask whose keys or shapes differ from ``b_tensors``.
        NonFiniteError: a B tensor holds NaN or inf.
    """
    if check_tie_rule(tie_rule) == "official":
        return calibrate_many(b_tensors, [sparsity], scope, exclude, tie_rule)[0]
    sparsity = check_sparsity(sparsity)
    if not b_tensors:
        raise ConfigError("calibrate: no lora_B tensors given")
    exclude = list(exclude or [])
    taken = _taken_positions(b_tensors, exclude)
    tensors: dict[str, torch.Tensor] = {}
    for name, keys in group_keys(b_tensors, scope).items():
        tensors.update(_calibrate_group(name, keys, b_tensors, taken, sparsity, len(exclude)))
    return Mask(tensors, _meta(sparsity, scope, exclude, tie_rule))


def _meta(sparsity: float, scope: str, exclude: list[Mask], tie_rule: str) -> dict:
    meta = {"sparsity": sparsity, "scope": scope, "source_adapter_hash": None, "base_fingerprint": None,
            "excluded": [m.content_hash() for m in exclude]}
    return {**meta, "tie_rule": tie_rule} if tie_rule != "exact" else meta


def calibrate_many(b_tensors: Mapping[str, torch.Tensor], sparsities: Sequence[float], scope: str = "global",
                   exclude: Sequence[Mask] | None = None, tie_rule: str = "exact") -> list[Mask]:
    """:func:`calibrate` for several sparsities from one ranking per group (one sort, one cut per sparsity).

    Returns:
        One Mask per sparsity, in the given order, each equal to ``calibrate(b_tensors, s, ...)``.

    Raises:
        ConfigError: as :func:`calibrate`, no sparsities, a sparsity given twice, or (``official``) a
            sparsity that keeps no entry of a group (the official ``topk`` fails there too).
    """
    check_tie_rule(tie_rule)
    values = [check_sparsity(s) for s in sparsities]
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"sparsity: expected distinct values, got {list(sparsities)}")
    if not b_tensors:
        raise ConfigError("calibrate: no lora_B tensors given")
    exclude = list(exclude or [])
    taken = _taken_positions(b_tensors, exclude)
    parts: list[dict[str, torch.Tensor]] = [{} for _ in values]
    for name, keys in group_keys(b_tensors, scope).items():
        cut = _official_cuts if tie_rule == "official" else _exact_cuts
        for out, masks in zip(parts, cut(name, keys, b_tensors, taken, values, len(exclude))):
            out.update(masks)
    return [Mask(t, _meta(s, scope, exclude, tie_rule)) for t, s in zip(parts, values)]


def _group_scores(keys, b_tensors, taken) -> tuple[torch.Tensor, torch.Tensor | None]:
    scores = torch.cat([_magnitude(k, b_tensors[k]) for k in keys])  # (n,) in sorted key order
    free = None if taken is None else torch.cat([~taken[key].reshape(-1).cpu() for key in keys])
    return scores, free


def _split_back(keep: torch.Tensor, keys, b_tensors) -> dict[str, torch.Tensor]:
    parts = torch.split(keep, [b_tensors[key].numel() for key in keys])
    return {key: part.reshape(b_tensors[key].shape) for key, part in zip(keys, parts)}


def _exact_cuts(name, keys, b_tensors, taken, sparsities, n_excluded) -> list[dict[str, torch.Tensor]]:
    scores, free = _group_scores(keys, b_tensors, taken)
    n = scores.numel()
    candidates = np.arange(n) if free is None else np.flatnonzero(free.numpy())
    # one stable sort: largest first, equal magnitudes by lowest flat index (the order top_k_flat keeps)
    order = candidates[np.argsort(-scores.numpy()[candidates], kind="stable")]
    out = []
    for sparsity in sparsities:
        k = round_half_up((1.0 - sparsity) * n)
        if k > len(candidates):
            raise ConfigError(
                f"sparsity: group '{name}' needs {k} of {n} entries but the {n_excluded} excluded mask(s) leave "
                f"only {len(candidates)} free (densities add up to more than 1); raise sparsity or exclude fewer masks")
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.from_numpy(order[:k].copy())] = True
        out.append(_split_back(keep, keys, b_tensors))
    return out


def _official_cuts(name, keys, b_tensors, taken, sparsities, n_excluded) -> list[dict[str, torch.Tensor]]:
    scores, free = _group_scores(keys, b_tensors, taken)
    if free is not None:
        scores = scores.masked_fill(~free, 0.0)  # extract_mask.py line 74: excluded entries ranked as zeros
    n = scores.numel()
    ranked = np.sort(scores.numpy())[::-1]
    out = []
    for sparsity in sparsities:
        k = int((1 - sparsity) * n)  # extract_mask.py line 81 (floor)
        if k < 1:
            raise ConfigError(f"sparsity {sparsity}: group '{name}' of {n} entries keeps no entry under the "
                              "official rule (k = int((1 - sparsity) * n) = 0)")
        keep = scores >= float(ranked[k - 1])  # lines 82 and 89: ties at the threshold are all kept
        out.append(_split_back(keep if free is None else keep & free, keys, b_tensors))
    return out


def _taken_positions(b_tensors, exclude: list[Mask]) -> dict[str, torch.Tensor] | None:
    if not exclude:
        return None
    for i, m in enumerate(exclude):
        check_mask_matches(m, b_tensors, f"excluded mask {i + 1} ({m.content_hash()[:12]})")
    return {k: torch.stack([m.tensors[k] for m in exclude]).any(dim=0) for k in b_tensors}


def _calibrate_group(name: str, keys: list[str], b_tensors, taken, sparsity: float,
                     n_excluded: int) -> dict[str, torch.Tensor]:
    scores = torch.cat([_magnitude(k, b_tensors[k]) for k in keys])  # (n,) in sorted key order
    n = scores.numel()
    k = round_half_up((1.0 - sparsity) * n)
    free = None if taken is None else torch.cat([~taken[key].reshape(-1).cpu() for key in keys])
    available = n if free is None else int(torch.count_nonzero(free))
    if k > available:
        raise ConfigError(
            f"sparsity: group '{name}' needs {k} of {n} entries but the {n_excluded} excluded mask(s) leave "
            f"only {available} free (densities add up to more than 1); raise sparsity or exclude fewer masks")
    keep = top_k_flat(scores, k, free)
    parts = torch.split(keep, [b_tensors[key].numel() for key in keys])
    return {key: part.reshape(b_tensors[key].shape) for key, part in zip(keys, parts)}


def _magnitude(key: str, b: torch.Tensor) -> torch.Tensor:
    b = b.detach().cpu().reshape(-1)
    # float32 holds bf16/fp16 magnitudes exactly; float64 B stays float64 so no two values collapse.
    scores = b.abs().to(torch.promote_types(b.dtype, torch.float32))
    if not torch.isfinite(scores).all():
        raise NonFiniteError(f"calibrate: tensor '{key}' has NaN or infinite values")
    return scores


def top_k_flat(scores: torch.Tensor, k: int, free: torch.Tensor | None = None) -> torch.Tensor:
    """Exactly ``k`` True entries: largest ``scores`` first, ties by lowest index, only where ``free``.

    Args:
        scores: (n,) non-negative magnitudes.
        k: how many to keep; at most the number of free entries.
        free: (n,) bool, or None for all free.

    Returns:
        (n,) bool.
    """
    n = scores.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool)
    if free is not None:
        # Magnitudes are >= 0, so -1 ranks every taken entry below every free one; since k <= free
        # entries, the k-th largest value t is >= 0 and no taken entry is > t or == t.
        scores = scores.masked_fill(~free, -1.0)
    # O(n) selection of the k-th largest value (numpy's introselect is ~3x faster than torch.kthvalue).
    t = float(np.partition(scores.numpy(), n - k)[n - k])
    keep = scores > t
    need = k - int(torch.count_nonzero(keep))
    ties = torch.nonzero(scores == t).reshape(-1)[:need]  # nonzero returns indices ascending
    keep[ties] = True
    return keep


def adapter_weights_hash(adapter) -> str:
    """SHA-256 of the adapter's weights file (from its sidecar when recorded, else computed)."""
    from workbench.io.adapter_dir import WEIGHTS
    from workbench.hashing import sha256_bytes, sha256_file

    recorded = (adapter.meta.get("files") or {}).get(WEIGHTS)
    if recorded:
        return recorded
    if adapter.path is not None and (Path(adapter.path) / WEIGHTS).is_file():
        return sha256_file(Path(adapter.path) / WEIGHTS)
    from safetensors.torch import save as st_save

    return sha256_bytes(st_save({k: v.detach().contiguous().cpu() for k, v in adapter.tensors.items()}))


def _adapter_b(adapter, exclude: list[Mask]) -> dict[str, torch.Tensor]:
    for m in exclude:
        fp = m.meta.get("base_fingerprint")
        if fp and adapter.fingerprint and fp != adapter.fingerprint:
            raise MismatchError(f"excluded mask {m.content_hash()[:12]} was made for base {fp}, "
                                f"but the adapter's base is {adapter.fingerprint}")
    b = {k: adapter.tensors[k] for k in adapter.b_keys()}
    if not b:
        raise ConfigError(f"{adapter.path or adapter.name}: adapter has no lora_B tensors to calibrate")
    return b


def calibrate_adapter(adapter, sparsity: float, scope: str = "global", exclude: Sequence[Mask] | None = None,
                      tie_rule: str = "exact") -> Mask:
    """:func:`calibrate` on an adapter's lora_B tensors, recording its weights hash and base fingerprint.

    Raises:
        MismatchError: an excluded mask made for another base model, or with other keys or shapes.
        (and everything :func:`calibrate` raises)
    """
    return calibrate_adapter_many(adapter, [sparsity], scope, exclude, tie_rule, single=True)[0]


def calibrate_adapter_many(adapter, sparsities: Sequence[float], scope: str = "global",
                           exclude: Sequence[Mask] | None = None, tie_rule: str = "exact",
                           single: bool = False) -> list[Mask]:
    """:func:`calibrate_many` on an adapter (``single``: one sparsity through :func:`calibrate`)."""
    exclude = list(exclude or [])
    b = _adapter_b(adapter, exclude)
    masks = ([calibrate(b, sparsities[0], scope, exclude, tie_rule)] if single
             else calibrate_many(b, sparsities, scope, exclude, tie_rule))
    source = adapter_weights_hash(adapter)
    return [m.with_meta(source_adapter_hash=source, base_fingerprint=adapter.fingerprint) for m in masks]


def calibrate_to_file(adapter_dir, out, sparsity: float, scope: str = "global",
                      exclude_paths: Sequence = (), tie_rule: str = "exact") -> Mask:
    """Load an adapter directory, calibrate a mask on it and write it to ``out`` (never overwritten).

    Raises:
        WorkbenchError: ``out`` already exists (and everything :func:`calibrate_adapter`,
            :func:`~workbench.adapters.adapter.load_adapter` and :func:`~workbench.masking.file.load_mask` raise).
    """
    from workbench.adapters.adapter import load_adapter
    from workbench.masking.file import load_mask, save_mask

    out = Path(out)
    if out.exists():
        raise WorkbenchError(f"{out}: output already exists (choose another --out or remove it)")
    check_sparsity(sparsity)
    check_tie_rule(tie_rule)
    adapter = load_adapter(adapter_dir)
    exclude = [load_mask(p, adapter=adapter) for p in exclude_paths]
    mask = calibrate_adapter(adapter, sparsity, scope, exclude, tie_rule)
    save_mask(out, mask)
    return mask


def mask_file_name(sparsity: float) -> str:
    """The file :func:`calibrate_to_dir` writes for one sparsity (``sparsity_0.9.mask.safetensors``)."""
    return f"sparsity_{float(sparsity):g}.mask.safetensors"


def calibrate_to_dir(adapter_dir, out_dir, sparsities: Sequence[float], scope: str = "global",
                     exclude_paths: Sequence = (), tie_rule: str = "exact") -> dict[float, tuple[Path, Mask]]:
    """Calibrate one mask per sparsity from one ranking and write each to ``out_dir/mask_file_name(s)``.

    Returns:
        sparsity -> (written path, mask), in the given order.

    Raises:
        WorkbenchError: one of the files already exists (nothing is written then); and everything
            :func:`calibrate_many` and :func:`calibrate_to_file` raise.
    """
    from workbench.adapters.adapter import load_adapter
    from workbench.masking.file import load_mask, save_mask

    values = [check_sparsity(s) for s in sparsities]
    check_tie_rule(tie_rule)
    out_dir = Path(out_dir)
    paths = [out_dir / mask_file_name(s) for s in values]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise WorkbenchError(f"{existing[0]}: output already exists (choose another --out-dir or remove it)")
    adapter = load_adapter(adapter_dir)
    exclude = [load_mask(p, adapter=adapter) for p in exclude_paths]
    masks = calibrate_adapter_many(adapter, values, scope, exclude, tie_rule)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, mask in zip(paths, masks):
        save_mask(path, mask)
    return {s: (path, mask) for s, path, mask in zip(values, paths, masks)}
