"""``workbench eval ADAPTER_DIR --task safety [--task math ...]``: evaluate an adapter (or the base alone).

``--harness lm_eval --lm-eval-tasks arc_easy ...`` adds EleutherAI lm-evaluation-harness tasks
(``workbench/evaluate/lm_eval_bridge.py``), reported as ``lm_eval/<task>`` next to ours.
"""

from __future__ import annotations

from workbench.commands import add_list_option, add_trust_remote_code

import math

from workbench.errors import ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate an adapter (or the base model) on tasks",
                              description="Evaluate a PEFT adapter on top of its base model, or the base alone.")
    p.add_argument("adapter", nargs="?", metavar="ADAPTER_DIR", help="adapter directory (omit with --base-only)")
    add_list_option(p, "--task", metavar="NAME",
                   help="task to evaluate (several: --task a b or --task a --task b): safety, math, code, nlu, or a registered custom task")
    p.add_argument("--base", default=None, help="base model (default: the adapter's recorded base, else the embedded model)")
    p.add_argument("--base-only", action="store_true", help="evaluate the base model without an adapter")
    add_trust_remote_code(p)
    p.add_argument("--limit", type=int, default=None, help="records per evaluation split (a seeded subset)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; several give mean and std (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: per task kind")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--temperature", type=float, default=None, help="sample at this temperature (default: greedy)")
    p.add_argument("--no-merge", action="store_true", help="keep the adapter unmerged while generating")
    p.add_argument("--nlu-mode", choices=("generate", "loglik"), default="generate",
                   help="NLU answer: the paper's label extraction from generated text, or option log-likelihood")
    p.add_argument("--harness", choices=("workbench", "lm_eval"), default="workbench",
                   help="lm_eval: also run EleutherAI lm-evaluation-harness tasks (--lm-eval-tasks; the extra "
                        "workbench[lm-eval]); --task is then optional")
    add_list_option(p, "--lm-eval-tasks", metavar="NAME",
                    help="lm-eval task, group or tag names (with --harness lm_eval): arc_easy, hellaswag, mmlu, ...")
    p.add_argument("--include-path", default=None, metavar="DIR",
                   help="a directory of local lm-eval task YAML files (with --harness lm_eval)")
    p.add_argument("--lm-eval-chat-template", action="store_true",
                   help="lm-eval prompts in the tokenizer's chat template (as our own evaluators send them)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--out", default=None, metavar="FILE", help="write the full result JSON here")
    p.set_defaults(func=run)


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got '{text}'") from None


def _check(args) -> None:
    if args.base_only and args.adapter:
        raise ConfigError("give either ADAPTER_DIR or --base-only, not both")
    if not args.base_only and not args.adapter:
        raise ConfigError("ADAPTER_DIR is required (or pass --base-only to evaluate the base model)")
    if args.limit is not None and args.limit <= 0:
        raise ConfigError(f"--limit must be positive, got {args.limit}")
    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    lm_eval = args.harness == "lm_eval"
    if lm_eval and not args.lm_eval_tasks:
        raise ConfigError("--harness lm_eval needs --lm-eval-tasks NAME [NAME ...]")
    if not lm_eval and (args.lm_eval_tasks or args.include_path or args.lm_eval_chat_template):
        raise ConfigError("--lm-eval-tasks, --include-path and --lm-eval-chat-template need --harness lm_eval")
    if not lm_eval and not args.task:
        raise ConfigError("--task NAME is required (or --harness lm_eval with --lm-eval-tasks)")


def print_table(report: dict) -> None:
    """One line per task and metric: value, and ± std when several seeds ran."""
    width = max([10, *(len(n) for n in report["tasks"])])  # lm-eval tasks are named lm_eval/<task>
    print(f"{'task':<{width}} {'metric':<28} value")
    for name, result in report["tasks"].items():
        for metric, value in result["metrics"].items():
            std = result["std"].get(metric, 0.0)
            spread = f" ± {std:.4f}" if std and not math.isnan(std) else ""
            mark = " *" if metric == result["primary"] else ""
            print(f"{name:<{width}} {metric + mark:<28} {value:.4f}{spread}")


def run(args) -> int:
    from workbench.evaluate.api import evaluate_adapter
    from workbench.evaluate.generate import GenerationConfig

    _check(args)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           do_sample=args.temperature is not None, temperature=args.temperature or 1.0,
                           merge_adapter=not args.no_merge)
    adapter = None if args.base_only else args.adapter
    if args.harness == "lm_eval":
        from workbench.evaluate.lm_eval_bridge import evaluate_with_lm_eval

        report = evaluate_with_lm_eval(adapter, args.lm_eval_tasks, args.task, base=args.base, limit=args.limit,
                                       seeds=_seeds(args.seeds), gen=gen, nlu_mode=args.nlu_mode, device=args.device,
                                       out=args.out, trust_remote_code=args.trust_remote_code,
                                       include_path=args.include_path, apply_chat_template=args.lm_eval_chat_template)
    else:
        report = evaluate_adapter(adapter, args.task, base=args.base, limit=args.limit, seeds=_seeds(args.seeds),
                                  gen=gen, out=args.out, nlu_mode=args.nlu_mode, device=args.device,
                                  trust_remote_code=args.trust_remote_code)
    print_table(report)
    if args.out:
        print(f"wrote {args.out}")
    return 0
