"""Chain syntax: ``"safety->math->code"`` (or ``safety,math,code``) becomes the default continual pipeline.

With LoRI-S (the default), task 1 is: a LoRI-D probe, a global magnitude calibration of the probe, and
LoRI-S trained inside that mask with the probe's A seed. Each later task k is: a LoRI-D probe that
continues task k-1's adapter (same frozen A) on the positions no earlier mask owns, a calibration that
excludes every earlier mask, and LoRI-S continuing task k-1's adapter inside the new mask (earlier
positions are untouched). Any other method gives plain continual fine-tuning (train, then continue).
After every task, one ``evaluate`` scores all tasks of the chain (forgetting rows); ``analyze`` ends it.

Quote the chain in a shell: unquoted, ``safety->math->code`` is ``safety-`` plus a redirection into a
file named ``math``, which is why a token ending in ``-`` is refused.
"""

from __future__ import annotations

import re

from workbench.errors import ConfigError
from workbench.pipeline.schema import STAGE_NAME

MASKED_METHOD = "lori_s"
PROBE_METHOD = "lori_d"

# Per-preset defaults, and the learning rate per method (LoRI-S uses 10x LoRI-D's, as in the paper).
PRESETS: dict[str, dict] = {
    # quick: the whole safety->math->code chain on the 135M model on 2 CPU cores in under 10 minutes
    # (measured: 9m20s with 20 steps per stage, hence 16, which measured 6m30s; decoding is ~0.3 s per
    # step there, so evaluation is kept to 8 prompts x 32 new tokens per split).
    "quick": {"defaults": {"steps": 16, "batch_size": 4, "grad_accum": 1, "max_length": 192, "max_samples": 64,
                           "eval_limit": 8, "max_new_tokens": 32, "rank": 8, "alpha": 16, "sparsity": 0.9},
              "lr": {"lora": 1e-3, "lori_d": 1e-3, "lori_s": 1e-2}},
    # default: sized from the quick run's measured rates (~160 training tokens/s, ~0.4 s per decoding step)
    # to stay under 45 minutes for a three-task chain; measured 20m34s (README, "Measured numbers").
    "default": {"defaults": {"steps": 50, "batch_size": 4, "grad_accum": 1, "max_length": 256, "max_samples": 200,
                             "eval_limit": 24, "max_new_tokens": 48, "rank": 8, "alpha": 16, "sparsity": 0.9},
                "lr": {"lora": 5e-4, "lori_d": 5e-4, "lori_s": 5e-3}},
    "paper": {"base": {"model": "meta-llama/Meta-Llama-3-8B", "dtype": "bfloat16"},
              "defaults": {"epochs": 1, "batch_size": 8, "grad_accum": 4, "max_length": 512, "rank": 32,
                           "alpha": 64, "dropout": 0.05, "sparsity": 0.9, "max_new_tokens": 256,
                           "scheduler": "cosine", "warmup_ratio": 0.03},
              "lr": {"lora": 1e-4, "lori_d": 5e-5, "lori_s": 5e-4}},
}
SHELL_HINT = "workbench run 'safety->math->code'  (or: workbench run safety,math,code)"


def parse_chain(text: str) -> list[str]:
    """``"safety->math->code"`` or ``"safety,math,code"`` -> ``["safety", "math", "code"]``.

    Raises:
        ConfigError: a token ends in '-' (the shell ate a '>'), an empty token, or a repeated task.
    """
    text = text.strip()
    if text.endswith("-") or re.search(r"-\s*(,|$)", text):
        raise ConfigError(f"chain '{text}' ends with '-': unquoted, the shell reads '>' as a redirection "
                          f"(and may have created a file named after the next task); quote the chain: {SHELL_HINT}")
    tokens = [t.strip() for t in re.split(r"->|,", text)]
    if not text or any(not t for t in tokens):
        raise ConfigError(f"chain '{text}': empty task name; write tasks separated by '->' or ',': {SHELL_HINT}")
    dupes = sorted({t for t in tokens if tokens.count(t) > 1})
    if dupes:
        raise ConfigError(f"chain '{text}': task {', '.join(dupes)} appears more than once")
    return tokens


