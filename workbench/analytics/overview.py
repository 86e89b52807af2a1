"""The report's first screen: one paragraph per task, in words with numbers, from the forgetting matrices.

For each task: what it learned (held-out NLL and primary metric just before and just after the stage that
trained it), what it forgot afterwards (the later row where it was worst, relative to its post-training
value, and what share of its gain that gives back) and where it ended. Held-out NLL leads: the primary
metric of a small model or a short run is often 0 everywhere, while the NLL moves. Cell intervals are
shown when the forgetting input carries them (``interval`` / ``nll_interval``, e.g. over seeds).
"""

from __future__ import annotations

from workbench.analytics.constants import is_constant

TINY = 1e-12  # below this a change is rounding, not forgetting


def row_label(f: dict, r: int, base: str = "the base model") -> str:
    """What row ``r`` scores: the stage whose adapter it evaluates (``row_adapters``; ``base`` for the base
    model), else the row's own stage name."""
    adapters = f.get("row_adapters")
    if adapters is None:
        return f["stages"][r]
    return adapters[r] if adapters[r] is not None else base


def course(values: list, learned: int | None, lower_is_better: bool) -> dict | None:
    """One task's column followed from the row that learned it (or, not learned here, from the first row).

    Args:
        values: the task's value after each row (None where not measured).
        learned: the row that trained the task, or None.
        lower_is_better: NLL; False for a primary metric where higher is better.

    Returns:
        ``before``/``after`` (the row before the learning row and the learning row; both ``start`` rows
        when not learned), ``change``, ``gain`` (improvement, positive = better), the ``worst`` later row
        and its ``damage`` relative to ``after`` (positive = worse), the ``final`` row and its damage; rows
        as indices. None when the learning row has no value.
    """
    measured = [r for r, v in enumerate(values) if v is not None]
    start = learned if learned is not None else (measured[0] if measured else None)
    if start is None or values[start] is None:
        return None
    sign = 1.0 if lower_is_better else -1.0
    earlier = [r for r in measured if r < start] if learned is not None else []
    before = earlier[-1] if earlier else None
    out = {"before_row": before, "before": values[before] if before is not None else None,
           "after_row": start, "after": values[start]}
    out["change"] = None if before is None else out["after"] - out["before"]
    out["gain"] = None if before is None else -sign * out["change"]
    later = [r for r in measured if r > start]
    damage = {r: sign * (values[r] - out["after"]) for r in later}
    worst = max(later, key=damage.get) if later else None
    out.update(worst_row=worst, worst=values[worst] if worst is not None else None,
               worst_damage=damage.get(worst), final_row=later[-1] if later else None,
               final=values[later[-1]] if later else None, final_damage=damage[later[-1]] if later else None)
    return out


def _column(grid, j: int) -> list:
    return [row[j] for row in grid] if grid is not None else []


def task_entries(f: dict) -> list[dict]:
    """Per task: ``task``, ``learned_at``, ``learned_by``, ``metric``, ``nll`` and ``primary`` courses
    (see :func:`course`; null where that matrix is absent or the learning row is unmeasured)."""
    out = []
    for j, task in enumerate(f["tasks"]):
        learned = (f.get("learned_at") or [None] * len(f["tasks"]))[j]
        hib = (f.get("higher_is_better") or {}).get(task, True)
        metric = (f.get("metrics") or {}).get(task, f["metric"])
        primary = _column(f["matrix"], j)
        out.append({"task": task, "learned_at": learned,
                    "learned_by": row_label(f, learned) if learned is not None else None, "metric": metric,
                    "higher_is_better": hib,
                    "nll": course(_column(f.get("nll"), j), learned, True) if f.get("nll") else None,
                    "primary": course(primary, learned, not hib),
                    "primary_constant": is_constant([v for v in primary if v is not None], 0.0)})
    return out


def signed(v: float, digits: int = 3) -> str:
    """A change with its sign, never '-0.000' (a change that rounds to 0 is +0.000)."""
    return f"{round(v, digits) + 0.0:+.{digits}f}"


def _num(v, interval=None, digits: int = 3) -> str:
    text = "–" if v is None else f"{v:.{digits}f}"
    return text + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "")


def _cell_interval(f: dict, key: str, r, j: int):
    grid = f.get(key)
    return grid[r][j] if grid is not None and r is not None else None


