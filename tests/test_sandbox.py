"""The code sandbox against hostile programs: nothing escapes, everything ends in bounded time."""

import os
import time

import pytest

from workbench.evaluate.sandbox import SandboxLimits, run_python, world_usable

ROOT = os.geteuid() == 0
FAST = SandboxLimits(timeout=3.0, cpu_seconds=3)


def test_plain_program_passes_and_failure_is_reported():
    ok = run_python("print(sum(range(10)))")
    assert ok.passed and ok.stdout.strip() == "45"
    bad = run_python("assert 1 == 2, 'nope'")
    assert bad.status == "failed" and bad.returncode == 1 and "nope" in bad.stderr


def test_infinite_loop_times_out():
    start = time.monotonic()
    r = run_python("while True:\n    pass\n", FAST)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - start < FAST.timeout + 2


def test_sleeping_grandchild_is_killed_with_the_group(tmp_path):
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


def test_memory_bomb_fails_inside_the_child():
    r = run_python("x = bytearray(8 << 30)\nprint('allocated')\n", SandboxLimits(memory_bytes=512 << 20))
    assert r.status == "failed" and "MemoryError" in r.stderr and "allocated" not in r.stdout


def test_huge_output_is_capped():
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
                   SandboxLimits(timeout=5.0, max_output_bytes=1 << 20))
    assert r.status == "output_limit" and len(r.stdout) <= 1 << 20


def test_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("WORKBENCH_FAKE_SECRET", "hunter2")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('WORKBENCH_FAKE_SECRET'))\n")
    assert r.passed and "hunter2" not in r.stdout and "WORKBENCH_FAKE_SECRET" not in r.stdout


def test_working_directory_is_private_and_removed():
    r = run_python("import os\nopen('scratch.txt', 'w').write('ok')\nprint(os.getcwd())\n")
    assert r.passed
    workdir = r.stdout.strip()
    assert os.path.basename(workdir).startswith("wb-sandbox-") and not os.path.exists(workdir)


@pytest.mark.skipif(not ROOT, reason="writes outside the temp dir are refused by dropping to 'nobody', which needs root")
def test_cannot_write_or_delete_the_callers_files(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "planted.txt"
    code = (f"import os\n"
            f"for action in (lambda: open({str(target)!r}, 'w').write('x'), lambda: os.remove({str(victim)!r}),\n"
            f"               lambda: open('/etc/wb-sandbox-planted', 'w').write('x')):\n"
            f"    try:\n        action()\n        print('ESCAPED')\n"
            f"    except OSError as exc:\n        print(type(exc).__name__)\n")
    r = run_python(code)
    assert "ESCAPED" not in r.stdout and r.stdout.count("Error") == 3
    assert victim.read_text() == "precious" and not target.exists()
    assert not os.path.exists("/etc/wb-sandbox-planted")
    assert r.uid == 65534


@pytest.mark.skipif(not ROOT, reason="the network namespace needs root")
def test_no_network_when_root():
    r = run_python("import socket\ns = socket.socket()\ns.settimeout(2)\n"
                   "try:\n    s.connect(('1.1.1.1', 80))\n    print('CONNECTED')\n"
                   "except OSError as exc:\n    print('refused', exc)\n")
    assert "CONNECTED" not in r.stdout


def test_world_usable(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "f").write_text("x")
    os.chmod(private, 0o700)
    assert not world_usable(private / "f")
    assert world_usable("/usr") and not world_usable(tmp_path / "absent")
