"""Stage kinds are descriptions: the schema, checks, planner, summary and executors are built from them, and
a plugin file adds a kind with ``workbench.register_stage_kind`` the way it adds a merge strategy."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from workbench.pipeline import PipelineError, load_pipeline
from workbench.pipeline import schema
from workbench.pipeline.kinds import stage_kinds

# A plugin stage kind: the largest lora_B norms of an adapter.
PLUGIN = '''\
import json
from pathlib import Path

import workbench


class NormsSettings(workbench.StageSettings):
    adapter: str
    top: int = 3


def _headline(metrics):
    return f"largest B norm {{metrics['largest']:.4f}}"


@workbench.register_stage_kind("{kind}", NormsSettings, refs={{"adapter": ("train", "continue", "merge")}},
                               summary=_headline)
def run_norms(task, inputs, out_dir, context):
    """The largest lora_B norms of an adapter."""
    adapter = workbench.load_adapter(inputs[task.input("adapter").name].artifacts["adapter"])
    norms = sorted(((float(adapter.tensors[k].float().norm()), k) for k in adapter.b_keys()), reverse=True)
    top = norms[: task.params["top"]]
    out = Path(out_dir) / "norms.json"
    out.write_text(json.dumps(top))
    return workbench.StageResult(artifacts={{"norms": out}}, metrics={{"largest": top[0][0], "top": len(top)}})
'''

PIPE = """\
    base: {{model: {model}}}
    defaults: {{steps: 2, batch_size: 2, max_length: 32, max_samples: 4, rank: 2, alpha: 4, lr: 0.05}}
    plugins: [norms.py]
    stages:
      a: {{kind: train, task: safety, method: lora}}
      n: {{kind: {kind}, adapter: {ref}, {extra}}}
"""


def _write(tmp_path: Path, kind: str, model: str = "smollm2-135m-instruct", ref: str = "a",
           extra: str = "top: 2") -> Path:
    (tmp_path / "norms.py").write_text(PLUGIN.format(kind=kind))
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(PIPE.format(model=model, kind=kind, ref=ref, extra=extra)))
    return path


def test_builtin_kinds_come_from_the_table():
    from workbench.stages.registry import BUILTIN

    assert {k.name for k in BUILTIN} <= set(schema.KINDS)
    for k in BUILTIN:
        assert schema.KIND_MODELS[k.name] is k.model and schema.REF_FIELDS[k.name] == dict(k.refs)


def test_kind_description_modules_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, workbench.stages.registry, workbench.pipeline.schema; "
            "print([m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'transformers', 'peft'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plugin_kind_validates_with_located_errors(tmp_path):
    path = _write(tmp_path, "norms_v1", extra="topp: 2")
    with pytest.raises(PipelineError) as err:
        load_pipeline(path, allow_plugins=True)
    assert f"{path}:6: stages.n.topp: unknown field 'topp' (did you mean 'top'?)" in str(err.value)
    path = _write(tmp_path, "norms_v1", ref="nowhere")
    with pytest.raises(PipelineError, match=r"stages.n.adapter: unknown stage 'nowhere'"):
        load_pipeline(path, allow_plugins=True)


def test_plugin_kind_resolves_every_field_and_keys_on_its_file(tmp_path):
    pipe = load_pipeline(_write(tmp_path, "norms_v2"), allow_plugins=True)
    task = pipe.task("n")
    assert task.kind == "norms_v2" and task.params["top"] == 2 and task.input("adapter") is pipe.task("a")
    plugin = str((tmp_path / "norms.py").resolve())
    assert plugin in task.files and plugin not in pipe.task("a").files
    assert pipe.provides["stage kind"] == {"norms_v2": plugin}


def test_plugin_kind_not_allowed_is_read_and_left_unchecked(tmp_path):
    path = _write(tmp_path, "norms_v3", extra="anything: 1")  # a field only the plugin can check
    pipe = load_pipeline(path, allow_plugins=False)
    assert "norms_v3" not in stage_kinds()  # nothing was run
    (need,) = [n for n in pipe.plugin_needs if n.what == "stage kind"]
    assert need.name == "norms_v3" and need.found and need.path == ("stages", "n", "kind")


def test_plugin_kind_runs_end_to_end_on_the_tiny_model(tmp_path):
    from workbench.adapters.adapter import load_adapter
    from workbench.models.tiny import save_tiny_llama
    from workbench.stages.run import run

    tiny = save_tiny_llama(tmp_path / "tiny")
    results = run(_write(tmp_path, "norms_e2e", model=str(tiny)), tmp_path / "run", progress=False,
                  allow_plugins=True)
    a = load_adapter(results["a"].artifacts["adapter"])
    largest = max(float(a.tensors[k].float().norm()) for k in a.b_keys())
    assert results["n"].metrics["top"] == 2 and results["n"].metrics["largest"] == pytest.approx(largest)
    assert len(json.loads(Path(results["n"].artifacts["norms"]).read_text())) == 2
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"| n | norms_e2e | largest B norm {largest:.4f} |" in summary
