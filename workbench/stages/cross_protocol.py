"""Methods under different protocols in one seed report: ``--compare official:lori_s``.

A protocol is a bundle of settings for a whole pipeline (``workbench/protocols.py``), so a method under
another protocol cannot be one more chain inside the same pipeline. ``--compare PROTOCOL:METHOD`` (with
``--seeds``, chains only) therefore runs that protocol's chain as a second pipeline in ``OUT/<protocol>/``
(one ``seed-<s>/`` run per seed, its own aggregated report in ``OUT/<protocol>/report/``), and
``OUT/report/`` sets every method of every protocol side by side, its groups named
``<protocol>:<method>``.

What is compared across protocols, and what is not:

- The primary metric, paired by seed and by prompt: prompts are identified by the request itself, not by
  its formatting, so the same held-out harmful request pairs up under both templates. Every safety result
  carries each built-in judge's verdicts (``refusal_rate@<judge>``); the other protocol's cells are
  re-read under the main run's judge, so a difference is never a difference of judges.
- Not the held-out NLL: each protocol scores it on its own prompt format (the official template has no
  chat template), so its values are shown per protocol but never tested against each other; nor the base
  model's row (the same weights, only the prompt format differs).
"""

from __future__ import annotations

from workbench.errors import ConfigError

SEP = ":"


def split_compare(pipeline_or_chain: str, options: dict) -> list[tuple[str, dict]]:
    """The pipelines one ``--seeds`` run holds: ``[("", main options), (protocol, its options), ...]``.

    ``compare`` entries ``PROTOCOL:METHOD`` leave the main pipeline's ``compare`` and form, per protocol,
    one chain of their methods (the first is its ``method``, the rest its ``compare``).

    Raises:
        ConfigError: a ``PROTOCOL:METHOD`` entry for a pipeline file, an unknown protocol, or an empty part.
    """
    from workbench.pipeline.loader import looks_like_chain
    from workbench.protocols import DEFAULT_PROTOCOL, get_protocol

    main_protocol = get_protocol(options.get("protocol") or DEFAULT_PROTOCOL).name
    plain, cross = [], {}
    for entry in options.get("compare") or []:
        if SEP not in entry:
            plain.append(entry)
            continue
        protocol, method = (t.strip() for t in entry.split(SEP, 1))
        if not protocol or not method:
            raise ConfigError(f"--compare '{entry}': write PROTOCOL:METHOD, e.g. --compare official:lori_s")
        protocol = get_protocol(protocol).name
        if protocol == main_protocol:
            plain.append(method)
        else:
            cross.setdefault(protocol, []).append(method)
    if cross and not looks_like_chain(str(pipeline_or_chain)):
        raise ConfigError(f"--compare {SEP.join((next(iter(cross)), cross[next(iter(cross))][0]))}: a method under "
                          "another protocol needs a chain (e.g. 'safety->math'), not a pipeline file")
    parts = [("", {**options, "compare": plain})]
    for protocol, methods in cross.items():
        parts.append((protocol, {**options, "protocol": protocol, "method": methods[0], "compare": methods[1:]}))
    return parts


def group_name(label: str, group: str) -> str:
    return f"{label}{SEP}{group}" if label else group


def stage_name(label: str, stage: str) -> str:
    return f"{label}/{stage}" if label else stage


def align_judge(evals: dict, judge: str | None) -> dict:
    """``evals`` with every safety cell re-read under ``judge``: ``refusal_rate@<judge>`` (and each split's,
    and the benign answer rate's) become the unsuffixed metrics and per-prompt outcomes. Cells without
    that judge's verdicts (results from before they were stored) are left as they are."""
    if not judge:
        return evals
    suffix = f"@{judge}"
    out = {}
    for stage, tasks in evals.items():
        out[stage] = {}
        for task, rec in tasks.items():
            if not any(k.endswith(suffix) for k in rec["metrics"]):
                out[stage][task] = rec
                continue
            metrics, per_prompt = dict(rec["metrics"]), dict(rec.get("per_prompt") or {})
            for key in [k for k in metrics if k.endswith(suffix)]:
                metrics[key[:-len(suffix)]] = metrics[key]
            for key in [k for k in per_prompt if k.endswith(suffix)]:
                per_prompt[key[:-len(suffix)]] = per_prompt[key]
            out[stage][task] = {**rec, "metrics": metrics, "per_prompt": per_prompt, "judge": judge}
    return out


def main_judge(evals: dict) -> str | None:
    """The judge the main run's safety cells were scored with (None when it scored no safety task)."""
    return next((rec["judge"] for tasks in evals.values() for rec in tasks.values() if rec.get("judge")), None)


def merge_parts(parts: list[dict], seeds: list) -> tuple[dict, dict, dict]:
    """One seed report's inputs from several pipelines' (``parts``: ``{"label", "data", "groups",
    "points", "rename"}``, the main one first with label ``""``; ``rename`` maps a group to its name here,
    e.g. a one-method pipeline's group, named after the pipeline, to its method).

    Returns:
        ``(data, groups, score_points)`` as :func:`workbench.analytics.seed_report.build_seed_report`
        takes them: stage names prefixed ``<label>/``, groups named ``<label>:<group>`` and carrying their
        ``protocol`` label, the other parts' safety cells under the main part's judge.
    """
    judge = main_judge(parts[0]["data"][seeds[0]]["evals"])
    data = {s: {"evals": {}, "summaries": {}} for s in seeds}
    groups, points = {}, {s: [] for s in seeds}
    for part in parts:
        label = part["label"]
        for s in seeds:
            evals = part["data"][s]["evals"]
            evals = align_judge(evals, judge) if label else evals
            data[s]["evals"].update({stage_name(label, k): v for k, v in evals.items()})
            data[s]["summaries"].update({group_name(label, part["rename"].get(g, g)): v
                                         for g, v in part["data"][s]["summaries"].items()})
            points[s] += [{**p, "group": group_name(label, part["rename"].get(p.get("group") or "", p.get("group") or ""))}
                          for p in part["points"].get(s, [])]
        for g, f in part["groups"].items():
            groups[group_name(label, part["rename"].get(g, g))] = {
                **f, "stages": [stage_name(label, st) for st in f["stages"]], "protocol": label}
    return data, groups, points
