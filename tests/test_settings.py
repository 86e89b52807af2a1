"""One settings model for training: every setting reaches TrainConfig / AdapterSpec from a pipeline and from the
`workbench train` flags under one name, with one default, and is documented in SCHEMA.md."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

import pytest

from workbench.adapters.spec import AdapterSpec
from workbench.commands.train import add_parser, settings_from_args
from workbench.errors import ConfigError
from workbench.pipeline import load_pipeline, schema
from workbench.settings import LOOP_FIELDS, LoopSettings, TrainSettings, default
from workbench.stages.common import adapter_spec, train_config
from workbench.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _other_value(name: str):
    """A valid value of a setting that differs from its default."""
    info = TrainSettings.model_fields[name]
    value, kind = default(name), info.annotation
    if kind is bool:
        return not value
    if typing.get_origin(kind) is typing.Literal:
        return next(c for c in typing.get_args(kind) if c != value)
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, int):
        return value + 1
    raise AssertionError(f"no test value for {name}")


def _stage_params(tmp_path: Path, stage_extra: dict, defaults: dict | None = None) -> dict:
    import yaml

    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"defaults": defaults or {}, "stages": {
        "s": {"kind": "train", "task": "safety", **stage_extra}}}))
    return load_pipeline(f).task("s").params


@pytest.mark.parametrize("name", LOOP_FIELDS)
def test_every_loop_setting_reaches_train_config_from_a_pipeline(tmp_path, name):
    value = _other_value(name)
    assert getattr(train_config(_stage_params(tmp_path, {name: value})), name) == value
    # and from defaults: (steps/epochs: a stage that sets neither takes the defaults' pair)
    assert getattr(train_config(_stage_params(tmp_path, {}, {name: value})), name) == value


@pytest.mark.parametrize("name", ["rank", "alpha", "dropout", "a_seed"])
def test_shape_settings_reach_the_adapter_spec(tmp_path, name):
    value = {"rank": 4, "alpha": 3.0, "dropout": 0.25, "a_seed": 7}[name]
    assert getattr(adapter_spec(_stage_params(tmp_path, {name: value})), name) == value


def test_options_and_targets_reach_the_adapter_spec(tmp_path):
    spec = adapter_spec(_stage_params(tmp_path, {"target_modules": ["q_proj"], "options": {"lr_ratio": 4},
                                                 "method": "lora_plus"}))
    assert spec.target_modules == ("q_proj",) and spec.option("lr_ratio") == 4


def test_old_scheduler_spelling_is_a_validated_alias(tmp_path):
    assert _stage_params(tmp_path, {"schedule": "linear"})["scheduler"] == "linear"
    with pytest.raises(Exception, match="scheduler|schedule"):
        _stage_params(tmp_path, {"schedule": "sometimes"})
    assert TrainConfig(schedule="constant").scheduler == "constant"
    with pytest.raises(ConfigError, match="same setting"):
        TrainConfig(schedule="constant", scheduler="linear")


def test_one_default_per_setting_everywhere():
    assert TrainConfig().to_dict() == LoopSettings().model_dump()
    spec = AdapterSpec()
    assert (spec.method, spec.rank, spec.dropout, list(spec.target_modules)) == (
        default("method"), default("rank"), default("dropout"), default("target_modules"))
    assert spec.alpha == 2.0 * spec.rank and AdapterSpec(rank=4).alpha == 8.0  # alpha: 2 x rank when unset
    pipeline_defaults = schema.Defaults()
    for name in TrainSettings.model_fields:
        if name not in ("steps", "epochs"):  # unset in a pipeline: one epoch
            assert getattr(pipeline_defaults, name) == default(name), name


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["train", "--task", "math", "--out", "x", *argv])


def test_cli_has_one_flag_per_setting_with_the_models_defaults_and_help():
    settings = settings_from_args(_parse())
    assert settings == TrainSettings()
    assert train_config(settings.model_dump()) == TrainConfig()
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    helps = parser._subparsers._group_actions[0].choices["train"].format_help()  # noqa: SLF001
    for name, info in TrainSettings.model_fields.items():
        if name != "options":  # --option KEY=VALUE
            assert f"--{name.replace('_', '-')}" in helps, name
            assert info.description.split()[0] in helps, name


@pytest.mark.parametrize("name", [n for n in TrainSettings.model_fields if n not in ("options",)])
def test_every_cli_flag_reaches_the_settings(name):
    value = _other_value(name) if name in LOOP_FIELDS else {
        "rank": 4, "alpha": 3.0, "dropout": 0.25, "target_modules": ["q_proj", "v_proj"], "a_seed": 7,
        "method": "lora", "max_samples": 5}[name]
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool):
        argv = [flag] if value else []
    elif isinstance(value, list):
        argv = [flag, *value]
    else:
        argv = [flag, str(value)]
    assert getattr(settings_from_args(_parse(*argv)), name) == value


def test_old_cli_spellings_still_work():
    s = settings_from_args(_parse("--schedule", "linear", "--limit", "3", "--targets", "q_proj,v_proj",
                                  "--targets", "o_proj"))
    assert (s.scheduler, s.max_samples, s.target_modules) == ("linear", 3, ["q_proj", "v_proj", "o_proj"])


def test_cli_errors_name_the_flag():
    with pytest.raises(ConfigError, match=r"--batch-size: Input should be greater than or equal to 1"):
        settings_from_args(_parse("--batch-size", "0"))


def test_every_setting_is_documented_in_schema_md():
    from workbench.pipeline.kinds import stage_kinds

    text = (ROOT / "workbench" / "pipeline" / "SCHEMA.md").read_text()
    kind_defaults = [n for k in stage_kinds() if stage_kinds().get(k).defaults is not None
                     for n in stage_kinds().get(k).defaults.model_fields]
    for name in [*TrainSettings.model_fields, *kind_defaults]:
        assert f"`{name}`" in text, name
