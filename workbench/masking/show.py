"""Text rendering of a mask for ``workbench masks show``: overall density, a layer x projection table,
and the overlap with other masks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from workbench.masking.mask import Mask, density_table, overlap

# Llama's projections in forward order; other names follow alphabetically.
_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _columns(table: dict[str, dict[str, float]]) -> list[str]:
    names = {p for row in table.values() for p in row}
    return [p for p in _ORDER if p in names] + sorted(names - set(_ORDER))


def render_table(mask: Mask) -> list[str]:
    """Rows ``layer  q_proj% k_proj% ...`` (density in percent; '-' where a layer lacks a projection)."""
    table = density_table(mask)
    cols = _columns(table)
    width = max([len(c) for c in cols] + [6])
    lines = ["layer".ljust(6) + "".join(c.rjust(width + 1) for c in cols)]
    for layer, row in table.items():
        cells = (f"{100 * row[c]:.1f}" if c in row else "-" for c in cols)
        lines.append(layer.ljust(6) + "".join(cell.rjust(width + 1) for cell in cells))
    return lines


def render_mask(mask: Mask, name: str, others: Sequence[tuple[str, Mask]] = ()) -> str:
    """The full ``masks show`` report for ``mask`` (called ``name``) and its overlap with ``others``."""
    meta = mask.meta
    lines = [
        f"mask {name}",
        f"  content hash  {mask.content_hash()}",
        f"  kept          {mask.kept()} of {mask.total()} entries (density {mask.density():.4%})",
        f"  sparsity      {meta.get('sparsity')}   scope {meta.get('scope')}",
        f"  base          {meta.get('base_fingerprint') or '-'}",
        f"  source        {meta.get('source_adapter_hash') or '-'}",
        f"  excluded      {len(meta.get('excluded') or [])} mask(s)",
        "",
        "density by layer x projection (%)",
        *render_table(mask),
    ]
    for other_name, other in others:
        ov = overlap(mask, other)
        lines.append(f"overlap with {other_name}: {ov.total} shared entries, Jaccard {ov.jaccard:.4f}")
    return "\n".join(lines)


def show_mask_files(path: str | os.PathLike, vs: Sequence[str | os.PathLike] = ()) -> str:
    """Load ``path`` and the ``vs`` masks (all checked) and render the report."""
    from workbench.masking.file import load_mask

    mask = load_mask(path)
    others = [(str(p), load_mask(p)) for p in vs]
    return render_mask(mask, Path(path).name, others)
