"""The code sandbox against hostile programs: nothing escapes, everything ends in bounded time.

Each limit has a test that fails when that one limit is removed from ``sandbox.py``, and each observes it
from inside the child: the program prints the limit it got (``resource.getrlimit``) and what happened when
it tried to go past it. No test sends a packet anywhere: network isolation is shown by the child's own
network namespace and interface list. Hostile programs write only under temporary directories that the
tests remove.
"""

import json
import os
import shutil
import signal
import stat
import tempfile
import time

import pytest

from workbench.evaluate import sandbox
from workbench.evaluate.sandbox import SandboxLimits, run_python, world_usable

ROOT = os.geteuid() == 0
FAST = SandboxLimits(timeout=3.0, cpu_seconds=3)


def _report(r) -> dict:
    """The JSON object the program printed on its last stdout line."""
    assert r.stdout.strip(), f"the program printed nothing: status {r.status}, stderr {r.stderr[-500:]!r}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def _limit_program(res: str, attempt: str) -> str:
    """A program that reports ``getrlimit(res)`` and then the outcome of ``attempt`` (which sets ``outcome``)."""
    return ("import errno, json, os, resource, sys\n"
            f"report = {{'limit': list(resource.getrlimit(resource.{res}))}}\n"
            f"{attempt}\n"
            "report['outcome'] = outcome\n"
            "print(json.dumps(report))\n")


def test_plain_program_passes_and_failure_is_reported():
    ok = run_python("print(sum(range(10)))")
    assert ok.passed and ok.stdout.strip() == "45"
    bad = run_python("assert 1 == 2, 'nope'")
    assert bad.status == "failed" and bad.returncode == 1 and "nope" in bad.stderr


# --- one test per limit -------------------------------------------------------------------------

def test_cpu_limit_stops_a_busy_loop_long_before_the_wall_clock():
    # The wall clock is far away (60 s): only RLIMIT_CPU can end this loop within its 4 CPU seconds.
    limits = SandboxLimits(timeout=60.0, cpu_seconds=1)
    code = ("import resource, signal, sys, time\n"
            "print('limit', resource.getrlimit(resource.RLIMIT_CPU), flush=True)\n"
            "signal.signal(signal.SIGXCPU, lambda *a: print('SIGXCPU at', round(time.process_time(), 1), flush=True))\n"
            "while time.process_time() < 4:\n    pass\n"  # hostile: it notes SIGXCPU and keeps going
            "print('EXCEEDED', flush=True)\n")
    r = run_python(code, limits)
    lines = r.stdout.splitlines()
    assert lines[0] == "limit (1, 2)", r.stdout
    assert any(line.startswith("SIGXCPU at") for line in lines), r.stdout  # the child felt the soft limit
    assert "EXCEEDED" not in r.stdout
    assert r.status == "failed" and r.returncode == -signal.SIGKILL  # the hard limit, not the wall clock
    assert r.seconds < limits.timeout


def test_wall_clock_stops_a_sleeping_program():
    # Sleeping uses no CPU, so only the wall-clock timeout can end it.
    start = time.monotonic()
    r = run_python("import time\nprint('sleeping', flush=True)\ntime.sleep(60)\nprint('WOKE')\n", FAST)
    assert r.status == "timeout" and r.stdout.strip() == "sleeping"
    assert time.monotonic() - start < FAST.timeout + 2


def test_memory_limit_makes_a_large_allocation_fail_inside_the_child():
    # 512 MiB is far below what any machine's overcommit would refuse, and far above the 256 MiB limit:
    # only RLIMIT_AS makes it fail. A 32 MiB allocation inside the limit shows memory works at all.
    attempt = ("small = bytearray(32 << 20)\n"
               "try:\n    big = bytearray(512 << 20)\n    outcome = 'ALLOCATED'\n"
               "except MemoryError:\n    outcome = 'MemoryError'\n")
    r = run_python(_limit_program("RLIMIT_AS", attempt), SandboxLimits(memory_bytes=256 << 20))
    assert r.passed and _report(r) == {"limit": [256 << 20, 256 << 20], "outcome": "MemoryError"}


