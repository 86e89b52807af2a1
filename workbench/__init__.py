"""workbench: continual learning and merging of LoRA-family adapters, built around LoRI.

The public Python API; examples and notebooks import only from here.
"""

__version__ = "0.1.0"

from workbench.adapters.adapter import Adapter, load_adapter  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.models.base import BaseSpec, load_base  # noqa: E402

__all__ = ["Adapter", "BaseSpec", "WorkbenchError", "load_adapter", "load_base", "__version__"]
