"""Property 23: a pipeline file is data. It cannot start code by itself: remote model code
(``base.trust_remote_code``) needs ``--trust-remote-code`` on the command line, and the transformers loader
is never called with ``trust_remote_code=True`` without it, by any command that loads a base. (Plugins,
the other door, are held by ``tests/test_plugins.py``; a file that tries both is refused here.)

The loader is replaced by a recorder that notes its ``trust_remote_code`` and stops the command, so no
weight is read and nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.cli import main

from .harness import bad_input, tiny_adapter


class Stop(Exception):
    """Raised by the recording loader: the command got as far as loading the base."""


@pytest.fixture()
def loader_calls(monkeypatch):
    """Every ``from_pretrained`` call's ``trust_remote_code`` (model and tokenizer), in order."""
    import transformers

    calls: list = []

    def record(*args, **kwargs):
        calls.append(kwargs.get("trust_remote_code"))
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record)
    monkeypatch.delenv("WORKBENCH_ALLOW_PLUGINS", raising=False)
    return calls


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    """Looks like a local transformers model to ``resolve_source`` (the recorder stops before it is read)."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def _pipeline(tmp_path: Path, model_dir: Path, stage: str, trust: bool, extra: str = "") -> Path:
    base = f"{{model: {model_dir}" + (", trust_remote_code: true}" if trust else "}")
    stages = {"train": "s: {kind: train, task: safety, steps: 1}", "evaluate": "e: {kind: evaluate, tasks: [safety]}"}
    path = tmp_path / "p.yaml"
    path.write_text(f"base: {base}\n{extra}stages:\n  {stages[stage]}\n")
    return path


def _commands(tmp_path: Path, model_dir: Path) -> dict[str, list[str]]:
    a, b = tiny_adapter(1).save(tmp_path / "a"), tiny_adapter(2).save(tmp_path / "b")
    return {
        "train": ["train", "--task", "safety", "--model", str(model_dir), "--steps", "1", "--out", str(tmp_path / "t")],
        "eval": ["eval", "--base-only", "--base", str(model_dir), "--task", "safety", "--limit", "1"],
        "merge --into-base": ["merge", str(a), str(b), "--into-base", "--base", str(model_dir),
                              "--out", str(tmp_path / "m")],
        "run (train stage)": ["run", str(_pipeline(tmp_path, model_dir, "train", False)), "--out", str(tmp_path / "r")],
        "run (evaluate stage)": ["run", str(_pipeline(tmp_path, model_dir, "evaluate", False)),
                                 "--out", str(tmp_path / "r")],
    }


COMMANDS = ["train", "eval", "merge --into-base", "run (train stage)", "run (evaluate stage)"]


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_loads_remote_code_without_the_flag(tmp_path, model_dir, loader_calls, command):
    argv = _commands(tmp_path, model_dir)[command]
    with pytest.raises(Stop):
        main(argv)
    assert loader_calls == [False]


@pytest.mark.parametrize("command", ["train", "eval", "merge --into-base"])
def test_the_flag_turns_remote_code_on_for_single_commands(tmp_path, model_dir, loader_calls, command):
    with pytest.raises(Stop):
        main(_commands(tmp_path, model_dir)[command] + ["--trust-remote-code"])
    assert loader_calls == [True]


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_pipeline_file_alone_cannot_turn_remote_code_on(tmp_path, model_dir, loader_calls, capsys, stage):
    pipe, out = _pipeline(tmp_path, model_dir, stage, True), tmp_path / "r"
    bad_input()
    assert main(["run", str(pipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{pipe}:1: base.trust_remote_code: refused" in err and "--trust-remote-code" in err
    assert loader_calls == [] and not out.exists()
    assert main(["validate", str(pipe)]) == 2  # validate predicts the refusal
    with pytest.raises(Stop):  # file and flag together: the loader is asked, with trust_remote_code=True
        main(["run", str(pipe), "--out", str(out), "--trust-remote-code"])
    assert loader_calls == [True]


def test_an_override_is_refused_the_same_way(tmp_path, model_dir, loader_calls, capsys):
    pipe = _pipeline(tmp_path, model_dir, "train", False)
    bad_input()
    assert main(["run", str(pipe), "--set", "base.trust_remote_code=true", "--out", str(tmp_path / "r")]) == 2
    assert "base.trust_remote_code: refused" in capsys.readouterr().err and loader_calls == []


def test_a_file_that_tries_both_doors_is_refused_and_runs_nothing(tmp_path, model_dir, loader_calls, capsys):
    marker = tmp_path / "plugin-ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    pipe = _pipeline(tmp_path, model_dir, "train", True, extra="plugins: [evil.py]\n")
    bad_input()
    assert main(["run", str(pipe), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "base.trust_remote_code: refused" in err
    assert main(["run", str(pipe), "--out", str(tmp_path / "r"), "--trust-remote-code"]) == 2
    err = capsys.readouterr().err
    assert "--allow-plugins" in err and str((tmp_path / "evil.py").resolve()) in err
    assert not marker.exists() and loader_calls == [] and not (tmp_path / "r").exists()


def test_merge_refuses_the_flag_without_into_base(tmp_path, capsys):
    a, b = tiny_adapter(1).save(tmp_path / "a"), tiny_adapter(2).save(tmp_path / "b")
    assert main(["merge", str(a), str(b), "--trust-remote-code", "--out", str(tmp_path / "m")]) == 2
    assert "--trust-remote-code is only used with --into-base" in capsys.readouterr().err


def test_the_package_never_turns_remote_code_on_by_itself():
    """No call in ``workbench/`` passes ``trust_remote_code=True`` literally, and no ``load_dataset`` call
    passes it at all: the only way to True is the user's flag (so hub datasets never run loading scripts)."""
    import ast

    root = Path(__file__).resolve().parents[2] / "workbench"
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for kw in node.keywords:
                if kw.arg == "trust_remote_code" and (func == "load_dataset" or (
                        isinstance(kw.value, ast.Constant) and kw.value.value is True)):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert found == []
