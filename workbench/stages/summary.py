"""A short Markdown overview of a finished run: stages, their headline numbers, the forgetting matrix."""

from __future__ import annotations


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _num(v, digits: int) -> str:
    """Counts and rates at their own precision, with thousands separators: 1,244,160 trainable, 2,385 MB."""
    return "-" if v is None else f"{v:,.{digits}f}"


def _headline(kind: str, metrics: dict) -> str:
    if kind in ("train", "continue"):
        # runs from before loss_head/loss_tail existed show the single first and last batch
        head, tail = metrics.get("loss_head", metrics.get("first_loss")), metrics.get("loss_tail", metrics.get("last_loss"))
        window = f" (mean of first/last {metrics['loss_window']} steps)" if metrics.get("loss_window", 1) > 1 else ""
        return (f"loss {_fmt(head)} -> {_fmt(tail)}{window}, {metrics.get('steps')} steps, "
                f"{_num(metrics.get('tokens_per_s'), 1)} tok/s, {_num(metrics.get('trainable_params'), 0)} trainable, "
                f"peak RSS {_num(metrics.get('peak_rss_mb'), 0)} MB")
    if kind == "calibrate":
        return f"kept {metrics.get('kept')} (density {_fmt(metrics.get('density'))})"
    if kind == "evaluate":
        return ", ".join(f"{t}: {m.get('primary')}={_fmt(m.get('value'))}" for t, m in metrics.items())
    return ""


def summary_markdown(pipeline, results: dict) -> str:
    lines = [f"# Run: {pipeline.name}", "", "| stage | kind | result |", "|---|---|---|"]
    for name in pipeline.order():
        if name in results:
            lines.append(f"| {name} | {pipeline.task(name).kind} | {_headline(pipeline.task(name).kind, results[name].metrics)} |")
    return "\n".join(lines) + "\n"
