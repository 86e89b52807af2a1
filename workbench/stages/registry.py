"""Registers each stage kind's executor with the engine (``workbench.graph.EXECUTORS``)."""

from __future__ import annotations

from workbench.graph.engine import EXECUTORS
from workbench.stages.analyze_stage import run_analyze
from workbench.stages.calibrate_stage import run_calibrate
from workbench.stages.evaluate_stage import run_evaluate
from workbench.stages.merge_stage import run_merge
from workbench.stages.train_stage import run_continue, run_train

BUILTIN = {"train": run_train, "continue": run_continue, "calibrate": run_calibrate, "merge": run_merge,
           "evaluate": run_evaluate, "analyze": run_analyze}

for _kind, _fn in BUILTIN.items():
    if _kind not in EXECUTORS:
        EXECUTORS.add(_kind, _fn)
