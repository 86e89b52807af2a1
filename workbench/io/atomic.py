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
import tempfile
from pathlib import Path

from workbench.errors import WorkbenchError

TMP_MARK = ".wbtmp-"


class DiskFullError(WorkbenchError):
    """No space left while writing an artifact; the previous artifact is untouched."""


def fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _opener_for_tests(path: str, flags: int) -> int:
    return os.open(path, flags, 0o644)


# The fault harness replaces this to simulate ENOSPC after N bytes (tests/faults).
WRITE_CHUNK = 1 << 22


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:WRITE_CHUNK])
        view = view[n:]


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


def clean_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove temp files left by a killed writer under ``directory`` (recursively). Returns them."""
    directory = Path(directory)
    if not directory.exists():
        return []
    stale = [p for p in directory.rglob(f"{TMP_MARK}*") if p.is_file()]
    for p in stale:
        _silent_unlink(str(p))
    return stale
