"""Progress for long steps that reads well in a terminal and in a log file.

In a terminal: a tqdm bar (with the step's numbers as postfix). Anywhere else (CI, ``nohup``, a Ray or
accelerate worker, a pipe): tqdm would write one carriage-return update per step, which a log shows as
one enormous line, so instead one plain line every ``WORKBENCH_LOG_EVERY`` seconds (default 30) and a
last line at the end. tqdm has no such mode (``mininterval`` only slows the ``\\r`` updates), hence
this small wrapper.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO


def log_interval() -> float:
    """Seconds between two progress lines in a non-terminal log (``WORKBENCH_LOG_EVERY``, default 30)."""
    try:
        return max(float(os.environ.get("WORKBENCH_LOG_EVERY", "30")), 0.0)
    except ValueError:
        return 30.0


class LineProgress:
    """A tqdm-like object (``update``, ``set_postfix``, ``close``) that prints whole lines, at most one per
    ``interval`` seconds, plus the final state on ``close``."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, file: IO | None = None,
                 interval: float | None = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.file = file or sys.stderr
        self.interval = log_interval() if interval is None else interval
        self.postfix: dict[str, str] = {}
        self._start = self._last = time.monotonic()
        self._printed_n = None

    def set_postfix(self, **values) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def close(self) -> None:
        if self._printed_n != self.n:
            self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        of = f"/{self.total}" if self.total else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}{of} {self.unit}s{extra} ({now - self._start:.0f}s)", file=self.file, flush=True)
        self._printed_n = self.n

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str = "step", initial: int = 0, enabled: bool = True,
             file: IO | None = None):
    """A progress object for a loop of ``total`` units, or None when disabled.

    Args:
        total: units expected (None if unknown).
        desc: what is progressing (``train``, ``generate``, ...), the line's first word.
        unit: singular unit name.
        initial: units already done (a resumed run).
        enabled: False gives None (callers skip their updates).
        file: where to write (default stderr); a terminal gets a tqdm bar, anything else lines.

    Returns:
        A tqdm bar, a :class:`LineProgress`, or None.
    """
    if not enabled:
        return None
    stream = file or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return LineProgress(total, desc, unit, initial=initial, file=stream)


def quiet_third_party() -> None:
    """Silence noise a user cannot act on, in the CLI and in every stage worker (``--jobs``, Ray,
    ``accelerate launch``: their processes do not run the CLI): bitsandbytes asks for the hub-only
    ``kernels`` package on every import, transformers warns about its own renamed internals."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # filterwarnings replaces an identical filter, so a call per stage adds nothing twice
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
