"""Reports the fault harness's counters at the end of a session: printed in the terminal summary and
stored in the pytest cache (``.pytest_cache/v/workbench/faults``), or in the JSON file named by
``WORKBENCH_FAULT_COUNTS``, for docs/reliability.md."""

import json
import os

from .harness import COUNTS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not any(COUNTS.values()):
        return  # no fault test ran in this session
    counts = dict(sorted(COUNTS.items()))
    terminalreporter.write_sep("-", "fault harness")
    terminalreporter.write_line(" ".join(f"{k}={v}" for k, v in counts.items()))
    if config.cache is not None:
        config.cache.set("workbench/faults", counts)
    target = os.environ.get("WORKBENCH_FAULT_COUNTS")
    if target:
        with open(target, "w", encoding="utf-8") as f:
            json.dump(counts, f, indent=2, sort_keys=True)
