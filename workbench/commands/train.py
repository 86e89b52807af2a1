"""``workbench train --task math --method lori_s --mask MASK [--from ADAPTER] ... --out DIR``.

Every training setting's flag, type, choices, help text and default come from the one settings model
(``workbench/settings.py``): ``--rank``, ``--lr``, ``--precision``, ... are generated from its fields, so
a pipeline's ``defaults:`` and this command agree on every name and default. The flags written here are
the command's own (what to train on, where the base and the output are).
"""

from __future__ import annotations

import typing

from workbench.commands import add_list_option, add_trust_remote_code
from workbench.models.base import EMBEDDED
from workbench.settings import TrainSettings, aliases

# Flag spellings kept from before the settings model named these settings.
OLD_FLAGS = {"max_samples": ("--limit",), "target_modules": ("--targets",)}
LENGTH = ("steps", "epochs")  # two ways to give one length: mutually exclusive
NOT_FLAGS = ("options",)  # given as repeated --option KEY=VALUE


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train an adapter on a task")
    p.add_argument("--task", required=True, help="task name (see `workbench tasks`)")
    p.add_argument("--mask", help="mask file (for a masked method such as lori_s)")
    p.add_argument("--from", dest="init", metavar="ADAPTER", help="continue this adapter (continual learning)")
    p.add_argument("--model", default=EMBEDDED, help=f"base model: alias, hub id, directory or .gguf (default {EMBEDDED})")
    p.add_argument("--quantize", choices=["nf4", "none"],
                   help="nf4: load the base in 4 bits (any method); none: full precision. Unset: full precision, "
                        "except --method qlora, which loads its base in nf4 itself")
    add_trust_remote_code(p)
    p.add_argument("--out", required=True, help="output directory (adapter in OUT/adapter, checkpoints in OUT/checkpoints)")
    add_settings_flags(p)
    p.add_argument("--data-dir", default=None, help="directory with full datasets (default: shipped subsets)")
    add_list_option(p, "--option", metavar="KEY=VALUE",
                   help="method option, e.g. --option lr_ratio=16 (lora_plus); see docs/methods.md")
    add_list_option(p, "--task-option", metavar="KEY=VALUE",
                   help="task option, e.g. --task-option safety_fraction=0.3 (see `workbench tasks`)")
    p.add_argument("--force", action="store_true", help="restart instead of refusing to resume with changed settings")
    add_list_option(p, "--log-with", metavar="TRACKER",
                    help="experiment trackers (accelerate's: tensorboard, wandb, mlflow, trackio, ...)")
    p.add_argument("--logging-dir", default=None, metavar="DIR",
                   help="where file-based trackers write (default OUT/tracking)")
    p.add_argument("--project", default="workbench", help="tracker project name (W&B, MLflow, trackio)")
    p.set_defaults(func=run)


def _flags(name: str) -> list[str]:
    """``--batch-size`` for ``batch_size``, then the accepted older spellings (``--schedule``, ``--limit``)."""
    return [f"--{n.replace('_', '-')}" for n in (name, *aliases(name))] + list(OLD_FLAGS.get(name, ()))


def _argument(info) -> dict:
    """argparse keywords for a settings field: its type, or choices for a Literal, a switch for a bool,
    one or more values for a list (``--target-modules q_proj v_proj``, repeatable, commas split too)."""
    kind = info.annotation
    if typing.get_origin(kind) is typing.Union:  # Optional[X]
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    kind = typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Annotated else kind
    if kind is bool:
        return {"action": "store_true"}
    if typing.get_origin(kind) is typing.Literal:
        return {"choices": list(typing.get_args(kind))}
    if typing.get_origin(kind) is list:
        return {"nargs": "+", "action": "extend", "metavar": "NAME"}
    return {"type": kind}


def _help(info) -> str:
    default = info.get_default(call_default_factory=True)
    if default is None or default is False:
        return info.description  # the description says what unset means
    shown = " ".join(default) if isinstance(default, list) else default
    return f"{info.description} (default {shown})"


def add_settings_flags(parser) -> None:
    """One flag per training setting, from :class:`workbench.settings.TrainSettings` (default None: a flag
    not given takes the model's default in :func:`settings_from_args`)."""
    length = parser.add_mutually_exclusive_group()
    for name, info in TrainSettings.model_fields.items():
        if name in NOT_FLAGS:
            continue
        target = length if name in LENGTH else parser
        target.add_argument(*_flags(name), dest=name, default=None, help=_help(info), **_argument(info))


def settings_from_args(args) -> TrainSettings:
    """The training settings the flags give (the model's defaults for the others), options included.

    Raises:
        ConfigError: a value the model refuses, naming the flag: ``--batch-size: Input should be ...``.
    """
    from pydantic import ValidationError

    from workbench.errors import ConfigError

    given = {n: getattr(args, n) for n in TrainSettings.model_fields if getattr(args, n, None) is not None}
    if "target_modules" in given:  # --targets q_proj,v_proj as before
        given["target_modules"] = [t for item in given["target_modules"] for t in item.split(",") if t]
    given["options"] = parse_options(args.option)
    try:
        return TrainSettings(**given)
    except ValidationError as exc:
        lines = [f"{_flag_of(e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise ConfigError("; ".join(lines)) from None


def _flag_of(loc: tuple) -> str:
    """The flag that gave a setting a pydantic error is located at (``('options', 'x')``: ``--option x``)."""
    if loc and loc[0] == "options":
        return " ".join(["--option", *map(str, loc[1:2])])
    return _flags(str(loc[0]))[0] if loc else "train"


def parse_options(items: list[str]) -> dict:
    """``["lr_ratio=16", "top_n=4"]`` -> ``{"lr_ratio": 16, "top_n": 4}`` (values read as YAML scalars)."""
    import yaml

    from workbench.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def run(args) -> int:
    from workbench.adapters.registry import get_method
    from workbench.models.base import BaseSpec
    from workbench.stages.common import adapter_spec, train_config
    from workbench.stages.train import train_task
    from workbench.tracking import step_logger

    settings = settings_from_args(args).model_dump()
    spec = adapter_spec({**settings, "task": args.task})
    get_method(spec.method).options(spec)  # unknown method or bad options: one line naming options.<field>
    cfg = train_config(settings)
    base = BaseSpec(name=args.model, quantize=args.quantize, trust_remote_code=args.trust_remote_code)
    task = args.task
    if args.task_option:
        from workbench.data.registry import get_task

        task = get_task(args.task, **parse_options(args.task_option))
    tracker = _tracker(args, settings)
    try:
        result = train_task(base, task, spec, cfg, args.out, init=args.init, mask=args.mask,
                            limit=settings["max_samples"], data_dir=args.data_dir, force=args.force,
                            log_step=step_logger(tracker, "train"))
    finally:
        if tracker is not None:
            tracker.finish()
    s = result.summary
    print(f"trained {s['steps']} steps: loss {s['loss_head']:.4f} -> {s['loss_tail']:.4f} "
          f"(mean of the first/last {s['loss_window']} steps), "
          f"{s['tokens_per_s']} tokens/s; adapter: {result.adapter_path}")
    return 0


def _tracker(args, settings: dict):
    """The trackers of ``--log-with`` (checked before any weight is loaded), or None."""
    from pathlib import Path

    from workbench.tracking import Tracking, open_tracker

    if not args.log_with:
        return None
    tracking = Tracking(log_with=args.log_with, project=args.project, run_name=Path(args.out).name,
                        logging_dir=args.logging_dir or str(Path(args.out) / "tracking"))
    return open_tracker(tracking, args.out, "train", config={"task": args.task, "model": args.model, **settings})
