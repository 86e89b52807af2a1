"""Merging LoRA adapters: one registered pure function per strategy (see README.md in this folder).

Importing this package registers the built-in strategies.
"""

from workbench.merges import (concat, dare_linear, dare_ties, linear, lori_disjoint,  # noqa: F401
                              magnitude_prune, svd, task_arithmetic, ties)
from workbench.merges.api import (merge, merge_adapters_into_base, merge_into_base, merge_to_dir,  # noqa: E402
                                  plan_merge)
from workbench.merges.registry import MERGES, MergeContext, register_merge  # noqa: E402

__all__ = ["MERGES", "MergeContext", "merge", "merge_adapters_into_base", "merge_into_base", "merge_to_dir",
           "plan_merge", "register_merge"]
