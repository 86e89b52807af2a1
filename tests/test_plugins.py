"""Pipeline plugins: a pipeline file names Python files that register merge strategies (or methods, tasks);
they run only when the command line allows it (--allow-plugins, WORKBENCH_ALLOW_PLUGINS=1, allow_plugins=True);
otherwise they are read, never executed, and `run` refuses. Their names validate, the stages that use them
carry the file in their cache key, and bad plugins are located errors."""

from __future__ import annotations

import glob
import sys
import textwrap
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.pipeline import PipelineError, load_pipeline
from workbench.pipeline.plugin_scan import read_plugin
from workbench.pipeline.plugins import PluginsNotAllowedError

PLUGIN = '''\
from workbench.merges import register_merge


@register_merge("{name}")
def pick_first(factors, weights, params, ctx):
    f = factors[0]
    return type(f)(f.A, f.B * {scale}, f.scaling)
'''

# a plugin with a visible side effect at import: the marker file says whether its code ever ran
MARKER_PLUGIN = "open({marker!r}, 'w').close()\n" + PLUGIN

PIPE = """\
    base: {{model: {model}}}
    defaults: {{steps: 1, batch_size: 2, max_length: 32, max_samples: 4, rank: 2, alpha: 4}}
    plugins: [{plugins}]
    stages:
      a: {{kind: train, task: safety, method: lora}}
      b: {{kind: train, task: math, method: lora}}
      merged: {{kind: merge, adapters: [a, b], strategy: {strategy}}}
"""


@pytest.fixture(autouse=True)
def _no_env_switch(monkeypatch):
    monkeypatch.delenv("WORKBENCH_ALLOW_PLUGINS", raising=False)


def _write(tmp_path: Path, name: str, plugins: str, strategy: str, model: str = "smollm2-135m-instruct",
           scale: float = 1.0, plugin_name: str | None = None, marker: Path | None = None) -> Path:
    if plugin_name:
        template = MARKER_PLUGIN if marker else PLUGIN
        (tmp_path / "plug.py").write_text(template.format(name=plugin_name, scale=scale, marker=str(marker)))
    path = tmp_path / name
    path.write_text(textwrap.dedent(PIPE.format(model=model, plugins=plugins, strategy=strategy)))
    return path


def _marker_pipeline(tmp_path: Path, strategy: str, **kw) -> tuple[Path, Path]:
    marker = tmp_path / "plugin-ran"
    return _write(tmp_path, "p.yaml", "plug.py", strategy, plugin_name=strategy, marker=marker, **kw), marker


# --- opt-in: without the flag no plugin code runs ----------------------------------------------------

def test_validate_without_the_flag_reads_the_plugin_and_never_runs_it(tmp_path, capsys):
    path, marker = _marker_pipeline(tmp_path, "marker_v1")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert not marker.exists()
    assert not any(m.startswith("workbench_plugin_plug_") for m in sys.modules)
    assert "plugins not loaded (read, not run; `workbench run` refuses them without --allow-plugins" in out
    assert "  plug.py: registers merge strategy marker_v1" in out
    assert "  stages.merged.strategy: merge strategy 'marker_v1': registered by plug.py (read)" in out


def test_run_without_the_flag_exits_2_naming_the_file_and_the_flag(tmp_path, capsys):
    path, marker = _marker_pipeline(tmp_path, "marker_v2")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str((tmp_path / "plug.py").resolve()) in err
    assert "--allow-plugins" in err and "WORKBENCH_ALLOW_PLUGINS=1" in err
    assert not marker.exists() and not out.exists()


def test_the_python_api_gates_pipeline_plugins_too(tmp_path):
    from workbench.stages.run import run

    path, marker = _marker_pipeline(tmp_path, "marker_v3")
    with pytest.raises(PluginsNotAllowedError, match="--allow-plugins"):
        run(path, tmp_path / "run", progress=False)
    assert load_pipeline(path).plugin_reads and not marker.exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_with_the_flag_or_the_env_switch_the_plugin_is_imported(tmp_path, capsys, monkeypatch, how):
    path, marker = _marker_pipeline(tmp_path, f"marker_{how}")
    if how == "env":
        monkeypatch.setenv("WORKBENCH_ALLOW_PLUGINS", "1")
    assert main(["validate", str(path), *(["--allow-plugins"] if how == "flag" else [])]) == 0
    assert marker.exists()
    assert f"plugin imported: {(tmp_path / 'plug.py').resolve()}: registers merge strategy marker_{how}" \
        in capsys.readouterr().out


