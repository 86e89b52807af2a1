"""Run untrusted Python (model-written HumanEval completions) in a throwaway, limited process.

What the sandbox does, and why (see ``SANDBOX.md`` for the hostile programs it is tested against):

- a fresh interpreter, ``python -I -S``: isolated mode ignores ``PYTHON*`` variables, the user site and
  the current directory on ``sys.path``; ``-S`` skips site-packages (HumanEval needs the stdlib only);
- a minimal environment (``PATH`` and a ``HOME`` inside the temp dir): the caller's secrets never reach it;
- a throwaway working directory (``tempfile.mkdtemp``), removed afterwards;
- ``resource.setrlimit`` in the child before the program starts: address space (memory bombs), CPU
  seconds (``SIGXCPU`` at the limit, ``SIGKILL`` a second later), number of processes (fork bombs), file
  size, open files, no core dumps (hard limits, so the program cannot raise them again);
- when the caller is root: the child drops to an unprivileged uid/gid (``nobody``, 65534) so writes and
  deletes outside the temp dir fail, and it cannot signal the caller; it also gets an empty network
  namespace where the kernel allows it (``os.unshare``, Python 3.12+);
- its own session (process group): a timeout, an output overflow, or a normal exit kills the whole group,
  so children it left behind die with it;
- output read through pipes and capped at ``max_output_bytes``; beyond it the group is killed.

Not covered: reading world-readable files, and (when not root) the caller's own files. Use a container
for adversarial code at scale.
"""

from __future__ import annotations

import ctypes
import os
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError

NOBODY = 65534
PROGRAM = "program.py"
CLONE_NEWNET = 0x40000000


def _find_unshare():
    # Resolved at import time: the forked child must not load libraries (os.unshare needs Python 3.12).
    try:
        return ctypes.CDLL(None, use_errno=True).unshare
    except (OSError, AttributeError):
        return None


