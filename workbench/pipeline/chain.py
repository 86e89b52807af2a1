"""Chain syntax: ``"safety->math->code"`` (or ``safety,math,code``) becomes the default continual pipeline.

With a masked method (``Method.uses_mask``; LoRI-S, the default), task 1 is: a LoRI-D probe, a global magnitude calibration of the probe, and
LoRI-S trained inside that mask with the probe's A seed. Each later task k is: a LoRI-D probe that
continues task k-1's adapter (same frozen A) on the positions no earlier mask owns, a calibration that
excludes every earlier mask, and LoRI-S continuing task k-1's adapter inside the new mask (earlier
positions are untouched). Any other method gives plain continual fine-tuning (train, then continue).
After every task, one ``evaluate`` scores all tasks of the chain (forgetting rows); ``analyze`` ends it,
its ``forgetting`` grouped by method when ``--compare`` puts several chains in one pipeline.

With ``protocol="official"`` (``workbench run "safety->math" --protocol official``) the chain is the
official LoRI continual protocol instead (``scripts/continual_safety_*.sh``, which run two tasks, safety
then one of math, code, NLU; longer chains repeat the second step): task 1 is trained as the official
single-task scripts do (LoRI-D, its 0.9 mask, LoRI-S inside it); each later task gets a standalone LoRI-D
trained from scratch on that task (``<task>_dense``) and its own mask (``<task>_mask``, no exclusions: the
masks may overlap), and LoRI-S continues the previous LoRI-S adapter inside that mask. With ``--method
lori_d`` each later task continues the dense adapter (plain continual fine-tuning). Every stage runs under
``protocol: official`` (``workbench/protocols.py``). A preset then keeps only its budget (``BUDGET``: the
quick preset's steps, batch size, lengths, data and evaluation caps, rank and alpha; the paper preset's
rank and alpha), so that the quick run finishes in minutes with every other official setting; the
official epochs per task apply only where no preset sets a length (``--preset paper``). Both chains exist
side by side: the same tasks under the default protocol give our disjoint chain.

Quote the chain in a shell: unquoted, ``safety->math->code`` is ``safety-`` plus a redirection into a
file named ``math``, which is why a token ending in ``-`` is refused.
"""

from __future__ import annotations

import re

from workbench.errors import ConfigError
from workbench.pipeline.names import uses_mask
from workbench.pipeline.schema import STAGE_NAME
from workbench.protocols import DEFAULT_PROTOCOL, get_protocol
from workbench.settings import DEFAULT_METHOD, MASKED_METHOD

PROBE_METHOD = DEFAULT_METHOD  # the dense probe a mask is calibrated from (LoRI-D)