def test_a_strategy_registered_in_ones_own_code_needs_no_flag(tmp_path):
    from workbench.merges import register_merge

    @register_merge("own_script_strategy")
    def own(factors, weights, params, ctx):
        return factors[0]

    pipe = load_pipeline(_write(tmp_path, "p.yaml", "", "own_script_strategy"))
    assert pipe.task("merged").params["strategy"] == "own_script_strategy" and not pipe.plugin_reads


# --- names, keys and errors --------------------------------------------------------------------------

def test_plugin_strategy_validates_and_is_in_the_merge_key_only(tmp_path):
    pipe = load_pipeline(_write(tmp_path, "p.yaml", "plug.py", "pick_first_v1", plugin_name="pick_first_v1"),
                         allow_plugins=True)
    plugin = str((tmp_path / "plug.py").resolve())
    assert plugin in pipe.task("merged").files
    assert plugin not in pipe.task("a").files and plugin not in pipe.task("b").files
    assert pipe.provides == {"merge strategy": {"pick_first_v1": plugin}}
    again = load_pipeline(tmp_path / "p.yaml", allow_plugins=True)  # same content: imported once, not twice
    assert again.task("merged").digest == pipe.task("merged").digest
    # read without running it, the plan is the same: `validate --out` shows the hits `run --allow-plugins` gets
    read = load_pipeline(tmp_path / "p.yaml", allow_plugins=False)
    assert read.provides == pipe.provides and read.task("merged").digest == pipe.task("merged").digest


def test_editing_the_plugin_changes_only_the_merge_key(tmp_path):
    from workbench.graph.scheduler import schedule
    from workbench.graph.store import compute_keys

    pipe = load_pipeline(_write(tmp_path, "p.yaml", "plug.py", "pick_first_v2", plugin_name="pick_first_v2"),
                         allow_plugins=True)
    groups = schedule(pipe.tasks())
    before = {t.name: k for t, k in compute_keys(groups).items()}
    plugin = tmp_path / "plug.py"
    plugin.write_text(plugin.read_text().replace("* 1.0", "* 0.5"))  # what a rerun after an edit sees
    after = {t.name: k for t, k in compute_keys(groups).items()}
    assert sorted(n for n in before if before[n] != after[n]) == ["merged"]


@pytest.mark.parametrize("allow", [True, False])
def test_missing_plugin_is_a_located_error(tmp_path, allow):
    path = _write(tmp_path, "p.yaml", "nope.py", "concat")
    with pytest.raises(PipelineError) as err:
        load_pipeline(path, allow_plugins=allow)
    assert f"{path}:3: plugins.0: plugin file 'nope.py' not found" in str(err.value)


def test_failing_plugin_names_its_error_and_line(tmp_path):
    (tmp_path / "bad.py").write_text("x = 1\ny = 1 / 0\n")
    path = _write(tmp_path, "p.yaml", "bad.py", "concat")
    with pytest.raises(PipelineError) as err:
        load_pipeline(path, allow_plugins=True)
    msg = str(err.value)
    assert "plugins.0: importing plugin 'bad.py' failed: ZeroDivisionError: division by zero (bad.py:2)" in msg
    assert load_pipeline(path).plugin_reads[0].names == {}  # read, not run: nothing raised


def test_plugin_that_is_not_python_is_a_located_error_without_running(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "bad.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef broken(:\n")
    path = _write(tmp_path, "p.yaml", "bad.py", "concat")
    with pytest.raises(PipelineError, match=r"plugins.0: plugin 'bad.py' is not valid Python: .* \(bad.py:2\)"):
        load_pipeline(path)
    assert not marker.exists()


def test_without_the_plugin_the_strategy_is_unknown(tmp_path):
    path = _write(tmp_path, "p.yaml", "", "no_such_strategy")
    with pytest.raises(PipelineError, match="unknown merge strategy 'no_such_strategy'"):
        load_pipeline(path)


def test_a_name_the_plugin_does_not_register_is_still_an_error_when_read(tmp_path):
    path = _write(tmp_path, "p.yaml", "plug.py", "not_in_the_plugin", plugin_name="pick_first_v3")
    with pytest.raises(PipelineError, match="unknown merge strategy 'not_in_the_plugin'.*pick_first_v3"):
        load_pipeline(path)


