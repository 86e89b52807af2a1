"""What a continued adapter added: the difference of two snapshots of one continual chain, in factor form.

In a chain, stage k's adapter *contains* stages 1..k-1 (a LoRI-S chain keeps their B entries bit for bit,
and every stage shares one frozen A). Comparing the cumulative snapshots pairwise would report an
A overlap of 1 and a B overlap inflated by the shared entries: true, but not the question. The question
is how the *task updates* interfere, so the analysis compares increments ``delta_W_k - delta_W_{k-1}``.
"""

from __future__ import annotations

import torch

from workbench.adapters.factors import ModuleFactors


def increment(current: dict[str, ModuleFactors], previous: dict[str, ModuleFactors]) -> dict[str, ModuleFactors]:
    """Per module, the update ``current`` adds over ``previous`` (``delta_W_cur - delta_W_prev``), factorised.

    Same A and scaling (LoRI: A frozen and shared): ``(A, B_cur - B_prev)``, still rank r, and exactly
    zero on entries the later stage never touched. Otherwise (plain LoRA continues A too): the rank-2r
    factors ``([A_cur; A_prev], [s_cur B_cur, -s_prev B_prev])`` with scaling 1, exact without a dense
    product. A module only ``current`` has is its own increment.
    """
    out = {}
    for module, cur in current.items():
        prev = previous.get(module)
        if prev is None:
            out[module] = cur
        elif cur.A.shape == prev.A.shape and torch.equal(cur.A, prev.A) and cur.scaling == prev.scaling:
            out[module] = ModuleFactors(cur.A, cur.B - prev.B.to(cur.B.dtype), cur.scaling)
        else:
            a = torch.cat([cur.A.float(), prev.A.float()], dim=0)
            b = torch.cat([cur.scaling * cur.B.float(), -prev.scaling * prev.B.float()], dim=1)
            out[module] = ModuleFactors(a, b, 1.0)
    return out
