"""The command line itself: lazy command imports (no torch for validate/status/ls/--version), the help
table, and list options that accept both ``--x a b`` and ``--x a --x b`` on every command."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli import COMMANDS, build_parser, command_of, main

REPO = Path(__file__).resolve().parents[1]


def _modules_after(argv: list[str], cwd: Path) -> tuple[int, set[str]]:
    """Run ``workbench ARGV`` in a fresh interpreter; its exit code and the heavy modules it imported."""
    code = ("import sys, json\nfrom workbench.cli import main\nrc = main(%r)\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'safetensors.torch') if m in sys.modules]\n"
            "print('MODULES=' + json.dumps([rc, heavy]))" % argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)
    line = [x for x in proc.stdout.splitlines() if x.startswith("MODULES=")]
    assert line, proc.stdout + proc.stderr
    import json

    rc, heavy = json.loads(line[0][len("MODULES="):])
    return rc, set(heavy)


@pytest.mark.parametrize("argv", [
    ["--version"],
    ["validate", "safety->math->code"],
    ["validate", "pipelines/safety-math-code.yaml"],
    ["validate", "pipelines/merge-four.yaml"],
    ["ls", "merges"],
    ["ls", "methods"],
    ["ls", "tasks"],
    ["ls", "scopes"],
    ["ls", "pipelines"],
    ["status", "no-such-run-dir"],
])
def test_light_commands_never_import_torch(argv):
    rc, heavy = _modules_after(argv, REPO)
    assert rc in (0, 2)
    assert not heavy, f"`workbench {' '.join(argv)}` imported {sorted(heavy)}"


def test_status_of_a_real_run_dir_needs_no_torch(tmp_path):
    from workbench.graph.store import RunStore  # noqa: F401  (the store is torch-free by contract)

    run = tmp_path / "run"
    rc, _ = _modules_after(["validate", "safety->math", "--out", str(run)], REPO)
    assert rc == 0
    (run).mkdir(exist_ok=True)
    (run / "manifest.json").write_text('{"version": 1, "pipeline": "p", "stages": {}}')
    rc, heavy = _modules_after(["status", str(run)], REPO)
    assert not heavy


def test_only_the_command_run_is_imported():
    for mod in [m for m in sys.modules if m.startswith("workbench.commands.")]:
        del sys.modules[mod]
    build_parser(only="validate")
    loaded = {m for m in sys.modules if m.startswith("workbench.commands.")}
    assert loaded == {"workbench.commands.validate"}


def test_help_table_matches_each_command_module():
    for name, line in COMMANDS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(f"workbench.commands.{name}").add_parser(sub)
        helps = {a.dest: a.help for a in sub._choices_actions}
        assert helps == {name: line}, f"workbench/cli.py COMMANDS['{name}'] differs from its module's help"


def test_command_of_finds_the_command_word():
    assert command_of(["--version"]) is None
    assert command_of(["validate", "x.yaml"]) == "validate"
    assert command_of(["nosuch"]) is None


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


# command, the list option, values, the rest of a valid command line, the parsed attribute
LIST_OPTIONS = [
    ("calibrate", "--exclude", ["m1", "m2"], ["AD", "--sparsity", "0.9", "--out", "o"], "exclude"),
    ("masks", "--vs", ["m1", "m2"], ["show", "M"], "vs"),
    ("merge", "--weights", ["0.5", "0.25"], ["a", "b", "--out", "o"], "weights"),
    ("report", "--masks", ["m1", "m2"], ["a", "b", "--out", "o"], "masks"),
    ("eval", "--task", ["math", "nlu"], ["AD"], "task"),
    ("run", "--set", ["a.b=1", "c.d=2"], ["PIPE"], "overrides"),
    ("run", "--compare", ["lora", "lori_d"], ["PIPE"], "compare"),
    ("validate", "--set", ["a.b=1", "c.d=2"], ["PIPE"], "overrides"),
    ("validate", "--compare", ["lora", "lori_d"], ["PIPE"], "compare"),
    ("train", "--option", ["x=1", "y=2"], ["--task", "math", "--out", "o"], "option"),
    ("train", "--task-option", ["x=1", "y=2"], ["--task", "math", "--out", "o"], "task_option"),
    ("train", "--target-modules", ["q_proj", "v_proj"], ["--task", "math", "--out", "o"], "target_modules"),
    ("calibrate", "--sparsity", ["0.5", "0.9"], ["AD", "--out-dir", "d"], "sparsity"),
    ("eval", "--lm-eval-tasks", ["arc_easy", "hellaswag"], ["AD", "--harness", "lm_eval"], "lm_eval_tasks"),
    ("report", "--data", ["safety", "math"], ["a", "b", "--out", "o"], "data"),
    ("train", "--log-with", ["tensorboard", "wandb"], ["--task", "math", "--out", "o"], "log_with"),
    ("run", "--log-with", ["tensorboard", "wandb"], ["PIPE"], "log_with"),
]
FLOATS = {"--weights", "--sparsity"}


@pytest.mark.parametrize("command,flag,values,rest,attr", LIST_OPTIONS, ids=[f"{c}{f}" for c, f, *_ in LIST_OPTIONS])
def test_list_option_accepts_both_spellings(command, flag, values, rest, attr):
    parser = build_parser(only=command)
    together = parser.parse_args([command, *rest, flag, *values])
    repeated = parser.parse_args([command, *rest] + [x for v in values for x in (flag, v)])
    want = [float(v) for v in values] if flag in FLOATS else values
    assert getattr(together, attr) == want
    assert getattr(repeated, attr) == want  # the old nargs="+" parser kept only the last value here


def test_every_list_option_of_every_command_is_covered():
    """A new nargs='+' option must use add_list_option and get a row in LIST_OPTIONS."""
    covered = {(c, f) for c, f, *_ in LIST_OPTIONS}
    parser = build_parser()
    found = set()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for p in [sub] + [s for a in sub._actions if isinstance(a, argparse._SubParsersAction) for s in a.choices.values()]:
            for action in p._actions:
                if action.option_strings and action.nargs in ("+", "*"):
                    assert isinstance(action, argparse._ExtendAction), (name, action.option_strings)
                    found.add((name, action.option_strings[0]))
                if action.option_strings and type(action) is argparse._AppendAction:
                    raise AssertionError(f"{name} {action.option_strings}: use add_list_option")
    assert found <= covered, sorted(found - covered)


def test_calibrate_repeated_exclude_gives_pairwise_disjoint_masks(tmp_path, capsys):
    """Three tasks built on the command line: the third mask excludes the first two, given as two flags."""
    from workbench.masking import check_disjoint
    from workbench.masking.file import load_mask
    from workbench.testing import random_adapter

    paths = []
    for i, task in enumerate(["safety", "math", "code"]):
        random_adapter(seed=i).save(tmp_path / task)
        out = tmp_path / f"{task}.mask.safetensors"
        argv = ["calibrate", str(tmp_path / task), "--sparsity", "0.9", "--out", str(out)]
        for earlier in paths:
            argv += ["--exclude", str(earlier)]
        assert main(argv) == 0, capsys.readouterr().err
        paths.append(out)
    masks = [load_mask(p) for p in paths]
    check_disjoint(masks, ["safety", "math", "code"])  # raises on any shared position
    assert len(masks[2].meta["excluded"]) == 2
    for a in range(3):
        for b in range(a + 1, 3):
            shared = sum(int((masks[a].tensors[k] & masks[b].tensors[k]).sum()) for k in masks[a].tensors)
            assert shared == 0, (a, b, shared)
