"""Progress output: a tqdm bar in a terminal, whole lines at most every N seconds anywhere else."""

from __future__ import annotations

import io

from workbench.progress import LineProgress, progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_log_gets_lines_without_carriage_returns():
    out = io.StringIO()
    bar = progress(100, "train", initial=0, file=out)
    assert isinstance(bar, LineProgress)
    bar.interval = 0.0  # every update is due: the worst case for a log
    for i in range(5):
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 5  # close() repeats nothing already printed
    assert lines[-1].startswith("train: 5/100 steps loss=0.200")


def test_lines_are_rate_limited_and_the_last_state_is_printed():
    out = io.StringIO()
    bar = LineProgress(1000, "generate", "prompt", file=out, interval=3600)
    for _ in range(1000):
        bar.update(1)
    assert out.getvalue() == ""
    bar.close()
    assert out.getvalue().splitlines() == [out.getvalue().strip()]
    assert out.getvalue().startswith("generate: 1000/1000 prompts")


def test_terminal_gets_a_tqdm_bar_and_disabled_gets_none():
    from tqdm import tqdm

    bar = progress(3, "train", file=_Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    assert progress(3, "train", enabled=False) is None


def test_interval_from_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_LOG_EVERY", "7")
    assert LineProgress(1, "x", "step", file=io.StringIO()).interval == 7.0
    monkeypatch.setenv("WORKBENCH_LOG_EVERY", "soon")
    assert LineProgress(1, "x", "step", file=io.StringIO()).interval == 30.0
