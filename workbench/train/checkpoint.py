"""Training checkpoints: trainable parameters, optimizer state, RNG, step, and the run's identity.

A checkpoint is ``checkpoints/step-00000040/`` holding safetensors and JSON only; ``COMMITTED.json`` (the
SHA-256 of every other file) is written last. A folder without it, or whose hashes fail, is ignored with a
logged reason: unlike the HF Trainer, we never resume from the highest-numbered folder just because it exists.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.errors import ConfigError
from workbench.hashing import sha256_file
from workbench.io.atomic import atomic_write_json, clean_stale_temps
from workbench.io.tensors import load_tensors, save_tensors

log = logging.getLogger(__name__)
COMMIT = "COMMITTED.json"


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def save_checkpoint(root: Path, step: int, params: dict[str, torch.Tensor], optimizer, state: dict) -> Path:
    """Write a checkpoint for ``step`` (rank 0 only), then drop it from nothing: commit marker last."""
    path = _step_dir(root, step)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    files = {
        "params.safetensors": save_tensors(path / "params.safetensors", params),
        "optimizer.safetensors": save_tensors(path / "optimizer.safetensors", _optimizer_tensors(optimizer, params)),
        "rng.safetensors": save_tensors(path / "rng.safetensors", {"torch": torch.get_rng_state()}),
    }
    atomic_write_json(path / "state.json", {**state, "step": step, "param_groups": _groups(optimizer)})
    files["state.json"] = sha256_file(path / "state.json")
    atomic_write_json(path / COMMIT, {"step": step, "files": files})
    return path


def _optimizer_tensors(optimizer, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    name_of = {id(p): n for n, p in params.items()}
    out = {}
    for p, st in optimizer.state.items():
        for k, v in st.items():
            if torch.is_tensor(v):
                out[f"{name_of[id(p)]}::{k}"] = v.detach().cpu().reshape(v.shape) if v.dim() else v.detach().cpu().reshape(1)
    return out


def _groups(optimizer) -> list[dict]:
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def restore_checkpoint(ckpt: Checkpoint, params: dict[str, torch.Tensor], optimizer) -> None:
    """Load parameters, optimizer state and RNG from a committed checkpoint into the live objects."""
    files = json.loads((ckpt.path / COMMIT).read_text())["files"]
    saved, _ = load_tensors(ckpt.path / "params.safetensors", expected_keys=params, sha256=files["params.safetensors"])
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n])
    opt_t, _ = load_tensors(ckpt.path / "optimizer.safetensors", sha256=files["optimizer.safetensors"])
    for key, v in opt_t.items():
        name, k = key.split("::")
        p = params[name]
        st = optimizer.state.setdefault(p, {})
        st[k] = v.reshape(()) if k == "step" else v.to(p.device)
    for g, saved_g in zip(optimizer.param_groups, ckpt.state["param_groups"]):
        g.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved_g.items()})
    rng, _ = load_tensors(ckpt.path / "rng.safetensors", sha256=files["rng.safetensors"])
    torch.set_rng_state(rng["torch"])


def latest_checkpoint(root: Path, clean: bool = True) -> Checkpoint | None:
    """The newest *committed and verified* checkpoint under ``root``; incomplete ones are skipped, logged.

    Args:
        clean: first delete temporary files an interrupted write left (the main process only: the others
            of a multi-process run read, never delete).
    """
    if not root.is_dir():
        return None
    if clean:
        clean_stale_temps(root)
    for path in sorted(root.glob("step-*"), reverse=True):
        reason = _verify(path)
        if reason is None:
            state = json.loads((path / "state.json").read_text())
            return Checkpoint(path, int(state["step"]), state)
        log.warning("ignoring checkpoint %s: %s", path, reason)
    return None


def _verify(path: Path) -> str | None:
    commit = path / COMMIT
    if not commit.is_file():
        return "not committed (no COMMITTED.json: the writer was interrupted)"
    try:
        files = json.loads(commit.read_text())["files"]
    except (json.JSONDecodeError, KeyError):
        return "corrupt COMMITTED.json"
    for name, sha in files.items():
        if not (path / name).is_file() or sha256_file(path / name) != sha:
            return f"{name} is missing or does not match its hash"
    return None


def prune_checkpoints(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if (p / COMMIT).is_file())
    for p in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob("step-*"):  # uncommitted leftovers older than the newest commit
        if not (p / COMMIT).is_file() and steps and p.name < steps[-1].name:
            shutil.rmtree(p, ignore_errors=True)


def check_same_world(old: dict, new: dict, where: Path, force: bool) -> bool:
    """Compare the recorded run identity with the current one. Returns False when ``force`` discards it.

    Raises:
        ConfigError: a field changed (named with its old and new values).
    """
    for field in sorted(set(old) | set(new)):
        if old.get(field) != new.get(field):
            if force:
                log.warning("%s: %s changed; --force: restarting from scratch", where, field)
                return False
            raise ConfigError(f"{where}: cannot resume: {field} changed ({_short(old.get(field))} -> "
                              f"{_short(new.get(field))}); use --force to discard the checkpoints")
    return True


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 120 else s[:117] + "..."
