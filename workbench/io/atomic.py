"""Atomic file writes: temp sibling, fsync, ``os.replace``, directory fsync.

Why: a crash (SIGKILL, full disk) during a save must leave the previous artifact intact and no partial
file at the final path. We never truncate or rewrite a destination in place (safetensors' own
``save_file`` truncates first, and rewriting a file that is memory-mapped corrupts its readers); a new
inode replaces the old one, so an existing mmap keeps reading the old bytes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

from workbench.errors import WorkbenchError

TMP_MARK = ".wbtmp-"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class DiskFullError(WorkbenchError):
    """No space left while writing an artifact; the previous artifact is untouched."""


def fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The fault harness replaces this to simulate ENOSPC after N bytes (tests/faults).
WRITE_CHUNK = 1 << 22


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:WRITE_CHUNK])
        view = view[n:]


def _fault_kill_offset(path: Path) -> int | None:
    """Fault point for tests/faults: ``WORKBENCH_FAULT_WRITE_KILL=<path substring>:<byte offset>`` makes the
    first matching write SIGKILL its own process after that many bytes reached the temp file."""
    spec = os.environ.get("WORKBENCH_FAULT_WRITE_KILL")
    if not spec:
        return None
    needle, _, offset = spec.rpartition(":")
    return int(offset) if needle and needle in path.as_posix() else None


def _write_then_die(fd: int, data: bytes | memoryview, offset: int) -> None:
    _write_all(fd, memoryview(data)[:offset])
    os.fsync(fd)  # the bytes are really on disk when the process dies, as in a crash mid-write
    os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically and durably. Returns the final path.

    Raises:
        DiskFullError: the disk filled up; names the path and the bytes needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_MARK}{path.name}.", dir=str(path.parent))
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual umask mode
            kill_at = _fault_kill_offset(path)
            if kill_at is not None:
                _write_then_die(fd, data, kill_at)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _silent_unlink(tmp)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                f"{path}: no space left on device while writing {len(data)} bytes; "
                "the previous version (if any) is unchanged"
            ) from None
        raise
    except BaseException:
        _silent_unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """JSON with sorted keys and a trailing newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _silent_unlink(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


OLD_MARK = f"{TMP_MARK}old-"


def clean_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove temp files and directories left by a killed writer under ``directory`` (recursively).

    A directory moved aside by an interrupted swap (``.wbtmp-old-<name>-<pid>``, see
    ``io/adapter_dir.py``) whose ``<name>`` no longer exists is the only copy of that artifact: it is
    renamed back instead of removed. Call only while holding the directory (run lock, or one trainer).

    Returns:
        The paths removed or restored.
    """
    directory = Path(directory)
    if not directory.exists():
        return []
    stale = sorted(directory.rglob(f"{TMP_MARK}*"), key=lambda p: len(p.parts))
    for p in stale:
        if p.is_dir():
            _restore_or_remove_dir(p)
        else:
            _silent_unlink(str(p))
    return stale


def _restore_or_remove_dir(p: Path) -> None:
    if p.name.startswith(OLD_MARK):
        original = p.with_name(p.name[len(OLD_MARK):].rpartition("-")[0])
        if not original.exists():
            os.replace(p, original)  # the kill fell between the two renames of a swap
            return
    shutil.rmtree(p, ignore_errors=True)