def test_a_computed_name_is_unchecked_not_an_error(tmp_path, capsys):
    (tmp_path / "plug.py").write_text("from workbench.merges import register_merge\nPREFIX = 'dyn'\n"
                                      "register_merge(PREFIX + '_merge')(lambda f, w, p, c: f[0])\n")
    path = _write(tmp_path, "p.yaml", "plug.py", "dyn_merge")
    pipe = load_pipeline(path)
    (need,) = pipe.plugin_needs
    assert (need.path, need.what, need.name, need.found) == (("stages", "merged", "strategy"), "merge strategy",
                                                              "dyn_merge", False)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cannot tell without running it: line 3: register_merge(...) with a name that is computed" in out
    assert "stages.merged.strategy: merge strategy 'dyn_merge': unchecked (may come from plug.py when it runs)" in out
    # only that kind is unchecked: a misspelt built-in task is still an error
    path.write_text(path.read_text().replace("task: safety", "task: saftey"))
    with pytest.raises(PipelineError, match="unknown task 'saftey'"):
        load_pipeline(path)


def test_pipeline_runs_a_plugin_merge_end_to_end(tmp_path):
    from workbench.adapters.adapter import load_adapter
    from workbench.models.tiny import save_tiny_llama

    tiny = save_tiny_llama(tmp_path / "tiny")
    path, marker = _marker_pipeline(tmp_path, "pick_first_e2e", model=str(tiny), scale=2.0)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--allow-plugins"]) == 0
    (merged_dir,), (a_dir,) = glob.glob(str(out / "stages" / "merged-*")), glob.glob(str(out / "stages" / "a-*"))
    merged, a = load_adapter(merged_dir), load_adapter(a_dir)
    key = a.b_keys()[0]
    assert marker.exists() and merged.tensors[key].equal(a.tensors[key] * 2.0)


# --- the static reader ---------------------------------------------------------------------------------

READER_CASES = {
    "decorator": ("from workbench.merges import register_merge\n@register_merge('m1')\ndef f(*a): pass\n",
                  {"merge strategy": ["m1"]}, []),
    "alias and attribute": ("import workbench\nfrom workbench.merges import register_merge as rm\n"
                            "@rm('m2')\ndef f(*a): pass\n@workbench.register_merge(name='m3')\ndef g(*a): pass\n",
                            {"merge strategy": ["m2", "m3"]}, []),
    "registry add and constant": ("from workbench.merges import MERGES\nNAME = 'm4'\nMERGES.add(NAME, print)\n",
                                  {"merge strategy": ["m4"]}, []),
    "task": ("import workbench\nT = workbench.custom_task('mytask', 'x.jsonl')\nworkbench.register_task(T)\n"
             "workbench.register_task(workbench.custom_task(name='other', path_or_hub_id='y.jsonl'))\n",
             {"task": ["mytask", "other"]}, []),
    "stage kind": ("from workbench import register_stage_kind\nregister_stage_kind('my_kind')\n",
                   {"stage kind": ["my_kind"]}, []),
    "rebound constant": ("from workbench.merges import register_merge\nN = 'a'\nN = 'b'\nregister_merge(N)(print)\n",
                         {}, [("merge strategy", 4)]),
    "exec": ("exec(open('more.py').read())\n", {}, [(None, 1)]),
}


@pytest.mark.parametrize("case", READER_CASES, ids=str)
def test_the_reader_finds_literal_registrations_and_flags_the_rest(tmp_path, case):
    source, names, unresolved = READER_CASES[case]
    plugin = tmp_path / "plug.py"
    plugin.write_text(source)
    read = read_plugin(plugin)
    assert read.names == names
    assert [(u.what, u.line) for u in read.unresolved] == unresolved


def test_a_local_import_makes_every_kind_unchecked(tmp_path):
    (tmp_path / "helper.py").write_text("raise SystemExit('never imported')\n")
    plugin = tmp_path / "plug.py"
    plugin.write_text("import os\nimport helper\n")
    read = read_plugin(plugin)
    assert [(u.what, u.line) for u in read.unresolved] == [(None, 2)]
    assert read.may_register("task") and read.may_register("merge strategy")
