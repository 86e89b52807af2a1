"""Pipeline plugins: a pipeline file names Python files that register merge strategies (or methods, tasks);
their names validate, the stages that use them carry the file in their cache key, and bad plugins are
located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from workbench.pipeline import PipelineError, load_pipeline

PLUGIN = '''\
from workbench.merges import register_merge


@register_merge("{name}")
def pick_first(factors, weights, params, ctx):
    f = factors[0]
    return type(f)(f.A, f.B * {scale}, f.scaling)
'''

PIPE = """\
    base: {{model: {model}}}
    defaults: {{steps: 1, batch_size: 2, max_length: 32, max_samples: 4, rank: 2, alpha: 4}}
    plugins: [{plugins}]
    stages:
      a: {{kind: train, task: safety, method: lora}}
      b: {{kind: train, task: math, method: lora}}
      merged: {{kind: merge, adapters: [a, b], strategy: {strategy}}}
"""


def _write(tmp_path: Path, name: str, plugins: str, strategy: str, model: str = "smollm2-135m-instruct",
           scale: float = 1.0, plugin_name: str | None = None) -> Path:
    if plugin_name:
        (tmp_path / "plug.py").write_text(PLUGIN.format(name=plugin_name, scale=scale))
    path = tmp_path / name
    path.write_text(textwrap.dedent(PIPE.format(model=model, plugins=plugins, strategy=strategy)))
    return path


def test_plugin_strategy_validates_and_is_in_the_merge_key_only(tmp_path):
    pipe = load_pipeline(_write(tmp_path, "p.yaml", "plug.py", "pick_first_v1", plugin_name="pick_first_v1"))
    plugin = str((tmp_path / "plug.py").resolve())
    assert plugin in pipe.task("merged").files
    assert plugin not in pipe.task("a").files and plugin not in pipe.task("b").files
    assert pipe.provides == {"merge strategy": {"pick_first_v1": plugin}}
    again = load_pipeline(tmp_path / "p.yaml")  # same content: imported once, not registered twice
    assert again.task("merged").digest == pipe.task("merged").digest


def test_editing_the_plugin_changes_only_the_merge_key(tmp_path):
    from workbench.graph.scheduler import schedule
    from workbench.graph.store import compute_keys

    pipe = load_pipeline(_write(tmp_path, "p.yaml", "plug.py", "pick_first_v2", plugin_name="pick_first_v2"))
    groups = schedule(pipe.tasks())
    before = {t.name: k for t, k in compute_keys(groups).items()}
    plugin = tmp_path / "plug.py"
    plugin.write_text(plugin.read_text().replace("* 1.0", "* 0.5"))  # what a rerun after an edit sees
    after = {t.name: k for t, k in compute_keys(groups).items()}
    assert sorted(n for n in before if before[n] != after[n]) == ["merged"]


def test_missing_plugin_is_a_located_error(tmp_path):
    path = _write(tmp_path, "p.yaml", "nope.py", "concat")
    with pytest.raises(PipelineError) as err:
        load_pipeline(path)
    assert f"{path}:3: plugins.0: plugin file 'nope.py' not found" in str(err.value)


def test_failing_plugin_names_its_error_and_line(tmp_path):
    (tmp_path / "bad.py").write_text("x = 1\ny = 1 / 0\n")
    path = _write(tmp_path, "p.yaml", "bad.py", "concat")
    with pytest.raises(PipelineError) as err:
        load_pipeline(path)
    msg = str(err.value)
    assert "plugins.0: importing plugin 'bad.py' failed: ZeroDivisionError: division by zero (bad.py:2)" in msg


def test_without_the_plugin_the_strategy_is_unknown(tmp_path):
    path = _write(tmp_path, "p.yaml", "", "no_such_strategy")
    with pytest.raises(PipelineError, match="unknown merge strategy 'no_such_strategy'"):
        load_pipeline(path)


def test_pipeline_runs_a_plugin_merge_end_to_end(tmp_path):
    from workbench.adapters.adapter import load_adapter
    from workbench.models.tiny import save_tiny_llama
    from workbench.stages.run import run

    tiny = save_tiny_llama(tmp_path / "tiny")
    path = _write(tmp_path, "p.yaml", "plug.py", "pick_first_e2e", model=str(tiny), scale=2.0,
                  plugin_name="pick_first_e2e")
    results = run(path, tmp_path / "run", progress=False)
    merged = load_adapter(results["merged"].artifacts["adapter"])
    a = load_adapter(results["a"].artifacts["adapter"])
    key = a.b_keys()[0]
    assert merged.tensors[key].equal(a.tensors[key] * 2.0)
