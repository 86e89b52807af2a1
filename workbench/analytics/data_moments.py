"""Input second moments of adapted modules on a task's held-out prompts: ``Σ = Xᵀ X`` per module.

``X`` (n_tokens, in_features) stacks the inputs a module receives, at every non-padding position, while
the *base* model (no adapter) reads a small held-out batch of one task: each held-out pair formatted as
the held-out NLL scores it (prompt format + response tokens), so Σ describes the inputs on which
forgetting is measured. Forward pre-hooks see each module's input; Σ is accumulated in float64.

Stored once per (task, base fingerprint, prompts) as a safetensors file under
``$WORKBENCH_CACHE/moments/<fingerprint>/<task>-<prompts hash>.safetensors``: float32, one tensor per
distinct input (q/k/v read the same tensor, as do gate/up; the metadata's ``aliases`` maps the others),
metadata ``format``, ``task``, ``base_fingerprint``, ``n_tokens``, ``n_sequences``, ``prompts_hash``,
``aliases``, ``modules``.

Size: in_features² × 4 bytes per distinct input. Llama-3-8B, all 7 projections of 32 layers: per layer
three 4096² inputs (attention in, o_proj in, MLP in; 64 MiB each) and one 14336² (down_proj in, 784 MiB),
about 31 GiB per task; while collecting, a float64 Σ per module (not per distinct input): about 73 GiB.
SmolLM2-135M (576 / 1536, 30 layers): about 0.4 GiB per task (1 GiB while collecting). Restrict
``modules`` at large sizes.

Why hand-written: no library collects per-module input covariances of a transformers model with
padding excluded (torch hooks are the mechanism; this is the bookkeeping around them).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.errors import ConfigError, FileFormatError, MismatchError

FORMAT = "workbench-moments/1"
DEFAULT_LIMIT = 32
DEFAULT_MAX_TOKENS = 512
META_FIELDS = ("format", "task", "base_fingerprint", "n_tokens", "n_sequences", "prompts_hash", "aliases", "modules")


@dataclass
class InputMoments:
    """Σ per module for one task on one base.

    Attributes:
        task: task name.
        base_fingerprint: the base model's fingerprint (``workbench.models.fingerprint``).
        sigma: module key -> (in, in) ``Xᵀ X`` (float64 when collected, float32 when read from a file).
        n_tokens: how many positions X stacks (non-padding tokens of the batch).
        n_sequences: how many held-out sequences were read.
        prompts_hash: SHA-256 of the token ids read (text, format, tokenizer and limit in one value).
        path: the file it was read from or written to, if any.
    """

    task: str
    base_fingerprint: str
    sigma: dict[str, torch.Tensor]
    n_tokens: int
    n_sequences: int
    prompts_hash: str
    path: Path | None = field(default=None, compare=False)

    def info(self) -> dict:
        """The identity fields (for the report)."""
        return {"task": self.task, "base_fingerprint": self.base_fingerprint, "n_tokens": self.n_tokens,
                "n_sequences": self.n_sequences, "prompts_hash": self.prompts_hash,
                "n_modules": len(self.sigma), "file": str(self.path) if self.path else None}


def task_sequences(tokenizer, task, limit: int = DEFAULT_LIMIT, max_tokens: int = DEFAULT_MAX_TOKENS,
                   data_dir=None) -> list[list[int]]:
    """Token ids of the first ``limit`` held-out pairs of ``task``: formatted prompt, then the response.

    The same tokenization as the held-out NLL (``evaluate.loglik.continuation_logprobs``), cut to
    ``max_tokens`` from the right.

    Raises:
        ConfigError: unknown task, or ``max_tokens`` < 1.
        DataError: the task has no held-out pairs.
    """
    from workbench.data.prompts import format_prompt
    from workbench.data.registry import get_task
    from workbench.evaluate.generate import encode_prompt

    if max_tokens < 1:
        raise ConfigError(f"data moments: max_tokens must be >= 1, got {max_tokens}")
    task = get_task(task)
    seqs = []
    for p in task.heldout_pairs(limit=limit, data_dir=data_dir):
        ctx = encode_prompt(tokenizer, format_prompt(tokenizer, p["prompt"], p.get("input", "")))
        seqs.append((ctx + tokenizer(p["response"], add_special_tokens=False)["input_ids"])[:max_tokens])
    return seqs


def prompts_hash(sequences: list[list[int]]) -> str:
    """SHA-256 of the token ids, in order."""
    return hashlib.sha256(json.dumps(sequences, separators=(",", ":")).encode()).hexdigest()


def _linear_modules(model, modules: list[str]) -> dict[str, torch.nn.Module]:
    if hasattr(model, "get_base_model"):
        raise ConfigError("data moments: pass the base model itself, not a PEFT-wrapped one "
                          "(Σ is of the base's inputs)")
    named = dict(model.named_modules())
    missing = [m for m in modules if m not in named]
    if missing:
        raise MismatchError(f"data moments: the base model has no module {missing[0]!r} "
                            f"({len(missing)} of {len(modules)} adapted modules missing; another base?)")
    return {m: named[m] for m in modules}


@torch.no_grad()
def collect_moments(model, sequences: list[list[int]], modules: list[str], pad_id: int = 0,
                    batch_size: int = 8) -> tuple[dict[str, torch.Tensor], int]:
    """``Σ_m = Σ_tokens x xᵀ`` of every module's input over ``sequences`` (padding excluded), float64.

    Args:
        model: the base causal LM (not PEFT-wrapped), in eval mode.
        sequences: token id lists (right-padded into batches here).
        modules: module keys (``model.layers.0.self_attn.q_proj``) to hook.
        pad_id: the id used for padding (masked out, so its value does not matter).
        batch_size: sequences per forward pass.

    Returns:
        ``({module: (in, in) float64 on CPU}, n_tokens)``.

    Raises:
        ConfigError: no sequences, or a PEFT-wrapped model.
        MismatchError: a module is not in the model.
    """
    if not sequences or not any(sequences):
        raise ConfigError("data moments: no tokens to collect input moments from")
    targets = _linear_modules(model, modules)
    device = next(model.parameters()).device
    sigma: dict[str, torch.Tensor] = {}
    state: dict = {"mask": None, "last": None}

    def hook(name):
        def pre(_module, args):
            x = args[0]
            # q/k/v (and gate/up) are called in a row on one tensor: its XᵀX is computed once. Only the
            # last is kept (one in x in matrix), so another call order just recomputes.
            last = state["last"]
            if last is None or last[0] is not x:
                rows = x[state["mask"]].to(torch.float64)                  # (n_tokens, in)
                last = state["last"] = (x, rows.T @ rows)                   # (in, n) @ (n, in) -> (in, in)
            sigma[name] = last[1].clone() if name not in sigma else sigma[name].add_(last[1])
        return pre

    handles = [mod.register_forward_pre_hook(hook(name)) for name, mod in targets.items()]
    n_tokens = 0
    try:
        for start in range(0, len(sequences), batch_size):
            batch = [s for s in sequences[start:start + batch_size] if s]
            if not batch:
                continue
            width = max(len(s) for s in batch)
            ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in batch], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=device)
            state["mask"], state["last"] = mask.bool(), None
            model(input_ids=ids, attention_mask=mask, use_cache=False)     # right padding: causal rows unaffected
            n_tokens += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
        state["last"] = None
    return {m: s.cpu() for m, s in sigma.items()}, n_tokens


def moments_path(cache: str | os.PathLike, task: str, fingerprint: str, phash: str) -> Path:
    """Where the moments of (task, base, prompts) live under the cache directory ``cache``."""
    return Path(cache) / "moments" / fingerprint / f"{task}-{phash[:16]}.safetensors"


def _dedupe(sigma: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One stored tensor per distinct Σ; ``aliases`` maps a module to the module whose tensor it shares."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for m in sorted(sigma):
        s = sigma[m].to(torch.float32)
        twin = next((k for k, t in stored.items() if t.shape == s.shape and torch.equal(t, s)), None)
        if twin is None:
            stored[m] = s
        else:
            aliases[m] = twin
    return stored, aliases


def save_moments(path: str | os.PathLike, m: InputMoments) -> Path:
    """Write ``m`` as float32 safetensors with its identity in the metadata (atomic). Returns the path."""
    from workbench.io.tensors import save_tensors

    stored, aliases = _dedupe(m.sigma)
    meta = {"format": FORMAT, "task": m.task, "base_fingerprint": m.base_fingerprint, "n_tokens": str(m.n_tokens),
            "n_sequences": str(m.n_sequences), "prompts_hash": m.prompts_hash,
            "aliases": json.dumps(aliases, sort_keys=True), "modules": json.dumps(sorted(m.sigma))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, stored, meta)
    m.path = path
    return path


def load_moments(path: str | os.PathLike) -> InputMoments:
    """Read a moments file written by :func:`save_moments`, checking its metadata and shapes.

    Raises:
        FileFormatError: unreadable file, a missing or malformed metadata field, a non-square Σ, or a
            module listed in ``modules`` without a tensor.
    """
    from workbench.io.tensors import load_tensors

    path = Path(path)
    tensors, meta = load_tensors(path)
    missing = [f for f in META_FIELDS if f not in meta]
    if missing:
        raise FileFormatError(f"{path}: moments file lacks metadata field '{missing[0]}'")
    if meta["format"] != FORMAT:
        raise FileFormatError(f"{path}: metadata field 'format' is {meta['format']!r}, expected {FORMAT!r}")
    try:
        aliases, modules = json.loads(meta["aliases"]), json.loads(meta["modules"])
        n_tokens, n_seq = int(meta["n_tokens"]), int(meta["n_sequences"])
    except (ValueError, TypeError) as exc:
        raise FileFormatError(f"{path}: malformed moments metadata ({exc})") from None
    sigma = {}
    for mod in modules:
        t = tensors.get(aliases.get(mod, mod))
        if t is None:
            raise FileFormatError(f"{path}: module '{mod}' has no Σ tensor")
        if t.dim() != 2 or t.shape[0] != t.shape[1]:
            raise FileFormatError(f"{path}: Σ of '{mod}' has shape {tuple(t.shape)}, expected square")
        sigma[mod] = t
    return InputMoments(meta["task"], meta["base_fingerprint"], sigma, n_tokens, n_seq, meta["prompts_hash"], path)


def task_moments(model, tokenizer, task: str, modules: list[str], cache: str | os.PathLike | None = None,
                 limit: int = DEFAULT_LIMIT, max_tokens: int = DEFAULT_MAX_TOKENS, data_dir=None,
                 batch_size: int = 8) -> InputMoments:
    """Σ of every module in ``modules`` on ``task``'s held-out prompts: read from the cache, else collected
    on ``model`` (the base, no adapter) and stored.

    Args:
        model, tokenizer: the base model and its tokenizer.
        task: a registered task name, or a Task value (a custom task, or one with a pipeline's options).
        modules: module keys to cover (a cached file missing some is recollected for all of them).
        cache: cache root (default ``$WORKBENCH_CACHE``, see ``workbench.models.base.cache_dir``).
        limit: held-out pairs to read; max_tokens: tokens per pair (cut from the right).
        data_dir: full-data root of the task (default: shipped samples or ``$WORKBENCH_DATA``).
        batch_size: sequences per forward pass.

    Returns:
        The :class:`InputMoments` (``path`` set to the cache file).

    Raises:
        ConfigError, DataError: unknown task or no held-out data.
        MismatchError: the model lacks a module, or a cached file names another base.
        FileFormatError: a corrupt cache file.
    """
    from workbench.models.base import cache_dir
    from workbench.models.fingerprint import base_fingerprint

    fp = base_fingerprint(model)
    seqs = task_sequences(tokenizer, task, limit, max_tokens, data_dir)
    phash = prompts_hash(seqs)
    name = getattr(task, "name", task)  # a Task value: its name names the file, its tokens the hash
    path = moments_path(cache or cache_dir(), name, fp, phash)
    if path.is_file():
        cached = load_moments(path)
        if cached.base_fingerprint != fp or cached.prompts_hash != phash:
            raise MismatchError(f"{path}: moments of base {cached.base_fingerprint}, expected {fp}")
        if set(modules) <= set(cached.sigma):
            return cached
    sigma, n_tokens = collect_moments(model, seqs, sorted(set(modules)), tokenizer.pad_token_id or 0, batch_size)
    m = InputMoments(name, fp, sigma, n_tokens, len(seqs), phash)
    save_moments(path, m)
    return m
