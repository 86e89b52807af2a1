"""The ``evaluate`` stage kind: every listed task on the base model (+ the adapter of ``adapter``), and with
``harness: lm_eval`` the ``lm_eval_tasks`` through lm-evaluation-harness, stored as ``lm_eval/<task>``.

Results are written after each task (``results.json``, atomically), and a resumed stage skips the tasks
already there: a kill while evaluating task 3 of 4 recomputes only task 3 and 4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field, model_validator

from workbench.graph.task import StageResult
from workbench.io.atomic import atomic_write_json
from workbench.pipeline.kinds import ADAPTER_KINDS, StageKind, StageSettings
from workbench.pipeline.schema import Ref, TaskName
from workbench.stages.train_stage import Launch
from workbench.stages.common import artifact, base_spec, fmt, stage_tracker, task_of
from workbench.stages.timing import phase, timed_stage


class EvaluateStage(StageSettings):
    """Score an adapter (or the base model alone when ``adapter`` is null) on tasks."""

    adapter: Optional[Ref] = None
    tasks: list[TaskName] = []  # at least one, unless lm_eval_tasks has some (checked below)
    limit: Optional[Annotated[int, Field(ge=1)]] = None
    max_new_tokens: Optional[Annotated[int, Field(ge=1)]] = None
    nll_only: Optional[list[TaskName]] = Field(
        None, description="tasks scored by held-out NLL alone, without generating (default defaults.eval_nll_only)")
    # Judge and decoding (None: the task kind's defaults, greedy). The judge names are workbench.evaluate.metrics.safety.JUDGES (tests/test_judges.py checks they agree).
    judge: Optional[Literal["qi2023_keyword", "lori_official"]] = Field(
        None, description="safety judge (default qi2023_keyword); safety tasks only")
    temperature: Optional[Annotated[float, Field(ge=0.0)]] = Field(
        None, description="sampling temperature; above 0 samples, 0 or unset is greedy")
    top_p: Optional[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(None, description="nucleus sampling mass")
    samples_per_prompt: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="generations per problem for pass@k; code tasks only")
    stop: Optional[list[str]] = Field(None, description="extra stop strings")
    max_length: Optional[Annotated[int, Field(ge=2)]] = Field(
        None, description="cap on prompt plus generated tokens (the official HumanEval harness: 512)")
    # EleutherAI lm-evaluation-harness tasks (workbench/evaluate/lm_eval_bridge.py), reported as lm_eval/<task>
    harness: Literal["workbench", "lm_eval"] = Field(
        "workbench", description="lm_eval: also run lm_eval_tasks with lm-evaluation-harness (workbench[lm-eval])")
    lm_eval_tasks: list[Annotated[str, Field(min_length=1)]] = Field(
        [], description="lm-eval task, group or tag names (harness: lm_eval)")
    include_path: Optional[str] = Field(
        None, description="directory of local lm-eval task YAML, relative to the pipeline file")
    lm_eval_chat_template: bool = Field(False, description="lm-eval prompts in the tokenizer's chat template")
    launch: Optional[Launch] = Field(
        None, description="data-parallel processes (default defaults.launch): each computes every N-th batch")

    @model_validator(mode="after")
    def _harness_fields(self):
        lm_eval = self.harness == "lm_eval"
        if lm_eval and not self.lm_eval_tasks:
            raise ValueError("harness: lm_eval needs lm_eval_tasks (one or more lm-eval task names)")
        if not lm_eval and (self.lm_eval_tasks or self.include_path or self.lm_eval_chat_template):
            raise ValueError("lm_eval_tasks, include_path and lm_eval_chat_template need harness: lm_eval")
        if not self.tasks and not lm_eval:
            raise ValueError("tasks: give at least one task (or harness: lm_eval with lm_eval_tasks)")
        stray = [t for t in self.nll_only or () if t not in self.tasks]
        if stray:
            raise ValueError(f"nll_only: {', '.join(stray)} not among this stage's tasks ({', '.join(self.tasks)})")
        return self


EVAL_OPTIONAL = ("judge", "temperature", "top_p", "samples_per_prompt", "stop", "max_length")


class EvaluateDefaults(BaseModel):
    """What evaluate stages take from ``defaults:``."""

    eval_limit: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="prompts per task in evaluate stages; default: all")
    max_new_tokens: Annotated[int, Field(ge=1)] = Field(128, description="tokens generated per prompt")
    eval_nll_limit: Optional[Annotated[int, Field(ge=1)]] = Field(
        None, description="held-out pairs per task for the NLL in evaluate stages; default: eval_limit, else 200")
    eval_nll_only: list[TaskName] = Field(
        [], description="tasks evaluate stages score by held-out NLL alone (no generation: cheaper, no kind metric)")


def resolve(stage, ctx) -> dict:
    d = ctx.defaults
    return {"tasks": list(stage.tasks), "task_specs": {t: s for t in stage.tasks if (s := ctx.task_spec(t))},
            "limit": stage.limit if stage.limit is not None else d.eval_limit,
            "max_new_tokens": stage.max_new_tokens or d.max_new_tokens,
            **({"nll_limit": d.eval_nll_limit} if d.eval_nll_limit is not None else {}),  # unset: key unchanged
            # only names the stage evaluates, so the key of a stage without them is unchanged
            **({"nll_only": only} if (only := [t for t in stage.tasks if t in (
                stage.nll_only if stage.nll_only is not None else d.eval_nll_only)]) else {}),
            **{k: getattr(stage, k) for k in EVAL_OPTIONAL},
            "template": d.template,  # the prompt template of the training settings (defaults.template)
            **({"pad_token": d.pad_token} if d.pad_token != "eos" else {}),  # the base alone; keys kept at eos
            **lm_eval_params(stage, ctx.base_dir),
            # how many processes, not what is computed: KEY_NEUTRAL_PARAMS (workbench/graph/task.py)
            "launch": eval_launch(stage, ctx)}


def eval_launch(stage, ctx) -> dict:
    """The stage's ``launch`` block, else the defaults' (the one training stages use); FSDP is refused
    (evaluation shards prompts, not weights) and ``mixed_precision`` has nothing to set here."""
    launch = stage.launch or getattr(ctx.defaults, "launch", None) or Launch()
    return {"processes": launch.processes}


def lm_eval_params(stage, base_dir: Path) -> dict:
    """The lm-eval settings of a resolved stage.

    ``include_path`` is made absolute (relative to the pipeline file), and the SHA-256 of its task YAML
    files joins the key, so editing a local task re-runs the stage.
    """
    from workbench.hashing import sha256_text

    out = {"harness": stage.harness, "lm_eval_tasks": list(stage.lm_eval_tasks),
           "lm_eval_chat_template": stage.lm_eval_chat_template, "include_path": None}
    if stage.include_path is not None:
        root = _include_root(stage.include_path, base_dir).resolve()
        files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        out["include_path"] = str(root)
        out["include_digest"] = sha256_text("\n".join(f"{p.relative_to(root)}:{p.read_text(encoding='utf-8')}"
                                                       for p in files))
    return out


def _include_root(include_path: str, base_dir: Path) -> Path:
    root = Path(include_path).expanduser()
    return root if root.is_absolute() else Path(base_dir) / root


def check_lm_eval(parts, name: str, stage) -> list:
    """With ``harness: lm_eval``: lm-eval is installed, and ``include_path`` is a directory (relative to the
    pipeline file). Task names are checked when the stage runs (indexing the harness's tasks takes ~10 s)."""
    import importlib.util

    from workbench.pipeline.problems import Problem

    out = []
    if stage.harness == "lm_eval" and importlib.util.find_spec("lm_eval") is None:
        path = ("stages", name, "harness")
        out.append(Problem(parts.located.where(path), path,
                           'lm-eval is not installed; install the extra: pip install "workbench[lm-eval]"'))
    if stage.include_path is not None and not _include_root(stage.include_path, parts.base_dir).is_dir():
        path = ("stages", name, "include_path")
        out.append(Problem(parts.located.where(path), path, f"'{stage.include_path}' is not a directory "
                                                            "(of lm-eval task YAML; relative to the pipeline file)"))
    return out


def uses(stage, ctx) -> list:
    return [(("tasks", i), "task", t) for i, t in enumerate(stage.tasks)]


def summary(metrics: dict) -> str:
    return ", ".join(f"{t}: {m.get('primary')}={fmt(m.get('value'))}" for t, m in metrics.items())


def _done(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("tasks", {})
    except json.JSONDecodeError:
        return {}


def sampling(p: dict) -> dict:
    """GenerationConfig fields from a resolved evaluate stage's decoding settings."""
    out = {}
    if p.get("temperature"):
        out.update(do_sample=True, temperature=float(p["temperature"]))
    if p.get("top_p") is not None:
        out["top_p"] = float(p["top_p"])
    if p.get("stop"):
        out["stop"] = tuple(p["stop"])
    if p.get("max_length") is not None:
        out["max_length"] = int(p["max_length"])
    return out


def kind_options(task, p: dict) -> dict:
    """The settings one task kind takes: the judge for safety, samples per prompt for code."""
    from workbench.data.registry import get_task

    if not (p.get("judge") or p.get("samples_per_prompt")):
        return {}  # nothing kind-specific asked for: no lookup (an evaluator may score tasks it registers itself)
    kind = get_task(task).kind
    if kind == "safety" and p.get("judge"):
        return {"judge": p["judge"]}
    if kind == "code" and p.get("samples_per_prompt"):
        return {"n_samples": int(p["samples_per_prompt"])}
    return {}


@timed_stage("evaluate")
def run_evaluate(task, inputs, out_dir: Path, context) -> StageResult:
    """Evaluate every task not already in ``results.json``; with ``launch.processes`` > 1 (or
    ``--processes``), in that many processes under ``accelerate launch`` (workbench/stages/launch.py), each
    computing every N-th batch of every task (workbench/evaluate/shard.py); only the main process writes."""
    from workbench.evaluate import shard
    from workbench.evaluate.api import evaluate_task, load_for_eval
    from workbench.evaluate.generate import GenerationConfig
    from workbench.stages.launch import processes_for, run_launched
    from workbench.tracking import log_evaluation

    processes = processes_for(task, context)
    if processes > 1:  # the workers run this very function, in-process
        return run_launched(task, inputs, out_dir, context, processes)
    shard.init_process_group()
    shard.reset()
    main = shard.world()[0] == 0
    write = atomic_write_json if main else (lambda *a: None)
    p = task.params
    out = Path(out_dir) / "results.json"
    results = _done(out) if context.resume else {}
    todo = [t for t in p["tasks"] if t not in results]
    lm_todo = [t for t in p.get("lm_eval_tasks", []) if f"lm_eval/{t}" not in results]
    if lm_todo:
        from workbench.evaluate.lm_eval_bridge import check_tasks, manager_for

        manager = manager_for(lm_todo, p.get("include_path"))
        check_tasks(lm_todo, manager)  # before any weight is loaded
    if todo or lm_todo:
        adapter = artifact(inputs, task, "adapter", "adapter")
        spec = base_spec(p)
        with phase("load"):
            model, tok, info = load_for_eval(adapter, base=spec.name, trust_remote_code=spec.trust_remote_code,
                                             pad_token=p.get("pad_token"), device=shard.device())
        gen = GenerationConfig(max_new_tokens=p.get("max_new_tokens", 128), **sampling(p))
        specs = p.get("task_specs") or {}
        for name in todo:
            t = task_of({"task": name, "task_spec": specs.get(name)})
            if p.get("template", "workbench") != "workbench":
                from workbench.protocols import with_template

                t = with_template(t, p["template"])
            results[name] = evaluate_task(model, tok, t, limit=p.get("limit"), gen=gen, heldout_limit=p.get("nll_limit"),
                                          generate=name not in p.get("nll_only", ()), **kind_options(t, p))
            write(out, {"model": info, "tasks": results})
        if lm_todo and main:  # lm-eval batches on its own: the main process runs it, the others wait
            from workbench.evaluate.lm_eval_bridge import run_lm_eval

            harness = run_lm_eval(model, tok, lm_todo, manager=manager, include_path=p.get("include_path"),
                                  limit=p.get("limit"), apply_chat_template=p.get("lm_eval_chat_template", False))
            results.update(harness["tasks"])
            write(out, {"model": info, "tasks": results})
    # how the batches were split, from the processes themselves (not part of the results: those are the
    # one-process bytes whatever the split)
    write(Path(out_dir) / "eval_split.json", shard.record())
    with stage_tracker(task, context) as tracker:  # every metric, and the forgetting curves' points
        log_evaluation(tracker, task.name, results, context.options.get("eval_positions", {}).get(task.name, 0))
    metrics = {name: {"primary": r["primary"], "value": r["metrics"].get(r["primary"]), "nll": r["metrics"].get("nll"),
                      "higher_is_better": r["higher_is_better"]} for name, r in results.items()}
    return StageResult(artifacts={"results": out}, metrics=metrics)


KIND = StageKind("evaluate", EvaluateStage, run_evaluate, refs={"adapter": ADAPTER_KINDS}, resolve=resolve,
                 uses=uses, checks=(check_lm_eval,), defaults=EvaluateDefaults, summary=summary,
                 doc="score an adapter (or the base model) on tasks")