_UNSHARE = _find_unshare()


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one run. Sizes in bytes, times in seconds."""

    timeout: float = 10.0
    memory_bytes: int = 1 << 30
    cpu_seconds: int = 10
    max_processes: int = 32
    max_file_bytes: int = 16 << 20
    max_open_files: int = 64
    max_output_bytes: int = 1 << 20
    site_packages: bool = False


@dataclass
class SandboxResult:
    """Outcome of one run. ``status``: passed, failed, timeout or output_limit."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    uid: int

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _limit_child(limits: SandboxLimits, drop_to: int | None):
    """Build the ``preexec_fn``: it runs in the forked child before exec. It only calls already-imported
    os/resource functions (no imports, no locks), the safe subset for a child forked from a threaded parent."""

    def preexec() -> None:
        if drop_to is not None and _UNSHARE is not None:
            _UNSHARE(CLONE_NEWNET)  # no network interfaces at all; needs CAP_SYS_ADMIN; failure is tolerated
        for res, value in ((resource.RLIMIT_AS, limits.memory_bytes),
                           (resource.RLIMIT_FSIZE, limits.max_file_bytes),
                           (resource.RLIMIT_NOFILE, limits.max_open_files),
                           (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(res, (value, value))
        # SIGXCPU at the soft limit (the program sees it), SIGKILL one CPU second later at the hard one: with
        # soft == hard the kernel sends only SIGKILL, and a program ignoring SIGXCPU is stopped either way.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        if drop_to is not None:
            os.setgroups([])
            os.setgid(drop_to)
            os.setuid(drop_to)
        # After setuid: RLIMIT_NPROC counts the processes of the (now unprivileged) real uid; root ignores it.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))

    return preexec


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox.

    Args:
        code: the full program text.
        limits: resource limits (defaults: 10 s, 1 GiB, 32 processes, 1 MiB of output).

    Returns:
        A :class:`SandboxResult`; ``passed`` when the program exited with status 0 within the limits.
    """
    limits = limits or SandboxLimits()
    drop_to = NOBODY if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="wb-sandbox-"))
    try:
        (workdir / PROGRAM).write_text(code, encoding="utf-8")
        if drop_to is not None:
            os.chown(workdir, drop_to, drop_to)
            os.chown(workdir / PROGRAM, drop_to, drop_to)
        return _execute(workdir, limits, drop_to)
    finally:
        _remove_tree(workdir)


def world_usable(path: str | os.PathLike) -> bool:
    """True when a user with no rights of its own (``nobody``) can reach and read ``path``: every
    directory above it is o+x and the target is o+r (o+x as well for a directory)."""
    p = Path(os.path.realpath(path))
    if not p.exists():
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0)
    if p.stat().st_mode & need != need:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in p.parents)


def find_interpreter(unprivileged: bool) -> str:
    """The Python that runs sandboxed programs: this one, or (when the child drops to ``nobody`` and this
    interpreter lives somewhere ``nobody`` cannot read, e.g. a pyenv under /root) a system python3.

    Raises:
        WorkbenchError: no interpreter the unprivileged user can run was found.
    """
    own = (sys.executable, sysconfig.get_paths()["stdlib"])
    if not unprivileged or all(world_usable(p) for p in own):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if world_usable(candidate):
            return candidate
    raise WorkbenchError(f"sandbox: {sys.executable} is not readable by the unprivileged user (uid {NOBODY}) "
                         "and no system python3 is; install python3 under /usr/bin or make it world-readable")


def _execute(workdir: Path, limits: SandboxLimits, drop_to: int | None) -> SandboxResult:
    flags = ["-I"] if limits.site_packages else ["-I", "-S"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    start = time.monotonic()
    try:
        proc = _spawn(flags, workdir, env, limits, drop_to)
    except (OSError, subprocess.SubprocessError) as exc:  # e.g. EAGAIN: the process limit is exhausted
        return SandboxResult("failed", None, "", f"sandbox: could not start: {exc}", 0.0, -1)
    try:
        out, err, overflow, timed_out = _collect(proc, limits, start)
    finally:
        _kill_group(proc)
    seconds = time.monotonic() - start
    status = ("timeout" if timed_out else "output_limit" if overflow
              else "passed" if proc.returncode == 0 else "failed")
    return SandboxResult(status, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                         seconds, drop_to if drop_to is not None else os.geteuid())


def _spawn(flags, workdir: Path, env: dict, limits: SandboxLimits, drop_to: int | None) -> subprocess.Popen:
    return subprocess.Popen([find_interpreter(drop_to is not None), *flags, PROGRAM], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_limit_child(limits, drop_to), close_fds=True)


def _collect(proc: subprocess.Popen, limits: SandboxLimits, start: float):
    """Read both pipes until EOF, the deadline, or the output cap. Returns (out, err, overflow, timed_out)."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    sel = selectors.DefaultSelector()
    for pipe in (proc.stdout, proc.stderr):
        os.set_blocking(pipe.fileno(), False)
        sel.register(pipe, selectors.EVENT_READ)
    overflow = timed_out = False
    try:
        while sel.get_map():
            left = limits.timeout - (time.monotonic() - start)
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                bufs[key.fd] += chunk
            if sum(len(b) for b in bufs.values()) > limits.max_output_bytes:
                overflow = True
                break
            if _exited(proc) and not sel.select(timeout=0):
                break  # the program ended; a process it left behind may still hold the pipes open
        if not (timed_out or overflow):
            timed_out = not _wait_exit(proc, limits.timeout - (time.monotonic() - start))
    finally:
        sel.close()
    cap = limits.max_output_bytes
    return bytes(bufs[proc.stdout.fileno()][:cap]), bytes(bufs[proc.stderr.fileno()][:cap]), overflow, timed_out


def _exited(proc: subprocess.Popen) -> bool:
    # WNOWAIT: look without reaping, so the leader's pid (the group id) cannot be reused before _kill_group.
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _wait_exit(proc: subprocess.Popen, left: float) -> bool:
    """Wait up to ``left`` seconds for the leader to exit (without reaping it). True when it did."""
    deadline = time.monotonic() + max(left, 0.0)
    while True:
        if _exited(proc):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process in the child's session (the leader is not reaped yet), then reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)
