"""docs/extending.md's worked examples: a method, a merge strategy, a stage kind and a task, each one plugin
file (examples/extending/), run end to end on the tiny model by `workbench run --allow-plugins`."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "examples" / "extending" / "pipeline.yaml"


def _stage_dir(run: Path, name: str) -> Path:
    (path,) = glob.glob(str(run / "stages" / f"{name}-*"))
    return Path(path)


def test_worked_examples_run_end_to_end(tmp_path):
    from workbench.models.tiny import save_tiny_llama

    tiny = save_tiny_llama(tmp_path / "tiny")
    run = tmp_path / "run"
    # a fresh interpreter: plugin registrations are process-wide (a second import in one process is refused)
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "run", str(PIPE), "--allow-plugins", "--quiet",
                           "--set", f"base.model={tiny}", "--out", str(run)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    boosted = json.loads((_stage_dir(run, "boosted") / "adapter" / "workbench.json").read_text())
    assert boosted["method"] == "lora_fa_boost" and boosted["spec"]["options"] == {"b_lr_scale": 4.0}
    assert boosted["task"] == "capitals"
    merged = json.loads((_stage_dir(run, "merged") / "adapter" / "workbench.json").read_text())
    assert merged["strategy"] == "largest_update"
    norms = json.loads((_stage_dir(run, "merged_norms") / "norms.json").read_text())
    assert len(norms) == 2 and norms[0][0] >= norms[1][0] > 0
    results = json.loads((_stage_dir(run, "merged_eval") / "results.json").read_text())
    assert "capitals" in results["tasks"]
    assert "largest B norm" in (run / "summary.md").read_text()


def test_a_bad_method_option_is_located_without_running_the_plugin_code(tmp_path):
    """`validate --allow-plugins` checks the plugin method's Options model: the error names the field."""
    bad = tmp_path / "bad.yaml"
    text = PIPE.read_text().replace("b_lr_scale: 4.0", "b_lr_scal: 4.0")
    for name in ("method_plugin.py", "stage_plugin.py", "task_plugin.py", "capitals.jsonl"):
        (tmp_path / name).write_text((PIPE.parent / name).read_text())
    (tmp_path / "custom_merge.py").write_text((ROOT / "examples" / "custom_merge.py").read_text())
    bad.write_text(text.replace("../custom_merge.py", "custom_merge.py"))
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "validate", str(bad), "--allow-plugins"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    assert "b_lr_scal" in proc.stderr and f"{bad}:" in proc.stderr, proc.stderr