def test_file_size_limit_stops_a_write_at_the_limit():
    attempt = ("try:\n    with open('big.bin', 'wb') as f:\n        f.write(b'x' * (4 << 20))\n"
               "    outcome = ['WROTE', os.path.getsize('big.bin')]\n"
               "except OSError as exc:\n    outcome = [errno.errorcode[exc.errno], os.path.getsize('big.bin')]\n")
    r = run_python(_limit_program("RLIMIT_FSIZE", attempt), SandboxLimits(max_file_bytes=1 << 20))
    assert r.passed and _report(r) == {"limit": [1 << 20, 1 << 20], "outcome": ["EFBIG", 1 << 20]}


def test_open_files_limit_stops_opening_files():
    attempt = ("fds = []\n"
               "try:\n    for _ in range(256):\n        fds.append(open(os.devnull))\n"
               "    outcome = ['OPENED', len(fds)]\n"
               "except OSError as exc:\n    outcome = [errno.errorcode[exc.errno], len(fds)]\n")
    r = run_python(_limit_program("RLIMIT_NOFILE", attempt), SandboxLimits(max_open_files=32))
    report = _report(r)
    assert r.passed and report["limit"] == [32, 32]
    assert report["outcome"][0] == "EMFILE" and report["outcome"][1] < 32


def test_core_dumps_are_off_and_cannot_be_turned_back_on():
    # The hard limit is 0: the program cannot raise it, and a crashing child of its own dumps no core.
    attempt = ("try:\n    resource.setrlimit(resource.RLIMIT_CORE, (1 << 30, 1 << 30))\n    raised = 'RAISED'\n"
               "except (ValueError, OSError) as exc:\n    raised = 'refused'\n"
               "pid = os.fork()\n"
               "if pid == 0:\n    os.abort()\n"
               "_, status = os.waitpid(pid, 0)\n"
               "outcome = [raised, os.WTERMSIG(status), os.WCOREDUMP(status), sorted(f for f in os.listdir('.') "
               "if f.startswith('core'))]\n")
    r = run_python(_limit_program("RLIMIT_CORE", attempt))
    assert r.passed and _report(r) == {"limit": [0, 0], "outcome": ["refused", signal.SIGABRT, False, []]}


def test_process_limit_stops_forking_inside_the_child():
    # Children that sleep (not a bomb): the program counts how many forks succeed before EAGAIN.
    attempt = ("import time\nkids = []\n"
               "try:\n    for _ in range(64):\n        pid = os.fork()\n"
               "        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n"
               "        kids.append(pid)\n    outcome = ['FORKED', len(kids)]\n"
               "except OSError as exc:\n    outcome = [errno.errorcode[exc.errno], len(kids)]\n")
    r = run_python(_limit_program("RLIMIT_NPROC", attempt), SandboxLimits(max_processes=8))
    report = _report(r)
    assert r.passed and report["limit"] == [8, 8]
    assert report["outcome"][0] == "EAGAIN" and report["outcome"][1] < 8


def test_output_cap_kills_a_program_mid_flood():
    # The program reports its progress on stderr; past the cap it is killed before it can finish.
    cap = 256 << 10
    code = ("import sys\n"
            "for i in range(64):\n"
            "    sys.stdout.write('x' * 65536)\n    sys.stdout.flush()\n"
            "    sys.stderr.write(f'wrote {(i + 1) * 65536}\\n')\n    sys.stderr.flush()\n"
            "sys.stderr.write('DONE\\n')\n")
    r = run_python(code, SandboxLimits(timeout=30.0, max_output_bytes=cap))
    assert r.status == "output_limit" and r.returncode == -signal.SIGKILL
    assert "DONE" not in r.stderr and len(r.stdout) <= cap
    written = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("wrote ")]
    assert written and written[-1] < 64 * 65536


# --- the process group, the environment, the working directory --------------------------------------

def test_sleeping_grandchild_is_killed_with_the_group():
    # The program exits at once but leaves a child behind that would keep the pipes (and CPU) busy.
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint('parent done')\n"
    start = time.monotonic()
    r = run_python(code, FAST)
    assert r.stdout.strip() == "parent done"
    assert time.monotonic() - start < FAST.timeout + 2


def test_fork_bomb_is_contained():
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    r = run_python(code, SandboxLimits(timeout=2.0, cpu_seconds=2, max_processes=16))
    assert not r.passed
    assert time.monotonic() - start < 6
    # The group was killed: a fresh program still starts (the process limit is free again).
    time.sleep(0.2)
    assert run_python("print('alive')").stdout.strip() == "alive"


