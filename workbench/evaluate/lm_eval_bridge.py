"""EleutherAI lm-evaluation-harness tasks on a loaded model, in-process and offline.

The harness (https://github.com/EleutherAI/lm-evaluation-harness, the optional extra ``[lm-eval]``) is
wrapped, not re-implemented: its ``HFLM`` is built around the model and tokenizer we already loaded (the
base, a ``PeftModel``, or an AdaLoRA model from :func:`workbench.evaluate.api.load_for_eval`) and
``lm_eval.simple_evaluate`` runs the tasks, with a ``TaskManager`` that also indexes local task YAML
(``include_path``). A PEFT adapter is merged for the run, as our own scoring does, and unmerged after.

Each requested task becomes one result shaped like :func:`workbench.evaluate.api.evaluate_task`'s, under
the name ``lm_eval/<task>`` (kind ``lm_eval``, primary metric: the first one the harness reports, ``acc``
for a multiple-choice task), so an evaluate stage's ``results.json`` and the forgetting matrix take it like
one of our tasks. Its metrics are named as the harness names them, without the filter when that is
``none``: ``acc``, ``acc_norm``, ``acc_stderr``, ``exact_match/strict-match``. :func:`flat_metrics` gives
every number as ``lm_eval/<task>/<metric>`` (for trackers and tables).
"""

from __future__ import annotations

import math
from pathlib import Path

from workbench.errors import ConfigError, did_you_mean, unknown_name

PREFIX = "lm_eval"
KIND = "lm_eval"
INSTALL_HINT = 'lm-eval is not installed; install the extra: pip install "workbench[lm-eval]"'


def require_lm_eval():
    """The ``lm_eval`` module.

    Raises:
        ConfigError: lm-eval is not installed (the message names the extra to install).
    """
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return lm_eval


def task_manager(include_path: str | Path | None = None, include_defaults: bool = True):
    """An lm-eval ``TaskManager`` over the harness's own tasks and/or the task YAML in ``include_path``.

    Args:
        include_path: a directory of local task YAML files (searched recursively), or None.
        include_defaults: also index the harness's built-in tasks (about 10 s; off for local-only runs).

    Raises:
        ConfigError: lm-eval is missing, or ``include_path`` is not a directory.
    """
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise ConfigError(f"include_path: '{include_path}' is not a directory of lm-eval task YAML files")
    if include_path is None and not include_defaults:
        raise ConfigError("include_path: needed when the harness's built-in tasks are not indexed")
    return TaskManager(include_path=str(include_path) if include_path is not None else None,
                       include_defaults=include_defaults)


def manager_for(tasks: list[str], include_path: str | Path | None = None):
    """The ``TaskManager`` for these tasks: the local YAML alone when it holds all of them (indexing the
    harness's ~15k built-in tasks takes about 10 s), else local and built-in together.

    Raises:
        ConfigError: as :func:`task_manager`.
    """
    if include_path is not None:
        local = task_manager(include_path, include_defaults=False)
        if set(map(str, tasks)) <= set(local.all_tasks):
            return local
    return task_manager(include_path)


def check_tasks(tasks: list[str], manager) -> list[str]:
    """The task names, checked against the manager's index before any weight is loaded.

    Raises:
        ConfigError: no task, or a name that is neither a task, a group nor a tag (with a did-you-mean).
    """
    tasks = [str(t) for t in tasks]
    if not tasks:
        raise ConfigError("lm_eval_tasks: give at least one lm-eval task")
    known = set(manager.all_tasks)
    for name in tasks:
        if name in known:
            continue
        if len(known) <= 50:  # a local include_path alone: list them all
            raise unknown_name("lm-eval task", name, known)
        # the built-in index has ~15k names: suggest, and say where the list is
        raise ConfigError(f"unknown lm-eval task '{name}'{did_you_mean(name, known)}; "
                          "list the tasks with `lm-eval ls tasks`")
    return tasks


def harness_model(model, tokenizer, batch_size: int = 8, max_length: int | None = None):
    """lm-eval's ``HFLM`` around an already loaded transformers (or PEFT) model and its tokenizer."""
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(batch_size), max_length=max_length)