# Per-preset defaults, and the learning rate per method (LoRI-S uses 10x LoRI-D's, as in the paper). A
# setting a preset leaves out takes the training settings' default (workbench/settings.py); the presets
# write warmup_ratio 0 out because the quick and default runs were measured without warmup.
PRESETS: dict[str, dict] = {
    # quick: the whole safety->math->code chain on the 135M model on 2 CPU cores in under 10 minutes
    # (measured: 9m20s with 20 steps per stage, hence 16, which measured 6m30s; decoding is ~0.3 s per
    # step there, so evaluation is kept to 8 prompts x 32 new tokens per split).
    "quick": {"defaults": {"steps": 16, "batch_size": 4, "grad_accum": 1, "max_length": 192, "max_samples": 64,
                           "eval_limit": 8, "max_new_tokens": 32, "rank": 8, "alpha": 16, "sparsity": 0.9,
                           "warmup_ratio": 0.0},
              "lr": {"lora": 1e-3, "lori_d": 1e-3, "lori_s": 1e-2}},
    # default: sized from the quick run's measured rates (~160 training tokens/s, ~0.4 s per decoding step)
    # to stay under 45 minutes for a three-task chain; measured 20m34s with 24 prompts per split (README,
    # "Measured numbers"). At 24 prompts a rate difference under ~0.37 cannot be detected (two-sided 0.05,
    # power 0.8, rate 0.5; the seed report prints this per metric), at 100 under ~0.19, but decoding 100
    # prompts per split is ~4x this preset's evaluation time and was not measured: kept at 24 until a
    # preset sized for detection (issue 17's `signal`) is measured.
    "default": {"defaults": {"steps": 50, "batch_size": 4, "grad_accum": 1, "max_length": 256, "max_samples": 200,
                             "eval_limit": 24, "max_new_tokens": 48, "rank": 8, "alpha": 16, "sparsity": 0.9,
                             "warmup_ratio": 0.0},
                "lr": {"lora": 5e-4, "lori_d": 5e-4, "lori_s": 5e-3}},
    # signal: sized so that the effect the paper is about can be measured on 2 CPU cores (issue 17; numbers
    # and how they were found: docs/reproduction.md). The safety stage trains on a mix with half refusals
    # (the Saferpaca ratio, 0.1, teaches too little refusal in a CPU budget to see it forgotten); refusal is
    # judged on 100 held-out harmful (and 80 benign) prompts, whose first 16 tokens carry the refusal
    # phrases (12 new tokens); math and code are scored by held-out NLL alone (their accuracy needs long
    # generations and is ~0 for a 135M model at this length), every NLL on 40 held-out pairs (100 GSM8K
    # answers took ~40 s per evaluation).
    "signal": {"defaults": {"steps": 24, "batch_size": 4, "grad_accum": 1, "max_length": 112, "max_samples": 200,
                            "eval_limit": 100, "eval_nll_limit": 40, "max_new_tokens": 12,
                            "eval_nll_only": ["math", "code"],
                            "rank": 8, "alpha": 16, "sparsity": 0.9, "warmup_ratio": 0.0},
               "tasks": {"safety": {"options": {"safety_fraction": 0.5}}}, "data_aware": True,
               "lr": {"lora": 2e-3, "lori_d": 2e-3, "lori_s": 2e-2}},
    "paper": {"base": {"model": "meta-llama/Meta-Llama-3-8B", "dtype": "bfloat16"},
              "defaults": {"epochs": 1, "batch_size": 8, "grad_accum": 4, "max_length": 512, "rank": 32,
                           "alpha": 64, "dropout": 0.05, "sparsity": 0.9, "max_new_tokens": 256,
                           "scheduler": "cosine", "warmup_ratio": 0.03},
              "lr": {"lora": 1e-4, "lori_d": 5e-5, "lori_s": 5e-4}},
}
# What a preset keeps under a protocol other than the default: its compute budget, not its training recipe.
BUDGET: dict[str, tuple[str, ...]] = {
    "quick": ("steps", "batch_size", "max_length", "max_samples", "eval_limit", "max_new_tokens", "rank", "alpha"),
    "default": ("steps", "batch_size", "max_length", "max_samples", "eval_limit", "max_new_tokens", "rank", "alpha"),
    "signal": ("steps", "batch_size", "max_length", "max_samples", "eval_limit", "eval_nll_limit", "max_new_tokens",
               "eval_nll_only", "rank", "alpha"),
    "paper": ("rank", "alpha"),
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


def masked_chain(tasks: list[str], preset: dict, prefix: str = "", method: str = MASKED_METHOD
                 ) -> tuple[dict, list[str], list[str]]:
    """LoRI-S continual stages (``method``: a masked one). Returns (stages, adapter stage names, mask stage names)."""
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
        stages[s] = {**train, **_loop(method, preset)}
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


def official_chain(tasks: list[str], preset: dict, prefix: str = "", method: str = MASKED_METHOD
                   ) -> tuple[dict, list[str], list[str]]:
    """The official continual protocol's stages (module docstring). Returns (stages, adapters, masks)."""
    if not uses_mask(method):
        return plain_chain(tasks, method, preset, prefix)
    first = prefix + _stem(tasks[0])
    stages = {f"{first}_probe": {"kind": "train", "task": tasks[0], **_loop(PROBE_METHOD, preset)},
              f"{first}_mask": {"kind": "calibrate", "from": f"{first}_probe"},
              first: {"kind": "train", "task": tasks[0], "mask": f"{first}_mask", **_loop(method, preset)},
              f"{first}_eval": {"kind": "evaluate", "adapter": first, "tasks": list(tasks)}}
    adapters, masks = [first], [f"{first}_mask"]
    for task in tasks[1:]:
        s = prefix + _stem(task)
        # from scratch on this task alone: its mask is the task's own, whatever earlier tasks occupy
        stages[f"{s}_dense"] = {"kind": "train", "task": task, **_loop(PROBE_METHOD, preset)}
        stages[f"{s}_mask"] = {"kind": "calibrate", "from": f"{s}_dense"}
        stages[s] = {"kind": "continue", "from": adapters[-1], "task": task, "mask": f"{s}_mask",
                     **_loop(method, preset)}
        stages[f"{s}_eval"] = {"kind": "evaluate", "adapter": s, "tasks": list(tasks)}
        adapters.append(s)
        masks.append(f"{s}_mask")
    return stages, adapters, masks


def _preset_defaults(preset: str, protocol: str) -> dict:
    """A preset's ``defaults``: all of them under the default protocol, only its budget under another."""
    values = PRESETS[preset]["defaults"]
    if protocol == DEFAULT_PROTOCOL:
        return dict(values)
    return {k: v for k, v in values.items() if k in BUDGET[preset]}


def expand_chain(text: str, method: str = MASKED_METHOD, preset: str = "quick",
                 compare: list[str] | tuple[str, ...] | None = None, protocol: str | None = None) -> dict:
    """Expand a chain into a pipeline tree (validate it with ``workbench.pipeline.load_tree``).

    Args:
        text: ``"safety->math->code"`` or ``"safety,math,code"``.
        method: a masked method (``lori_s``, the default) for the LoRI chain; any other method for plain
            continual fine-tuning.
        preset: ``quick`` (135M model, minutes on a CPU), ``default``, ``signal`` (sized for a measurable
            forgetting effect on a CPU, with 100-prompt safety evaluations) or ``paper`` (Llama-3-8B settings).
        compare: further methods run on the same chain in the same pipeline, stage names prefixed
            with ``<method>-``, sharing the base-model evaluation and one analysis.
        protocol: ``workbench`` (default: our disjoint chain) or ``official`` (the official continual
            protocol, run under ``protocol: official``; see the module docstring).

    Returns:
        A plain dict in the pipeline file schema.

    Raises:
        ConfigError: a bad chain (see :func:`parse_chain`), an unknown preset or protocol, or a repeated
            method.
    """
    tasks = parse_chain(text)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; valid: {', '.join(PRESETS)}")
    protocol = get_protocol(protocol or DEFAULT_PROTOCOL).name
    build = official_chain if protocol == "official" else masked_chain
    methods = [method, *(compare or [])]
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--compare repeats a method: {', '.join(methods)}")
    p = PRESETS[preset]
    stages = {"base_eval": {"kind": "evaluate", "adapter": None, "tasks": list(tasks)}}
    # data: the data-aware section (score vs forgetting, attribution) on the chain's own tasks' inputs; 8
    # held-out pairs per task bound its cost (the input moments cost tokens x in² per layer, in float64)
    analyze = {"kind": "analyze", "adapters": [], "masks": []}
    if p.get("data_aware"):  # input moments + attribution on the real model: ~2 min a chain on 2 CPU cores
        analyze.update(data=list(tasks), data_limit=8)
    forgetting = {}  # method -> evaluate stages in chain order, each starting from the base model's row
    for m in methods:
        prefix = f"{m}-" if len(methods) > 1 else ""
        # an unknown method is reported by validation; expand it as a plain chain meanwhile
        built = build(tasks, p, prefix, m) if uses_mask(m) else plain_chain(tasks, m, p, prefix)
        stages.update(built[0])
        analyze["adapters"] += built[1]
        analyze["masks"] += built[2]
        forgetting[m] = ["base_eval", *(f"{a}_eval" for a in built[1])]
    analyze["forgetting"] = forgetting if len(methods) > 1 else forgetting[method]
    stages["analyze"] = analyze
    name = "chain-" + "-".join(_stem(t) for t in tasks) + ("-vs-" + "-".join(methods[1:]) if len(methods) > 1 else "")
    kind = "official continual protocol" if protocol == "official" else "continual chain"
    tree = {"name": name + ("-official" if protocol == "official" else ""),
            "description": f"{kind} {' -> '.join(tasks)} ({', '.join(methods)}, {preset})",
            "base": dict(p.get("base", {})), "defaults": dict(_preset_defaults(preset, protocol), method=PROBE_METHOD),
            "stages": stages}
    # a preset's task options are its data (the same under every protocol, so runs compare on equal data)
    task_options = {t: v for t, v in p.get("tasks", {}).items() if t in tasks}
    if task_options:
        tree["tasks"] = {t: {"options": dict(v["options"])} for t, v in task_options.items()}
    return tree if protocol == DEFAULT_PROTOCOL else {**tree, "protocol": protocol}
