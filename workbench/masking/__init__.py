"""LoRI-S masks: calibration, disjoint allocation, checks and display. Masks are immutable values.

Names are imported on first use (PEP 562): ``workbench validate`` checks mask scopes through
``workbench.masking.scopes`` without importing torch. (No submodule is named like an exported function:
importing ``workbench.masking.calibration`` cannot shadow ``workbench.masking.calibrate``.)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "calibrate": "calibration", "calibrate_adapter": "calibration", "calibrate_to_file": "calibration",
    "calibrate_many": "calibration", "calibrate_to_dir": "calibration", "check_sparsity": "calibration",
    "check_density": "checks", "check_disjoint": "checks", "check_mask_matches": "checks",
    "Mask": "mask", "Overlap": "mask", "density_by": "mask", "density_table": "mask", "overlap": "mask",
    "union": "mask", "SCOPES": "scopes",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
