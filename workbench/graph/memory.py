"""Give memory back to the OS between stages.

Each stage loads its own copy of the base model. When it ends, Python frees the tensors, but glibc keeps
the freed pages in its arenas: measured on SmolLM2-135M, a process that loaded the model, ran a batch and
dropped everything still held 1.8 GB resident, and 0.4 GB after ``malloc_trim(0)``. Without the trim, a
long pipeline's resident memory only grows and each stage's measured peak includes its predecessors'
leftovers. Nothing in the Python or torch APIs does this, hence these few lines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (musl, macOS, Windows: nothing to do there)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """Collect garbage and return freed heap pages to the OS. Returns whether a trim was possible."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


# Peak resident memory of one stage. ru_maxrss keeps the whole process's maximum, so after a big stage
# every later stage would read as big; Linux (>= 4.0) resets the high-water mark VmHWM to the current RSS
# when "5" is written to /proc/self/clear_refs, which makes the peak a per-stage number: the stage's own
# peak, on top of what the process already held when it started (interpreter, libraries, caches).
_STATUS = "/proc/self/status"


def _status_mb(field: str) -> float | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float | None:
    """Resident memory of this process now, in MB (None where /proc is absent)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    """The high-water mark of resident memory since the last :func:`reset_peak_rss`, in MB (None where
    /proc is absent)."""
    return _status_mb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS. Returns False where that is impossible (not Linux, an
    old kernel, a sandbox refusing the write): the caller must not report the mark as a per-stage peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    before = peak_rss_mb()
    now = rss_mb()
    # the reset worked iff the mark fell to about the current RSS (a kernel that ignores "5" keeps it)
    return before is not None and now is not None and before <= now + 8


class PeakRSS:
    """``with PeakRSS() as p: ...`` then ``p.mb``: the peak resident memory of the block above the RSS at its
    start, in MB (None where the peak mark cannot be reset). Used by the benchmarks' peak-memory columns."""

    mb: float | None = None

    def __enter__(self) -> "PeakRSS":
        release_memory()
        self._ok = reset_peak_rss()
        self._start = rss_mb()
        return self

    def __exit__(self, *exc) -> None:
        peak = peak_rss_mb()
        if self._ok and peak is not None and self._start is not None:
            self.mb = max(peak - self._start, 0.0)
