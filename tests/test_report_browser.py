"""The report of a tiny-model chain run (`workbench run "safety->math"`), as a person opens it: in a real
headless Chromium every figure loads, every table has rows and the console stays clean; its first screen
is a paragraph per task and the forgetting matrices; nothing constant is drawn or ranked; summary.md shows
the held-out change of each training stage.

The browser tests need Debian's chromium and chromium-driver plus selenium (``scripts/install-browser.sh``)
and are skipped, saying so, where they are missing. The others run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
QUICK = ["defaults.steps=3", "defaults.eval_limit=2", "defaults.max_new_tokens=2", "defaults.max_samples=12"]


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("screenshot_report", ROOT / "scripts" / "screenshot_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shot = _screenshot_module()
needs_browser = pytest.mark.skipif(shot.missing() is not None,
                                   reason=f"no headless browser: {shot.missing()}; scripts/install-browser.sh installs one")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from workbench.models.tiny import save_tiny_llama
    from workbench.stages.run import run

    root = tmp_path_factory.mktemp("browser")
    tiny = save_tiny_llama(root / "tiny")
    run("safety->math", root / "run", [*QUICK, f"base.model={tiny}"], progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def report(run_dir):
    return json.loads((run_dir / "report" / "report.json").read_text())


@pytest.fixture(scope="module")
def forgetting(run_dir):
    return json.loads((run_dir / "report" / "forgetting.json").read_text())


@pytest.fixture(scope="module")
def browser():
    driver = shot.open_browser(1400, 1100)
    yield driver
    driver.quit()


@needs_browser
def test_every_figure_loads_every_table_has_rows_no_console_error(run_dir, report, browser, tmp_path):
    state = shot.inspect(browser, run_dir / "report" / "report.html")
    assert shot.problems(state) == []
    assert [i["file"] for i in state["images"]] == report["files"]["images"]
    assert all(i["width"] > 100 and i["height"] > 100 for i in state["images"])
    ids = [t["id"] for t in state["tables"]]
    assert ids[:2] == ["table-forgetting_nll", "table-forgetting"]  # side by side, first after the paragraphs
    assert {"table-training", "table-adapters", "table-headline"} <= set(ids)
    assert all(t["rows"] > 0 for t in state["tables"]) and state["console_errors"] == []
    assert state["external"] == [] and state["scripts"] == 0  # one self-contained file
    png = shot.screenshot(browser, tmp_path / "shot.png", False, 1400).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1400


@needs_browser
def test_the_browser_check_catches_a_broken_figure_an_empty_table_and_a_console_error(run_dir, browser, tmp_path):
    page = (run_dir / "report" / "report.html").read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]+"', 'src="data:image/png;base64,AAAA"', page, count=1)
    broken = re.sub(r'(<table id="table-adapters">.*?<tbody>).*?(</tbody>)', r"\1\2", broken, count=1)
    broken = broken.replace("</body>", "<script>console.error('boom')</script></body>")
    (tmp_path / "broken.html").write_text(broken)
    bad = shot.problems(shot.inspect(browser, tmp_path / "broken.html"))
    assert any(p.startswith("image forgetting.png did not load") for p in bad), bad
    assert "table table-adapters has no rows" in bad
    assert any("console error" in p and "boom" in p for p in bad), bad


def test_first_screen_is_a_paragraph_per_task_then_both_forgetting_matrices(run_dir, forgetting):
    md = (run_dir / "report" / "report.md").read_text()
    glance, nll, primary = (md.index(h) for h in ("## At a glance", "## Forgetting matrix (held-out NLL",
                                                    "## Forgetting matrix (primary"))
    assert glance < nll < primary < md.index("## Adapters")
    before, after = forgetting["nll"][0][0], forgetting["nll"][1][0]
    para = next(line for line in md.splitlines() if line.startswith("**safety**: "))
    assert "learned at stage safety: held-out NLL" in para and f"{before:.3f} → {after:.3f}" in para
    assert next(line for line in md.splitlines() if line.startswith("**math**: "))
    page = (run_dir / "report" / "report.html").read_text()
    side = page[page.index('<div class="side">'):]
    assert side.index('id="table-forgetting_nll"') < side.index('id="table-forgetting"') < side.index("</div>")


def test_constant_quantities_are_a_sentence_never_a_panel_or_a_ranking(run_dir, report, monkeypatch):
    from matplotlib.axes import Axes

    from workbench.analytics.plots import render_all

    constants = report["constants"]  # one chain: one frozen A, disjoint masks
    assert {m: c["value"] for m, c in constants.items()} == {
        "a_mean_sq_cos": 1.0, "interference": 1.0, "cross_energy": 1.0, "mask_jaccard": 0.0}
    md = (run_dir / "report" / "report.md").read_text()
    assert md.count("A mean cos², interference and cross energy are exactly 1 for every pair and module") == 1
    assert "Modules that interfere most" not in md
    header = next(line for line in md.splitlines() if line.startswith("| pair (a / b)"))
    assert "A mean cos²" not in header and "interf." not in header and "B mean cos²" in header
    drawn = []
    real = Axes.imshow
    monkeypatch.setattr(Axes, "imshow", lambda ax, x, **kw: drawn.append((ax.get_title(), np.ma.filled(x, np.nan)))
                        or real(ax, x, **kw))
    render_all(report)
    titles = [t for t, _ in drawn]
    assert titles and not any("lora_A" in t or "interference" in t or "cross energy" in t for t in titles)
    for title, values in drawn:  # no panel is one flat colour
        finite = values[np.isfinite(values)]
        assert finite.max() - finite.min() > 1e-9 * max(1.0, abs(finite).max()), title


def test_training_curves_and_summary_show_the_held_out_change(run_dir, report, forgetting):
    stages = {s["name"]: s for s in report["training"]}
    assert list(stages) == ["safety", "math"]
    for j, name in enumerate(["safety", "math"]):
        s, row = stages[name], forgetting["row_adapters"].index(name)
        assert len(s["loss"]) == len(s["smoothed"]) == 3 and s["task"] == name
        assert (s["heldout_before"], s["heldout_after"]) == (forgetting["nll"][row - 1][j], forgetting["nll"][row][j])
    assert "training.png" in report["files"]["images"]
    summary = (run_dir / "summary.md").read_text()
    for name, s in stages.items():
        line = next(li for li in summary.splitlines() if li.startswith(f"| {name} |"))
        b, a = s["heldout_before"], s["heldout_after"]
        assert f"held-out NLL ({name}) {b:.3f} -> {a:.3f} ({a - b:+.3f})" in line and "batch loss" not in line
    probe = next(li for li in summary.splitlines() if li.startswith("| safety_probe |"))
    assert "no held-out evaluation" in probe
