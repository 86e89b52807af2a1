"""One writer per run directory: a lock file holding the owner's PID and host.

The lock is created with its content in one step (written to a temp file, then hard-linked to the lock
name, which fails if the lock exists), so no reader ever sees an empty lock. A lock left by a dead
process on this host is taken over; a live owner, or an owner on another host (whose PID we cannot
check), gives a clear error.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from workbench.errors import WorkbenchError

LOCK_NAME = ".lock"
log = logging.getLogger("workbench.graph")


class RunLockedError(WorkbenchError):
    """Another live process is writing to this run directory."""


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists on this host (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read_owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _try_create(path: Path, owner: dict) -> bool:
    fd, tmp = tempfile.mkstemp(prefix=".lock-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(owner, f)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


class RunLock:
    """Context manager holding ``RUN_DIR/.lock`` for the current process.

    Raises (on enter):
        RunLockedError: a live process (or one on another host) holds the lock; names PID, host and time.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        self.held = False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if _try_create(self.path, self.owner):
                self.held = True
                return self
            self._clear_if_stale(_read_owner(self.path))
        raise RunLockedError(f"{self.path}: could not take the run lock (it keeps changing hands)")

    def _clear_if_stale(self, owner: dict | None) -> None:
        if owner is None:
            return  # released meanwhile; try again
        pid, host = owner.get("pid"), owner.get("host")
        same_host = host == self.owner["host"]
        if same_host and isinstance(pid, int) and not pid_alive(pid):
            log.warning("removing stale lock %s left by dead process %s", self.path, pid)
            self.path.unlink(missing_ok=True)
            return
        if not owner:
            raise RunLockedError(f"{self.path}: unreadable lock file; if no run is active, delete it")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
        hint = "wait for it to finish" if same_host else f"if nothing runs on {host}, delete {self.path}"
        raise RunLockedError(f"{self.path.parent} is in use by process {pid} on {host} since {when}; {hint}")

    def release(self) -> None:
        if self.held and _read_owner(self.path) == self.owner:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
