"""workbench: continual learning and merging of LoRA-family adapters, built around LoRI.

The public Python API; examples and notebooks import only from here.

Names are imported on first use (PEP 562 ``__getattr__``): ``import workbench.graph`` or
``workbench validate`` must not pay for (or depend on) torch and transformers.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Adapter": "workbench.adapters.adapter",
    "load_adapter": "workbench.adapters.adapter",
    "WorkbenchError": "workbench.errors",
    "BaseSpec": "workbench.models.base",
    "load_base": "workbench.models.base",
    "load_pipeline": "workbench.pipeline",
    "validate": "workbench.pipeline",
    "expand_chain": "workbench.pipeline",
    "run_pipeline": "workbench.graph",
    "plan": "workbench.graph",
    "run": "workbench.stages.run",
    "stream": "workbench.stages.run",
    "AdapterSpec": "workbench.adapters.spec",
    "TrainConfig": "workbench.train.config",
    "train": "workbench.train.loop",
    "train_task": "workbench.stages.train",
    "attach": "workbench.adapters.live",
    "extract": "workbench.adapters.live",
    "load_onto": "workbench.adapters.live",
    "Mask": "workbench.masking.mask",
    "calibrate": "workbench.masking.calibration",
    "calibrate_adapter": "workbench.masking.calibration",
    "load_mask": "workbench.masking.file",
    "save_mask": "workbench.masking.file",
    "merge": "workbench.merges.api",
    "merge_into_base": "workbench.merges.api",
    "register_merge": "workbench.merges.registry",
    "register_method": "workbench.adapters.registry",
    "Method": "workbench.adapters.method",
    "MethodOptions": "workbench.adapters.method",
    "register_stage_kind": "workbench.pipeline.kinds",
    "StageSettings": "workbench.pipeline.kinds",
    "StageResult": "workbench.graph.task",
    "TrainSettings": "workbench.settings",
    "build_report": "workbench.analytics.report",
    "attribute_modules": "workbench.analytics.attribution",
    "evaluate_task": "workbench.evaluate.api",
    "evaluate_adapter": "workbench.evaluate.api",
    "get_task": "workbench.data.registry",
    "register_task": "workbench.data.registry",
    "custom_task": "workbench.data.tasks.custom",
    "export_compact": "workbench.adapters.compact",
    "export_peft": "workbench.adapters.compact",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return __all__
