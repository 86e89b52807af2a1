"""The table of built-in stage kinds: one row per kind, each described in full in its own module.

Importing this module registers every row with :data:`workbench.pipeline.kinds.STAGE_KINDS` (the schema,
planner, checks and summary read it) and its executor with the engine (``workbench.graph.EXECUTORS``).
A new built-in kind is one module ``workbench/stages/<kind>_stage.py`` defining ``KIND`` plus one row
here; a plugin registers its own with ``workbench.register_stage_kind``.
"""

from __future__ import annotations

from workbench.pipeline.kinds import STAGE_KINDS, add_stage_kind
from workbench.stages import (analyze_stage, calibrate_stage, continue_stage, evaluate_stage, merge_stage,
                              train_stage)

BUILTIN = (
    train_stage.KIND,
    continue_stage.KIND,
    calibrate_stage.KIND,
    merge_stage.KIND,
    evaluate_stage.KIND,
    analyze_stage.KIND,
)

for _kind in BUILTIN:
    if _kind.name not in STAGE_KINDS:
        add_stage_kind(_kind)
