"""benchmarks/scaling.py --quick: the table, the plots and finite fitted slopes, written into a tmp dir."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_scaling_writes_table_plots_and_finite_slopes(tmp_path):
    out = tmp_path / "performance.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "### Fitted growth" in text and "| shape | N | operation | seconds | peak MB above start |" in text
    for png in ("perf-time.png", "perf-memory.png", "perf-eval-chain.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
        assert f"]({png})" in text
    slopes = [float(x) for x in re.findall(r"slope=(-?[0-9.]+|nan|inf)", proc.stdout)]
    ops = {r["op"] for r in json.loads((tmp_path / "perf-scaling.json").read_text()) if "seconds" in r}
    assert {"calibrate", "analyse", "data_aware", "merge:ties", "evaluate_chain"} <= ops
    assert slopes and all(math.isfinite(s) for s in slopes)