def test_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("WORKBENCH_FAKE_SECRET", "hunter2")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('WORKBENCH_FAKE_SECRET'))\n")
    assert r.passed and "hunter2" not in r.stdout and "WORKBENCH_FAKE_SECRET" not in r.stdout


def test_working_directory_is_private_and_removed():
    r = run_python("import os\nopen('scratch.txt', 'w').write('ok')\nprint(os.getcwd())\n")
    assert r.passed
    workdir = r.stdout.strip()
    assert os.path.basename(workdir).startswith("wb-sandbox-") and not os.path.exists(workdir)


# --- root callers: the unprivileged user and the network namespace ------------------------------------

@pytest.fixture()
def system_dir():
    """A root-owned directory that others may read but not write (like /etc), removed afterwards."""
    d = tempfile.mkdtemp(prefix="wb-sandbox-test-")
    try:
        os.chmod(d, 0o755)
        victim = os.path.join(d, "victim.txt")
        with open(victim, "w") as f:
            f.write("precious")
        os.chmod(victim, 0o644)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not ROOT, reason="writes outside the temp dir are refused by dropping to 'nobody' (needs root)")
def test_cannot_write_or_delete_the_callers_files(tmp_path, system_dir):
    victim = os.path.join(system_dir, "victim.txt")
    planted = [os.path.join(system_dir, "planted.txt"), str(tmp_path / "planted.txt")]
    (tmp_path / "mine.txt").write_text("mine")
    code = (f"import json, os\n"
            f"report = {{'ids': [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],\n"
            f"          'read': open({victim!r}).read()}}\n"
            f"for name, action in (('plant', lambda: open({planted[0]!r}, 'w').write('x')),\n"
            f"                     ('plant_tmp', lambda: open({planted[1]!r}, 'w').write('x')),\n"
            f"                     ('delete', lambda: os.remove({victim!r})),\n"
            f"                     ('delete_tmp', lambda: os.remove({str(tmp_path / 'mine.txt')!r})),\n"
            f"                     ('chmod', lambda: os.chmod({victim!r}, 0o666))):\n"
            f"    try:\n        action()\n        report[name] = 'ESCAPED'\n"
            f"    except OSError as exc:\n        report[name] = type(exc).__name__\n"
            f"print(json.dumps(report))\n")
    report = _report(run_python(code))
    assert report["ids"] == [65534, 65534, 65534, 65534, []]  # observed in the child
    assert report["read"] == "precious"  # it did reach the directory: the refusals below are its rights
    assert {k: v for k, v in report.items() if k not in ("ids", "read")} == {
        "plant": "PermissionError", "plant_tmp": "PermissionError", "delete": "PermissionError",
        "delete_tmp": "PermissionError", "chmod": "PermissionError"}
    assert open(victim).read() == "precious" and stat.S_IMODE(os.stat(victim).st_mode) == 0o644
    assert (tmp_path / "mine.txt").read_text() == "mine" and not any(os.path.exists(p) for p in planted)


def _kernel_allows_network_namespaces() -> bool:
    if sandbox._UNSHARE is None:
        return False
    pid = os.fork()
    if pid == 0:  # only unshare and exit: nothing else runs in the forked test process
        os._exit(0 if sandbox._UNSHARE(sandbox.CLONE_NEWNET) == 0 else 1)
    return os.waitpid(pid, 0)[1] == 0


@pytest.mark.skipif(not ROOT, reason="the network namespace needs root")
def test_the_child_has_its_own_network_namespace_with_only_loopback():
    if not _kernel_allows_network_namespaces():
        pytest.skip("this kernel refuses new network namespaces (e.g. no CAP_SYS_ADMIN); see SANDBOX.md")
    # Nothing is sent: the child names its namespace and lists its interfaces (a local kernel query).
    code = ("import json, os, socket\n"
            "print(json.dumps({'netns': os.readlink('/proc/self/ns/net'),\n"
            "                  'interfaces': sorted(name for _, name in socket.if_nameindex())}))\n")
    r = run_python(code)
    report = _report(r)
    assert report["netns"] != os.readlink("/proc/self/ns/net")
    assert report["interfaces"] == ["lo"]


def test_world_usable(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "f").write_text("x")
    os.chmod(private, 0o700)
    assert not world_usable(private / "f")
    assert world_usable("/usr") and not world_usable(tmp_path / "absent")
