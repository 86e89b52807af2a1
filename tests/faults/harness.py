"""The shared fault-injection harness: kill a process mid-write or mid-training, fill the disk, corrupt
files, and count what was tried and what (if anything) was lost.

Every helper that injects a fault or feeds a bad input bumps :data:`COUNTS`; :func:`assert_intact`
re-hashes artifacts that must have survived and counts any that did not as data lost. The conftest next
to this file prints the totals and stores them (``.pytest_cache/v/workbench/faults``) for
docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAIN_JOB = Path(__file__).with_name("train_job.py")
COUNTS: Counter = Counter({"faults_injected": 0, "bad_inputs_tried": 0, "artifacts_verified": 0, "data_lost": 0})


def count(kind: str, n: int = 1) -> None:
    """Add ``n`` to a harness counter (``faults_injected``, ``bad_inputs_tried``...)."""
    COUNTS[kind] += n


# --- processes --------------------------------------------------------------------------------------

def run_python(args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` from the repository root with extra environment variables."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def kill_during_write(code: str, needle: str, offset: int, *argv: str) -> subprocess.CompletedProcess:
    """Run ``python -c CODE ARGV...`` and SIGKILL it once ``offset`` bytes of the first file written whose path
    contains ``needle`` reached its temp file (the fault point in workbench/io/atomic.py).

    Returns:
        The finished process (asserted killed by SIGKILL).
    """
    res = run_python(["-c", code, *argv], env={"WORKBENCH_FAULT_WRITE_KILL": f"{needle}:{offset}"})
    assert res.returncode == -9, f"not killed (rc {res.returncode}): {res.stderr[-1500:]}"
    count("faults_injected")
    return res


def train_job(out: Path, env: dict | None = None, check: bool = True, **overrides) -> subprocess.CompletedProcess:
    """Train the tiny model in a subprocess (tests/faults/train_job.py); ``env`` sets fault points.

    A run given a ``WORKBENCH_FAULT_*`` variable counts as one injected fault.
    """
    env = dict(env or {})
    if any(k.startswith("WORKBENCH_FAULT_") for k in env):
        count("faults_injected")
    res = run_python([str(TRAIN_JOB), str(out), json.dumps(overrides)], env=env)
    if check:
        assert res.returncode == 0, res.stderr[-2000:]
    return res


def printed_hash(res: subprocess.CompletedProcess) -> str:
    """The ``HASH <sha256>`` line a train job prints."""
    return next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("HASH"))


# --- a full disk ------------------------------------------------------------------------------------

@contextlib.contextmanager
def disk_full(monkeypatch, after: int = 0, match: str = ""):
    """Make atomic writes whose final path contains ``match`` fail with ENOSPC after ``after`` bytes.

    Replaces ``workbench.io.atomic._write_all`` (the one place that writes artifact bytes); the final
    path is derived from the temp file's, read back from ``/proc/self/fd``. Yields a list of the final
    paths that hit the full disk.
    """
    import workbench.io.atomic as atomic

    real, hits = atomic._write_all, []

    def shim(fd, data):
        temp = Path(os.readlink(f"/proc/self/fd/{fd}"))  # DIR/.wbtmp-<name>.<random>
        where = (temp.parent / temp.name[len(atomic.TMP_MARK):].rpartition(".")[0]).as_posix()
        if match not in where:
            return real(fd, data)
        real(fd, memoryview(data)[:after])
        hits.append(where)
        count("faults_injected")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "_write_all", shim)
    try:
        yield hits
    finally:
        monkeypatch.setattr(atomic, "_write_all", real)


# --- NaN / inf -------------------------------------------------------------------------------------

def nan_at(monkeypatch, step_index: int) -> None:
    """Make the training loop's loss NaN at optimizer step ``step_index`` (0-based) in this process."""
    monkeypatch.setenv("WORKBENCH_FAULT_NAN_AT", str(step_index))
    count("faults_injected")


# --- file mutators (each is one bad input) ----------------------------------------------------------