def run_lm_eval(model, tokenizer, tasks: list[str], *, include_path: str | Path | None = None,
                manager=None, limit: int | float | None = None,
                num_fewshot: int | None = None, batch_size: int = 8, apply_chat_template: bool = False,
                seed: int = 0, merge: bool = True, log_samples: bool = False, bootstrap_iters: int = 1000) -> dict:
    """Run lm-eval tasks on a loaded model.

    Args:
        model: a causal LM (transformers or PEFT), eval mode, on its device.
        tokenizer: its tokenizer.
        tasks: lm-eval task, group or tag names.
        include_path: a directory of local task YAML (see :func:`manager_for`).
        manager: a prepared ``TaskManager`` (``include_path`` is then only recorded).
        limit: the first ``limit`` documents of each task (lm-eval's meaning: not a random subset), or a
            fraction below 1; None for all.
        num_fewshot: few-shot examples (None: the task's own setting).
        batch_size: requests per forward pass.
        apply_chat_template: wrap each prompt in the tokenizer's chat template (a task's ``gen_prefix``
            then opens the assistant turn), as the workbench's own evaluators do for a chat model.
        seed: the harness's Python, NumPy, torch and few-shot seeds (it sets them globally).
        merge: merge a PEFT adapter into the base weights for the run (unmerged after).
        log_samples: keep the harness's per-document records (``samples``) in the result.
        bootstrap_iters: draws for the bootstrapped standard errors (F1, BLEU, ...; a mean such as ``acc``
            gets its closed-form one); 0 computes none (the harness's default, 100000, takes minutes).

    Returns:
        ``{"tasks": {"lm_eval/<task>": result}, "metrics": flat metrics, "samples": {task: [...]}}``
        (``samples`` only with ``log_samples``); each result has the keys of ``evaluate_task``'s.

    Raises:
        ConfigError: lm-eval missing, a bad ``include_path``, an unknown task, or a non-positive limit.
    """
    lm_eval = require_lm_eval()
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit: must be positive, got {limit}")
    manager = manager or manager_for(tasks, include_path)
    tasks = check_tasks(tasks, manager)
    from workbench.evaluate.generate import merged_adapter

    with merged_adapter(model, merge):
        raw = lm_eval.simple_evaluate(
            model=harness_model(model, tokenizer, batch_size), tasks=tasks, task_manager=manager, limit=limit,
            num_fewshot=num_fewshot, apply_chat_template=apply_chat_template, log_samples=log_samples,
            bootstrap_iters=bootstrap_iters,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    settings = {"harness": "lm_eval", "lm_eval_version": getattr(lm_eval, "__version__", None), "limit": limit,
                "num_fewshot": num_fewshot, "batch_size": batch_size, "apply_chat_template": apply_chat_template,
                "seed": seed, "bootstrap_iters": bootstrap_iters,
                "include_path": str(include_path) if include_path is not None else None}
    out = {"tasks": task_results(raw, tasks, settings), "metrics": flat_metrics(raw)}
    if log_samples:
        out["samples"] = raw.get("samples", {})
    return out


def _metric_name(key: str) -> str | None:
    """``acc,none`` -> ``acc``; ``exact_match,strict-match`` -> ``exact_match/strict-match``; ``alias`` -> None."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    return metric if filt == "none" else f"{metric}/{filt}"


def _numbers(entry: dict) -> dict[str, float]:
    """The numeric metrics of one task's harness result, under our names (``N/A`` stderrs dropped)."""
    out = {}
    for key, value in entry.items():
        name = _metric_name(key)
        if name is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def flat_metrics(raw: dict) -> dict[str, float]:
    """Every number of a ``simple_evaluate`` result (tasks and groups) as ``lm_eval/<task>/<metric>``."""
    out = {}
    for section in ("results", "groups"):
        for task, entry in (raw.get(section) or {}).items():
            out.update({f"{PREFIX}/{task}/{m}": v for m, v in _numbers(entry).items()})
    return out


def task_results(raw: dict, tasks: list[str], settings: dict) -> dict[str, dict]:
    """One ``evaluate_task``-shaped result per requested task (a group gives its aggregate).

    Raises:
        ConfigError: the harness returned no numeric metric for a requested task.
    """
    out = {}
    for task in tasks:
        entry = (raw.get("groups") or {}).get(task) or (raw.get("results") or {}).get(task)
        metrics = _numbers(entry or {})
        scores = [m for m in metrics if not m.split("/")[0].endswith("_stderr")]
        if not scores:
            raise ConfigError(f"lm-eval task '{task}': the harness reported no numeric metric")
        primary = scores[0]  # the first the harness reports: acc for a multiple-choice task, even before acc_norm
        better = (raw.get("higher_is_better") or {}).get(task, {}).get(primary.split("/")[0], True)
        details = {"lm_eval_task": task, "n": _sample_len(raw, task, entry),
                   "version": (raw.get("versions") or {}).get(task), "n_shot": (raw.get("n-shot") or {}).get(task)}
        out[f"{PREFIX}/{task}"] = {
            "task": f"{PREFIX}/{task}", "kind": KIND, "primary": primary, "higher_is_better": bool(better),
            "metrics": metrics, "std": {m: 0.0 for m in metrics}, "details": details, "settings": dict(settings)}
    return out


def _sample_len(raw: dict, task: str, entry: dict | None) -> int | None:
    n = (entry or {}).get("sample_len")
    if n is None:
        n = ((raw.get("n-samples") or {}).get(task) or {}).get("effective")
    return int(n) if isinstance(n, (int, float)) and not math.isnan(n) else None


def evaluate_with_lm_eval(adapter_dir, lm_eval_tasks: list[str], tasks: list[str] = (), base: str | None = None,
                          limit: int | None = None, seeds=(0,), gen=None, nlu_mode: str = "generate",
                          device: str | None = None, out: str | Path | None = None, trust_remote_code: bool = False,
                          **lm_eval_options) -> dict:
    """``workbench eval --harness lm_eval``: load the base (+ adapter) once, run our ``tasks`` (if any) and
    the lm-eval tasks, and write the result JSON atomically to ``out`` when given.

    Args:
        adapter_dir: a PEFT adapter directory, or None for the base alone.
        lm_eval_tasks: lm-eval task names.
        tasks: workbench task names, evaluated as ``workbench eval --task`` does.
        base, device, trust_remote_code: as :func:`workbench.evaluate.api.load_for_eval`.
        limit: records per task for both harnesses (ours: a seeded subset; lm-eval: the first ``limit``).
        seeds, gen, nlu_mode: our evaluators' settings; lm-eval uses the first seed.
        out: the result JSON path.
        **lm_eval_options: passed to :func:`run_lm_eval` (``include_path``, ``apply_chat_template``, ...).

    Returns:
        ``{"model": info, "tasks": {name: result}}``, lm-eval tasks under ``lm_eval/<task>``.

    Raises:
        ConfigError: lm-eval missing, unknown task names (before any weight is loaded).
    """
    from workbench.data.registry import get_task
    from workbench.evaluate.api import evaluate_task, load_for_eval
    from workbench.evaluate.generate import GenerationConfig
    from workbench.evaluate.runner import Runner
    from workbench.io.atomic import atomic_write_json

    ours = [get_task(t) for t in tasks]  # unknown names fail before the model is loaded
    include_path = lm_eval_options.pop("include_path", None)
    manager = manager_for(list(lm_eval_tasks), include_path)
    check_tasks(list(lm_eval_tasks), manager)
    model, tokenizer, info = load_for_eval(adapter_dir, base, device, trust_remote_code=trust_remote_code)
    gen = gen or GenerationConfig()
    report = {"model": info, "tasks": {}}
    runner = Runner(model, tokenizer, gen, nlu_mode=nlu_mode)
    for task in ours:
        report["tasks"][task.name] = evaluate_task(model, tokenizer, task, limit=limit, seeds=seeds, runner=runner)
        if out is not None:
            atomic_write_json(out, report)
    harness = run_lm_eval(model, tokenizer, list(lm_eval_tasks), manager=manager, include_path=include_path,
                          limit=limit, batch_size=gen.batch_size, seed=list(seeds)[0] if seeds else 0,
                          merge=gen.merge_adapter, **lm_eval_options)
    report["tasks"].update(harness["tasks"])
    if out is not None:
        atomic_write_json(out, report)
    return report
