"""LoRI-S masks: calibration, disjoint allocation, checks and display. Masks are immutable values."""

from workbench.masking.calibrate import calibrate, calibrate_adapter, calibrate_to_file, check_sparsity
from workbench.masking.checks import check_density, check_disjoint, check_mask_matches
from workbench.masking.mask import Mask, Overlap, density_by, density_table, overlap, union
from workbench.masking.scopes import SCOPES

__all__ = ["Mask", "Overlap", "SCOPES", "calibrate", "calibrate_adapter", "calibrate_to_file", "check_density",
           "check_disjoint", "check_mask_matches", "check_sparsity", "density_by", "density_table", "overlap",
           "union"]
