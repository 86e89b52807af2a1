"""Atomic writes of files and directories: temp sibling, fsync, one rename, directory fsync.

Why: a crash (SIGKILL, full disk) during a save must leave the previous artifact intact and no partial
file at the final path. We never truncate or rewrite a destination in place (safetensors' own
``save_file`` truncates first, and rewriting a file that is memory-mapped corrupts its readers); a new
inode replaces the old one, so an existing mmap keeps reading the old bytes.

Files: :func:`atomic_write_bytes` (and its text/JSON forms). Directories (adapters, merged models, the
run report, caches): :func:`atomic_directory`, the only place that replaces a directory; see
:func:`commit_directory` for why the swap is one ``renameat2(RENAME_EXCHANGE)`` call.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator

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

    A directory moved aside by an interrupted two-rename swap (``.wbtmp-old-<name>-<pid>``, see
    :func:`commit_directory`) whose ``<name>`` no longer exists is the only copy of that artifact: it is
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


# --- directories ------------------------------------------------------------------------------------

IF_EXISTS = ("error", "replace", "keep")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, if_exists: str = "error") -> Iterator[Path]:
    """Build a directory in a temp sibling, then commit it to ``path`` in one step.

    Yields the empty temp directory to fill. On a clean exit it is committed with
    :func:`commit_directory`; on an exception it is removed and ``path`` is untouched.

    Args:
        path: the final directory.
        if_exists: what to do when ``path`` exists: ``"error"`` (checked before the body runs and again
            at the commit), ``"replace"`` it, or ``"keep"`` it and drop the new one (a cache that a
            concurrent process filled first).

    Raises:
        WorkbenchError: ``path`` exists and ``if_exists`` is ``"error"``; an unknown ``if_exists``.
    """
    path = Path(path)
    _check_if_exists(path, if_exists)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_MARK}{path.name}.", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; artifacts get the usual umask mode
        yield tmp
        commit_directory(tmp, path, if_exists)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a commit; the new files after a failure


def _check_if_exists(path: Path, if_exists: str) -> None:
    if if_exists not in IF_EXISTS:
        raise WorkbenchError(f"if_exists must be one of {', '.join(IF_EXISTS)}, not {if_exists!r}")
    if if_exists == "error" and os.path.lexists(path):
        raise WorkbenchError(f"{path}: output already exists (choose another --out or remove it)")


def commit_directory(tmp: Path, path: Path, if_exists: str = "replace") -> None:
    """Move the finished directory ``tmp`` to ``path`` so that a reader sees the old or the new one, whole.

    The files are fsynced first (a rename that reached the disk before its files' bytes would commit
    empty files). A new ``path`` is one ``rename``. An existing one is swapped with ``tmp`` by
    ``renameat2(RENAME_EXCHANGE)``: one system call, so at every instant ``path`` holds the complete old
    or the complete new directory, and a crash at any point leaves one of them there. The old one then
    sits under the temp name and is removed (by us, or by :func:`clean_stale_temps` after a crash).

    Alternatives and why not: deleting ``path`` before the rename (the old sequence) loses the old copy
    on a crash and shows readers no directory; a symlink to versioned directories is atomic too but
    changes what every reader, copier and hasher sees on disk. Where the exchange is unavailable (not
    Linux, or a filesystem without it) this falls back to two renames (old aside as
    ``.wbtmp-old-<name>-<pid>``, new in): a reader may find ``path`` missing between them, and a crash
    there is repaired by :func:`clean_stale_temps`, which renames the old copy back.

    Args:
        tmp: the finished directory, a sibling of ``path`` (same filesystem).
        path: the final directory.
        if_exists: as for :func:`atomic_directory`.

    Raises:
        WorkbenchError: ``path`` exists and ``if_exists`` is ``"error"``.
    """
    _fsync_tree(tmp)
    if not os.path.lexists(path) and _rename_new(tmp, path):
        fsync_dir(path.parent)
        return
    if if_exists == "error":
        raise WorkbenchError(f"{path}: output already exists (choose another --out or remove it)")
    if if_exists == "keep":
        shutil.rmtree(tmp, ignore_errors=True)
    elif _exchange(tmp, path):
        fsync_dir(path.parent)  # the exchange is durable before the old copy goes
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now names the old directory
    else:
        _swap_by_two_renames(tmp, path)


def _rename_new(tmp: Path, path: Path) -> bool:
    """Rename onto a missing ``path``; False when a concurrent writer created it meanwhile."""
    try:
        os.rename(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            return False
        raise
    return True


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <linux/fcntl.h>, <linux/fs.h>


@functools.lru_cache(maxsize=1)
def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b``. False when this system or filesystem cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_by_two_renames(tmp: Path, path: Path) -> None:
    old = path.with_name(f"{OLD_MARK}{path.name}-{os.getpid()}")
    os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
