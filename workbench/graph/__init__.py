"""The task graph: stage values, scheduling (networkx), the content-addressed run store and the engine.

This layer imports no transformers and no torch.nn (tests/test_graph.py checks it), so planning and
``workbench status`` stay fast and executors are the only place that touches models.
"""

from workbench.graph.engine import EXECUTORS, PlannedStage, StageContext, plan, run_all, run_pipeline
from workbench.graph.lock import RunLock, RunLockedError
from workbench.graph.scheduler import GraphError, check_dependencies, find_cycles, format_cycle, schedule
from workbench.graph.store import RunStore, compute_keys
from workbench.graph.task import StageResult, Task, canonical_json

__all__ = ["EXECUTORS", "GraphError", "PlannedStage", "RunLock", "RunLockedError", "RunStore", "StageContext",
           "StageResult", "Task", "canonical_json", "check_dependencies", "compute_keys", "find_cycles",
           "format_cycle", "plan", "run_all", "run_pipeline", "schedule"]
