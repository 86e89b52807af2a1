"""Every example runs (on the tiny model, with short settings) and the README's cheap commands work."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _py(*args, cwd=ROOT):
    res = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600,
                         env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_continual_chain_example(tiny_dir, tmp_path):
    out = _py(ROOT / "examples/continual_chain.py", "--model", tiny_dir, "--steps", "2", "--eval-limit", "2",
              "--out", tmp_path / "chain")
    assert "math_eval" in out and "| base_eval |" in out


def test_load_in_peft_example(tiny_dir):
    out = _py(ROOT / "examples/load_in_peft.py", "--model", tiny_dir, "--steps", "2")
    assert "PEFT answer:" in out


def test_custom_merge_example():
    _py(ROOT / "examples/custom_merge.py")


def test_interference_report_example(tmp_path):
    out = _py(ROOT / "examples/interference_report.py", "--out", tmp_path / "report")
    assert (tmp_path / "report" / "report.html").is_file() and str(tmp_path / "report") in out
    assert not (ROOT / "--out").exists()  # the argument once became a directory named --out here


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [c.strip() for c in re.findall(r"```bash\n(.*?)```", text, re.S) for c in c.splitlines()
            if c.strip().startswith(".venv/bin/workbench ") and "# test_readme" in c]


def test_readme_cheap_commands_run():
    cmds = _readme_commands()
    assert cmds, "README marks cheap commands with '# test_readme'"
    for cmd in cmds:
        res = subprocess.run(cmd.split("#")[0], shell=True, capture_output=True, text=True, cwd=ROOT, timeout=300,
                             executable="/bin/bash", env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        assert res.returncode == 0, f"{cmd}\n{res.stderr[-2000:]}"
