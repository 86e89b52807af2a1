"""Pipeline files: schema, YAML traps, line-accurate errors, overrides, chains, shipped pipelines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from workbench.cli import main
from workbench.errors import ConfigError
from workbench.pipeline import PipelineError, expand_chain, load_pipeline, parse_chain, validate
from workbench.pipeline import names, schema
from workbench.pipeline.yaml_load import load_located

ROOT = Path(__file__).resolve().parents[1]
BAD = sorted((ROOT / "tests" / "pipelines_bad").glob("*.yaml"))
# pipelines/paper/: the LoRI paper's pipelines (scripts/make_paper_pipelines.py; tests/test_paper_pipelines.py)
SHIPPED = sorted((ROOT / "pipelines").glob("*.yaml")) + sorted((ROOT / "pipelines" / "paper").glob("*.yaml"))


def _errors(path, overrides=(), **options) -> list[str]:
    with pytest.raises(PipelineError) as info:
        load_pipeline(path, overrides, **options)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return str(info.value).splitlines()


def _header(path: Path, key: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^# {key}: (.*)$", path.read_text(), re.M)]


# --- shipped pipelines -----------------------------------------------------------------------------

def test_shipped_pipelines_exist():
    assert {"safety-math-code.yaml", "merge-four.yaml", "paper-llama3-continual.yaml",
            "paper-llama3-merge.yaml"} <= {p.name for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT / "pipelines").as_posix())
def test_shipped_pipeline_validates(path):
    first = path.read_text().splitlines()[0]
    pipe = load_pipeline(path)
    # plugins run only when the command line says so: the exact command then carries the flag
    where = path.relative_to(ROOT / "pipelines").as_posix()
    assert first == f"# workbench run pipelines/{where}" + (" --allow-plugins" if pipe.model.plugins else "")
    assert pipe.name == path.stem
    assert len(pipe.tasks()) == len(pipe.model.stages)


def test_paper_pipelines_use_paper_settings():
    pipe = load_pipeline(ROOT / "pipelines" / "paper-llama3-continual.yaml")
    assert pipe.model.base.model == "meta-llama/Meta-Llama-3-8B"
    probe, safety = pipe.task("safety_probe").params, pipe.task("safety").params
    assert (probe["rank"], probe["alpha"], probe["lr"], safety["lr"]) == (32, 64.0, 5e-5, 5e-4)
    assert pipe.task("safety_mask").params["sparsity"] == 0.9


# --- malformed files: every one gives its documented error at its line ---------------------------

def test_enough_bad_fixtures():
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_pipeline_reports_located_error(path):
    for need in _header(path, "needs"):
        if names.known_names(need) is None:
            pytest.skip(f"no {need} registry in this checkout")
    (expect,) = _header(path, "expect")
    if expect.startswith("--set "):
        prefix = expect
    else:
        line, rest = expect.split(" ", 1)
        prefix = f"{path}:{line}: {rest}"
    errors = _errors(path, _header(path, "set"))
    assert any(e.startswith(prefix) for e in errors), f"wanted {prefix!r} in:\n" + "\n".join(errors)


def test_all_errors_reported_at_once(tmp_path):
    text = "\n".join(p.read_text() for p in BAD if p.name in ("unknown_key.yaml",))
    text = text + "  t:\n    kind: trian\n  u:\n    kind: calibrate\n    from: nowhere\n    sparsity: 2\n"
    f = tmp_path / "many.yaml"
    f.write_text(text)
    errors = _errors(f)
    assert [e.split(": ", 2)[1] for e in errors] == ["stages.s.rnak", "stages.t.kind", "stages.u.from",
                                                     "stages.u.sparsity"]
    assert [int(e.split(":")[1]) for e in errors] == [6, 8, 11, 12]


def test_error_is_a_config_error_and_cli_exits_2(capsys):
    path = ROOT / "tests" / "pipelines_bad" / "unknown_key.yaml"
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:6: stages.s.rnak: unknown field 'rnak'")
    assert issubclass(PipelineError, ConfigError)


# --- YAML traps --------------------------------------------------------------------------------------

def test_exponent_floats_are_numbers_and_safeloader_is_untouched():
    located = load_located("lr: 1e-4\nb: 2E5\nc: 1.5e-3\nd: 3\n", "x.yaml")
    assert located.tree == {"lr": 1e-4, "b": 2e5, "c": 1.5e-3, "d": 3}
    assert yaml.safe_load("lr: 1e-4") == {"lr": "1e-4"}  # our resolver did not leak into SafeLoader


def test_lr_exponent_in_pipeline(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("defaults:\n  lr: 1e-4\nstages:\n  s: {kind: train, task: safety, lr: 2e-3}\n")
    pipe = load_pipeline(f)
    assert pipe.model.defaults.lr == 1e-4 and pipe.task("s").params["lr"] == 2e-3


def test_quoted_no_and_true_bool_are_fine(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("base: {trust_remote_code: yes}\nstages:\n  e: {kind: evaluate, tasks: [safety, \"no\"]}\n")
    if names.known_names("task") is not None:
        errors = _errors(f, trust_remote_code=True)
        assert len(errors) == 1 and "unknown task 'no'" in errors[0]
    else:
        assert load_pipeline(f, trust_remote_code=True).model.base.trust_remote_code is True


def test_merge_keys_and_lines(tmp_path):
    located = load_located("common: &c {rank: 4}\nstages:\n  s:\n    <<: *c\n    kind: train\n", "x.yaml")
    assert located.tree["stages"]["s"] == {"rank": 4, "kind": "train"}
    assert located.where(("stages", "s", "kind")) == "x.yaml:5"


# --- overrides -----------------------------------------------------------------------------------------

def test_set_overrides_apply_before_validation():
    path = ROOT / "pipelines" / "safety-math-code.yaml"
    pipe = load_pipeline(path, ["stages.math.lr=3e-3", "defaults.rank=16", "stages.base_eval.tasks=[math]"])
    assert pipe.task("math").params["lr"] == 3e-3
    assert pipe.task("safety_probe").params["rank"] == 16
    assert pipe.task("base_eval").params["tasks"] == ["math"]


def test_set_unknown_leaf_is_reported_at_the_override():
    errors = _errors(ROOT / "pipelines" / "safety-math-code.yaml", ["stages.math.rnak=16", "nonsense"])
    assert errors[0].startswith("--set nonsense: expected KEY=VALUE")
    assert errors[1].startswith("--set stages.math.rnak: unknown field 'rnak'")


# --- chains ------------------------------------------------------------------------------------------

def test_parse_chain_forms():
    assert parse_chain("safety->math->code") == ["safety", "math", "code"]
    assert parse_chain("safety, math,code") == ["safety", "math", "code"]


@pytest.mark.parametrize("text", ["safety-", "safety->math-", "safety-,math"])
def test_chain_eaten_by_shell_is_refused_with_quoted_form(text):
    with pytest.raises(ConfigError, match=r"quote the chain: workbench run 'safety->math->code'"):
        parse_chain(text)


def test_chain_repeats_and_empties_refused():
    with pytest.raises(ConfigError, match="more than once"):
        parse_chain("math->math")
    with pytest.raises(ConfigError, match="empty task name"):
        parse_chain("math->->code")


def test_lori_chain_structure():
    pipe = load_pipeline("safety->math->code")
    t = {x.name: x for x in pipe.tasks()}
    assert t["safety_probe"].params["method"] == "lori_d" and t["safety"].params["method"] == "lori_s"
    assert t["safety"].input("mask") is t["safety_mask"]
    assert t["safety"].params["a_seed"] == t["safety_probe"].params["a_seed"]
    assert t["math_probe"].kind == "continue" and t["math_probe"].input("from") is t["safety"]
    assert [m.name for m in t["code_mask"].inputs_for("exclude")] == ["safety_mask", "math_mask"]
    assert t["code"].input("from") is t["math"] and t["code"].input("mask") is t["code_mask"]
    assert [e.name for e in t["analyze"].inputs_for("forgetting")] == ["base_eval", "safety_eval", "math_eval",
                                                                       "code_eval"]
    assert all(t[f"{k}_eval"].params["tasks"] == ["safety", "math", "code"] for k in ("safety", "math", "code"))
    assert pipe.order()[-1] == "analyze"


def test_seed_reseeds_the_lori_chain_a():
    t = {x.name: x for x in load_pipeline("safety->math", overrides=["defaults.seed=3"]).tasks()}
    assert t["safety"].params["a_seed"] == t["safety_probe"].params["a_seed"] == 3


# Each kind's schema fields that do not reach Task.params under the same name, with the reason.
_NOT_IN_PARAMS = {"kind": "the Task's kind", "steps": "resolved as steps/epochs by _length",
                  "epochs": "resolved as steps/epochs by _length", "method": "resolved through `from`"}


@pytest.mark.parametrize("kind", sorted(schema.KIND_MODELS))
def test_every_stage_field_is_part_of_the_cache_key(kind):
    """A field left out of Task.params would change a stage without changing its key: a stale cache hit.
    Some fields enter the params only away from their default (so that keys from before they existed
    stay valid): the signal preset (``nll_only``), the official protocol (``pad_token``) and an analyze
    stage without attribution set them."""
    pipes = [load_pipeline("pipelines/merge-four.yaml"), load_pipeline("safety->math"),
             load_pipeline("safety->math", preset="signal"), load_pipeline("safety->math", protocol="official"),
             load_pipeline("safety->math", ["stages.analyze.attribute=false"], preset="signal")]
    params = set().union(*(t.params for pipe in pipes for t in pipe.tasks() if t.kind == kind))
    model = schema.KIND_MODELS[kind]
    fields = {f.alias or n for n, f in model.model_fields.items()} - set(schema.REF_FIELDS[kind]) - set(_NOT_IN_PARAMS)
    assert fields <= params, f"{kind}: {sorted(fields - params)} missing from the resolved params"


def test_lora_chain_has_no_masks_and_compare_prefixes():
    lora = load_pipeline("safety,math", method="lora")
    assert {t.kind for t in lora.tasks()} == {"train", "continue", "evaluate", "analyze"}
    both = load_pipeline("safety->math", compare=["lora"])
    order = both.order()
    assert "lori_s-safety_mask" in order and "lora-math" in order and order.count("analyze") == 1
    analyze = both.task("analyze")
    assert {a.name for a in analyze.inputs_for("adapters")} == {"lori_s-safety", "lori_s-math", "lora-safety",
                                                                "lora-math"}


@pytest.mark.parametrize("preset", ["quick", "default", "signal", "paper"])
def test_chain_presets_validate(preset):
    tree = expand_chain("safety->math->code", preset=preset)
    pipe = load_pipeline("safety->math->code", preset=preset)
    assert pipe.model.defaults.rank == tree["defaults"]["rank"]
    if preset == "paper":
        assert pipe.model.base.model == "meta-llama/Meta-Llama-3-8B"
        assert pipe.task("safety_probe").params["lr"] == 5e-5 and pipe.task("safety").params["lr"] == 5e-4
    if preset == "quick":
        assert pipe.task("safety_probe").params["steps"] <= 50


def test_eleven_task_lori_chain_cannot_be_disjoint():
    tasks = ",".join(["safety", "math", "code", "nlu"] + [f"t{i}" for i in range(7)])
    tree = expand_chain(tasks)
    from workbench.pipeline import load_tree
    from workbench.pipeline.yaml_load import Located

    with pytest.raises(PipelineError, match="masks cannot be disjoint"):
        load_tree(Located(tree, {(): "chain"}, origin="chain"), ROOT)


# --- custom tasks, keys, validate ------------------------------------------------------------------

def test_custom_task_file_is_resolved_and_hashed(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"instruction": "hi", "output": "there"}\n')
    f = tmp_path / "p.yaml"
    f.write_text("tasks:\n  mine: {path: data.jsonl}\nstages:\n  s: {kind: train, task: mine}\n")
    task = load_pipeline(f).task("s")
    assert task.params["task_spec"]["path"] == str((tmp_path / "data.jsonl").resolve())
    assert task.files == (str((tmp_path / "data.jsonl").resolve()),)


def test_validate_creates_nothing(tmp_path):
    out = tmp_path / "run"
    result = validate(ROOT / "pipelines" / "merge-four.yaml", run_dir=out)
    assert result.plan is None and not out.exists()
    with pytest.raises(PipelineError):
        validate(ROOT / "tests" / "pipelines_bad" / "cycle.yaml", run_dir=out)
    assert not out.exists()


def test_validate_cli_prints_order(capsys):
    assert main(["validate", "safety->math"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: safety->math (chain-safety-math): 10 stages")
    assert out.index("safety_probe") < out.index("safety_mask") < out.index("math_probe")