def truncate(path: Path, offset: int) -> Path:
    """Cut ``path`` to its first ``offset`` bytes."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:offset])
    count("bad_inputs_tried")
    return Path(path)


def flip_byte(path: Path, offset: int) -> Path:
    """Invert every bit of the byte at ``offset`` (negative counts from the end)."""
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    count("bad_inputs_tried")
    return Path(path)


def header_span(path: Path) -> tuple[int, int]:
    """``(start, end)`` byte offsets of a safetensors file's JSON header."""
    (n,) = struct.unpack("<Q", Path(path).read_bytes()[:8])
    return 8, 8 + n


def rewrite_header(path: Path, edit) -> Path:
    """Replace a safetensors header by ``edit(header_dict)`` (bytes after the header kept as they are)."""
    data = Path(path).read_bytes()
    start, end = header_span(path)
    header = json.dumps(edit(json.loads(data[start:end]))).encode()
    Path(path).write_bytes(struct.pack("<Q", len(header)) + header + data[end:])
    count("bad_inputs_tried")
    return Path(path)


def bad_input(n: int = 1) -> None:
    """Count bad inputs made without a mutator (hand-written files, wrong configs...)."""
    count("bad_inputs_tried", n)


# --- checking that nothing was lost -----------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (or of ``root`` itself, key ``""``)."""
    root = Path(root)
    if root.is_file():
        return {"": sha256(root)}
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_intact(root: Path, before: dict[str, str], ignore_temps: bool = True) -> None:
    """Every file in ``before`` still exists under ``root`` with the same bytes; count losses."""
    now = snapshot(root) if Path(root).exists() else {}
    lost = [k for k, sha in before.items() if now.get(k) != sha]
    count("artifacts_verified", len(before))
    count("data_lost", len(lost))
    assert not lost, f"lost or changed after the fault: {lost}"


def temps_under(root: Path) -> list[Path]:
    """Leftover temp files or directories (``.wbtmp-*``) under ``root``."""
    return sorted(Path(root).rglob(".wbtmp-*"))


# --- the tiny training setup used in-process and by train_job.py ------------------------------------

TRAIN_DEFAULTS = dict(lr=1e-2, steps=4, batch_size=4, grad_accum=2, weight_decay=0.1, checkpoint_every=1,
                      warmup_ratio=0.1, keep_checkpoints=3)
SPEC_DEFAULTS = dict(method="lori_d", rank=4, alpha=8)


def tiny_base(seed: int = 0):
    """A fresh tiny random Llama from ``seed`` (same seed, same weights, same fingerprint)."""
    import torch
    from transformers import LlamaForCausalLM

    from workbench.models.tiny import tiny_llama_config

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config())


def train_tiny(out: Path, n_examples: int = 8, data_seed: int = 0, base_seed: int = 0, spec: dict | None = None,
               init=None, mask=None, force: bool = False, **cfg):
    """Train the tiny model on synthetic data (8 examples, batch 4: one epoch is 2 steps). Returns the
    :class:`~workbench.train.loop.TrainResult`."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from train_script import examples

    from workbench.adapters.spec import AdapterSpec
    from workbench.train.config import TrainConfig
    from workbench.train.loop import train

    config = TrainConfig(**{**TRAIN_DEFAULTS, **cfg})
    spec = AdapterSpec(**{**SPEC_DEFAULTS, **(spec or {})})
    return train(tiny_base(base_seed), examples(n=n_examples, seed=data_seed), spec, config, out,
                 init=init, mask=mask, force=force, progress=False)


def tiny_adapter(seed: int = 0, **kw):
    """A random PEFT-format adapter with the tiny Llama's shapes (rank 4), not yet saved."""
    from workbench.testing import TINY, llama_shapes, random_adapter

    return random_adapter(llama_shapes(**TINY), rank=4, alpha=8, seed=seed, **kw)


def trace_of(out: Path) -> list:
    """The per-step data order of a finished run (train_summary.json ``trace``, losses dropped)."""
    trace = json.loads((Path(out) / "train_summary.json").read_text())["trace"]
    return [(t["step"], t["examples"]) for t in trace]