def _stem(task: str) -> str:
    """A stage-name stem for a task (stage names must start with a letter)."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", task)
    return stem if STAGE_NAME.match(stem) else f"t_{stem}"


def _loop(method: str, preset: dict) -> dict:
    return {"method": method, "lr": preset["lr"].get(method, preset["lr"]["lora"])}


def masked_chain(tasks: list[str], preset: dict, prefix: str = "") -> tuple[dict, list[str], list[str]]:
    """LoRI-S continual stages. Returns (stages, adapter stage names, mask stage names)."""
    stages, adapters, masks = {}, [], []
    for k, task in enumerate(tasks):
        s = prefix + _stem(task)
        # No explicit a_seed: probe and LoRI-S train inherit defaults.seed, so they share one A and
        # `--set defaults.seed=N` reseeds A as well as the data order.
        probe = {"kind": "train", "task": task, **_loop(PROBE_METHOD, preset)}
        if k:
            probe = {"kind": "continue", "from": adapters[-1], "task": task, "exclude": list(masks),
                     **_loop(PROBE_METHOD, preset)}
        stages[f"{s}_probe"] = probe
        stages[f"{s}_mask"] = {"kind": "calibrate", "from": f"{s}_probe", "scope": "global", "exclude": list(masks)}
        train = {"kind": "train", "task": task, "mask": f"{s}_mask"}
        if k:
            train = {"kind": "continue", "from": adapters[-1], "task": task, "mask": f"{s}_mask"}
        stages[s] = {**train, **_loop(MASKED_METHOD, preset)}
        stages[f"{s}_eval"] = {"kind": "evaluate", "adapter": s, "tasks": list(tasks)}
        adapters.append(s)
        masks.append(f"{s}_mask")
    return stages, adapters, masks


def plain_chain(tasks: list[str], method: str, preset: dict, prefix: str = "") -> tuple[dict, list[str], list[str]]:
    """Plain continual fine-tuning with ``method``: train task 1, continue on each next task."""
    stages, adapters = {}, []
    for k, task in enumerate(tasks):
        s = prefix + _stem(task)
        head = {"kind": "continue", "from": adapters[-1]} if k else {"kind": "train"}
        stages[s] = {**head, "task": task, **_loop(method, preset)}
        stages[f"{s}_eval"] = {"kind": "evaluate", "adapter": s, "tasks": list(tasks)}
        adapters.append(s)
    return stages, adapters, []


def expand_chain(text: str, method: str = MASKED_METHOD, preset: str = "quick",
                 compare: list[str] | tuple[str, ...] | None = None) -> dict:
    """Expand a chain into a pipeline tree (validate it with ``workbench.pipeline.load_tree``).

    Args:
        text: ``"safety->math->code"`` or ``"safety,math,code"``.
        method: ``lori_s`` for the masked LoRI chain; any other method for plain continual fine-tuning.
        preset: ``quick`` (135M model, minutes on a CPU), ``default`` or ``paper`` (Llama-3-8B settings).
        compare: further methods run on the same chain in the same pipeline, stage names prefixed
            with ``<method>-``, sharing the base-model evaluation and one analysis.

    Returns:
        A plain dict in the pipeline file schema.

    Raises:
        ConfigError: a bad chain (see :func:`parse_chain`), an unknown preset, or a repeated method.
    """
    tasks = parse_chain(text)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; valid: {', '.join(PRESETS)}")
    methods = [method, *(compare or [])]
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--compare repeats a method: {', '.join(methods)}")
    p = PRESETS[preset]
    stages = {"base_eval": {"kind": "evaluate", "adapter": None, "tasks": list(tasks)}}
    analyze = {"kind": "analyze", "adapters": [], "masks": [], "forgetting": ["base_eval"]}
    for m in methods:
        prefix = f"{m}-" if len(methods) > 1 else ""
        built = masked_chain(tasks, p, prefix) if m == MASKED_METHOD else plain_chain(tasks, m, p, prefix)
        stages.update(built[0])
        analyze["adapters"] += built[1]
        analyze["masks"] += built[2]
        analyze["forgetting"] += [f"{a}_eval" for a in built[1]]
    stages["analyze"] = analyze
    name = "chain-" + "-".join(_stem(t) for t in tasks) + ("-vs-" + "-".join(methods[1:]) if len(methods) > 1 else "")
    return {"name": name, "description": f"continual chain {' -> '.join(tasks)} ({', '.join(methods)}, {preset})",
            "base": dict(p.get("base", {})), "defaults": dict(p["defaults"], method=PROBE_METHOD), "stages": stages}
