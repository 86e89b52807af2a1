"""Task metrics, one module per task kind; importing this package registers every kind in ``KINDS``."""

from workbench.evaluate.metrics import code, custom, math, nlu, safety  # noqa: F401  (registration)
from workbench.evaluate.metrics.registry import KINDS, register_kind, select_records

__all__ = ["KINDS", "register_kind", "select_records"]