def _lead(e: dict) -> tuple[dict | None, str, str]:
    """The measure a paragraph follows: held-out NLL where measured, else the primary metric."""
    if e["nll"] is not None:
        return e["nll"], "held-out NLL", "nll_interval"
    return e["primary"], e["metric"], "interval"


def _learned_words(e: dict, f: dict, j: int) -> str:
    lead, name, key = _lead(e)
    if e["learned_at"] is None:
        if f.get("learned_at") is not None:
            return "not trained in this run"
        return f"first measured after {row_label(f, lead['after_row'])}" if lead else "never measured"
    head = f"learned at stage {e['learned_by']}"
    if lead and lead["before"] is not None:
        worse = lead["gain"] < -TINY
        verb = "stayed at" if abs(lead["change"]) <= TINY else "rose" if lead["change"] > 0 else "fell"
        head += (f": {name} {verb} {_num(lead['before'], _cell_interval(f, key, lead['before_row'], j))}"
                 f" → {_num(lead['after'], _cell_interval(f, key, lead['after_row'], j))} ({signed(lead['change'])})"
                 + (", so it did not learn its task there" if worse else ""))
    p = e["primary"]
    if lead is not p and p and p["before"] is not None and not e["primary_constant"]:
        head += (f"; {e['metric']} {_num(p['before'], _cell_interval(f, 'interval', p['before_row'], j))}"
                 f" → {_num(p['after'], _cell_interval(f, 'interval', p['after_row'], j))}")
    return head


def _forgot_words(e: dict, f: dict, j: int) -> str:
    lead, name, key = _lead(e)
    if lead is None:
        return ""
    if lead["worst_row"] is None:
        return "No later stage to forget it in."
    if lead["worst_damage"] <= TINY:
        bound = "at or below" if lead is e["nll"] or not e["higher_is_better"] else "at or above"
        return (f"Nothing forgotten afterwards: its {name} stayed {bound} {_num(lead['after'])} "
                f"through {row_label(f, lead['final_row'])}.")
    gain = lead["gain"]
    share = f", {lead['worst_damage'] / gain:.0%} of what it learned" if gain is not None and gain > TINY else ""
    text = (f"It forgot most after {row_label(f, lead['worst_row'])}: {name} "
            f"{_num(lead['worst'], _cell_interval(f, key, lead['worst_row'], j))} "
            f"({signed(lead['worst'] - lead['after'])} from its post-training value{share})")
    if lead["final_row"] != lead["worst_row"]:
        text += (f"; at the end (after {row_label(f, lead['final_row'])}) {_num(lead['final'])} "
                 f"({signed(lead['final'] - lead['after'])})")
    return text + "."


def _primary_words(e: dict) -> str:
    p, metric = e["primary"], e["metric"]
    if p is None or p is _lead(e)[0]:
        return ""
    if e["primary_constant"]:
        return f"{metric} is {_num(p['after'])} at every stage."
    if p["final_row"] is None:
        return ""
    return f"{metric} at the end: {_num(p['final'])} ({signed(p['final'] - p['after'])} since it was learned)."


def paragraph(e: dict, f: dict, j: int) -> str:
    """One task's paragraph (without the task name, which the renderers set in bold)."""
    parts = [_learned_words(e, f, j) + ".", _forgot_words(e, f, j), _primary_words(e)]
    return " ".join(p for p in parts if p)


def overview(report: dict, constants_text: str = "") -> dict:
    """The report's ``overview``: ``tasks`` (entries with a ``paragraph`` each; empty without a forgetting
    matrix) and ``notes`` (sentences on what does not vary)."""
    f = report.get("forgetting")
    notes = [constants_text] if constants_text else []
    if not f or not f["tasks"] or not f["stages"]:
        return {"tasks": [], "notes": notes}
    tasks = task_entries(f)
    for j, e in enumerate(tasks):
        e["paragraph"] = paragraph(e, f, j)
    values = [v for row in f["matrix"] for v in row if v is not None]
    if is_constant(values, 0.0):
        notes.append(f"Every primary-metric cell is {values[0]:g}: only the held-out NLL shows what was "
                     "learned and forgotten here.")
    return {"tasks": tasks, "notes": notes}
