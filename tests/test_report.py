"""The report: JSON schema, Markdown, self-contained HTML with every figure and table, CLI, LoRI case."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest
import torch

from workbench.analytics import build_report
from workbench.cli import main
from workbench.errors import ConfigError, FileFormatError, MismatchError
from workbench.keys import file_key, module_key
from workbench.testing import llama_shapes, random_adapter

SHAPES = llama_shapes(layers=2, hidden=256, intermediate=512, kv_dim=64)
R = 8


def lori_adapter(a_seed: int, b_seed: int, name: str, zero_b: bool = False):
    """LoRI-style: A a frozen random projection drawn from ``a_seed``; B 'trained' (random from b_seed)."""
    a = random_adapter(SHAPES, rank=R, seed=a_seed, name=name)
    b = random_adapter(SHAPES, rank=R, seed=b_seed)
    for k in a.tensors:
        if k.endswith("lora_B.weight"):
            a.tensors[k] = torch.zeros_like(b.tensors[k]) if zero_b else b.tensors[k]
    return a


def masks_for(adapter, seed: int, density: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(t.shape, generator=g) < density for k, t in adapter.tensors.items() if k.endswith("lora_B.weight")}


FORGETTING = {"tasks": ["nlu", "math", "code"], "stages": ["nlu", "nlu->math", "nlu->math->code"],
              "matrix": [[0.8, None, None], [0.7, 0.5, None], [0.65, 0.45, 0.3]], "metric": "accuracy"}


@pytest.fixture(scope="module")
def lori_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    adapters = [lori_adapter(1, 10, "nlu"), lori_adapter(2, 20, "math"), lori_adapter(1, 30, "code")]
    masks = [masks_for(a, i) for i, a in enumerate(adapters)]
    report = build_report(adapters, masks=masks, forgetting=FORGETTING, out_dir=out)
    return out, report, adapters, masks


def by_pair(report, a, b):
    return next(p for p in report["pairs"] if (p["a"], p["b"]) == (a, b))


def test_lori_a_subspaces_random_vs_same_seed(lori_report):
    _, report, _, _ = lori_report
    diff = by_pair(report, "nlu", "math")["summary"]["means"]
    same = by_pair(report, "nlu", "code")["summary"]["means"]
    assert same["a_mean_sq_cos"] == pytest.approx(1.0, abs=1e-9)
    assert 0.7 < diff["a_mean_sq_cos"] / diff["a_random_baseline"] < 1.4  # near r/d
    assert diff["b_mean_sq_cos"] == pytest.approx(diff["b_random_baseline"], rel=0.4)
    q = by_pair(report, "nlu", "math")["modules"]["model.layers.0.self_attn.q_proj"]["a_subspace"]
    assert q["random_baseline"] == pytest.approx(R / 256)


def test_report_json_schema(lori_report):
    out, report, adapters, masks = lori_report
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert [a["name"] for a in on_disk["adapters"]] == ["nlu", "math", "code"]
    assert [(p["a"], p["b"]) for p in on_disk["pairs"]] == [("nlu", "math"), ("nlu", "code"), ("math", "code")]
    pair = on_disk["pairs"][0]
    assert set(pair["modules"]) == set(SHAPES) == {module_key(k) for k in adapters[0].b_keys()}
    mod = pair["modules"]["model.layers.1.mlp.down_proj"]
    for side in ("a_subspace", "b_subspace"):
        assert {"mean_sq_cos", "max_cos", "random_baseline", "cosines"} <= set(mod[side])
        assert len(mod[side]["cosines"]) == R
    for key in ("delta_cosine", "interference_ab", "interference_ba", "cross_energy_ab", "mask_jaccard"):
        assert isinstance(mod[key], float), key
    ma, mb = masks[0][file_key("model.layers.1.mlp.down_proj", "B")], masks[1][file_key("model.layers.1.mlp.down_proj", "B")]
    assert mod["mask_overlap"]["overlap"] == int((ma & mb).sum())
    assert mod["mask_jaccard"] == pytest.approx(int((ma & mb).sum()) / int((ma | mb).sum()))
    s = pair["summary"]
    assert s["n_modules"] == len(SHAPES) and s["n_degenerate"] == 0
    assert set(s["per_layer"]) == {"0", "1"} and "q_proj" in s["per_projection"]
    assert len(s["top_modules"]) == 10 and s["top_modules"][0]["interference"] >= s["top_modules"][-1]["interference"]
    assert on_disk["matrices"]["names"] == ["nlu", "math", "code"]
    assert on_disk["matrices"]["a_mean_sq_cos"][0][2] == pytest.approx(1.0)
    assert on_disk["grid"]["layers"] == [0, 1] and len(on_disk["grid"]["interference"]) == 2
    spec = on_disk["adapters"][0]["modules"]["model.layers.0.self_attn.q_proj"]
    assert len(spec["singular_values"]) == R and spec["numerical_rank"] == R
    assert on_disk["forgetting"]["matrix"][2] == [0.65, 0.45, 0.3]


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.external, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a)
        if tag == "table":
            self.tables.append(a.get("id"))
        for key in ("src", "href"):
            if key in a and not a[key].startswith(("data:", "#")):
                self.external.append(a[key])
        if tag in ("link", "script", "iframe"):
            self.external.append(tag)


def test_html_is_self_contained_with_every_image_and_table(lori_report):
    out, report, _, _ = lori_report
    parser = PageParser()
    parser.feed((out / "report.html").read_text())
    images = report["files"]["images"]
    assert set(images) == {"pair_heatmaps.png", "layer_projection.png", "layer_curves.png", "spectrum.png", "forgetting.png"}
    embedded = {img["data-file"]: img["src"] for img in parser.images}
    assert set(embedded) == set(images)
    for name in images:
        prefix = "data:image/png;base64,"
        assert embedded[name].startswith(prefix)
        assert base64.b64decode(embedded[name][len(prefix):]) == (out / name).read_bytes()
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(parser.tables) == {f"table-{t}" for t in ("adapters", "headline", "top_modules", "per_projection", "forgetting")}
    assert parser.external == []


def test_markdown_has_headline_and_figures(lori_report):
    out, _, _, _ = lori_report
    md = (out / "report.md").read_text()
    assert "## Adapter pairs" in md and "| nlu / code |" in md and "![" in md and "(forgetting.png)" in md
    row = next(line for line in md.splitlines() if line.startswith("| nlu / code |"))
    assert "| 1 (0.029" in row  # same A seed: mean cos² 1 next to the random baseline (mean of r/d)


def test_fresh_lori_is_degenerate(tmp_path):
    a, b = lori_adapter(1, 10, "trained"), lori_adapter(2, 0, "fresh", zero_b=True)
    report = build_report([a, b], out_dir=tmp_path)
    s = report["pairs"][0]["summary"]
    assert s["n_degenerate"] == len(SHAPES) and s["means"]["b_mean_sq_cos"] is None
    assert s["means"]["delta_cosine"] is None and s["means"]["a_mean_sq_cos"] is not None
    assert any("all zeros" in r for r in s["degenerate_reasons"])
    assert report["adapters"][1]["summary"]["n_degenerate"] == len(SHAPES)
    assert "Degenerate modules" in (tmp_path / "report.md").read_text()


def test_single_adapter_report(tmp_path):
    report = build_report([lori_adapter(1, 10, "solo")], out_dir=tmp_path)
    assert report["pairs"] == [] and report["files"]["images"] == ["spectrum.png"]


def test_bad_inputs(tmp_path):
    a, b = lori_adapter(1, 10, "a"), lori_adapter(2, 20, "b")
    with pytest.raises(ConfigError, match="2 masks for 3 adapters|1 masks for 2"):
        build_report([a, b], masks=[masks_for(a, 0)], out_dir=tmp_path)
    bad = masks_for(a, 0)
    bad[next(iter(bad))] = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(MismatchError, match="shape"):
        build_report([a, b], masks=[bad, None], out_dir=tmp_path)
    with pytest.raises(FileFormatError, match=r"matrix\[1\]"):
        build_report([a, b], forgetting=dict(FORGETTING, matrix=[[1, 2, 3], [1, 2]] + [[1, 2, 3]]), out_dir=tmp_path)
    other = random_adapter(llama_shapes(layers=2, hidden=128, intermediate=512, kv_dim=64), rank=R, name="c")
    with pytest.raises(MismatchError, match="differ"):
        build_report([a, other], out_dir=tmp_path)
    with pytest.raises(ConfigError, match="out_dir"):
        build_report([a, b])


def test_cli_report(tmp_path, capsys):
    dirs = []
    for i, ad in enumerate([lori_adapter(1, 10, "x"), lori_adapter(2, 20, "y")]):
        dirs.append(str(ad.save(tmp_path / f"ad{i}")))
    forgetting = tmp_path / "f.json"
    forgetting.write_text(json.dumps(FORGETTING))
    out = tmp_path / "out"
    assert main(["report", *dirs, "--forgetting", str(forgetting), "--out", str(out)]) == 0
    assert "x / y" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["forgetting"]["metric"] == "accuracy"
    forgetting.write_text("{not json")
    assert main(["report", *dirs, "--forgetting", str(forgetting), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "f.json: invalid JSON" in err


def test_example_runs(tmp_path):
    import runpy
    from pathlib import Path

    example = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "interference_report.py"))
    report = example["main"](str(tmp_path))
    assert by_pair(report, "nlu", "code")["summary"]["means"]["a_mean_sq_cos"] == pytest.approx(1.0)
    assert (tmp_path / "report.html").is_file()


def test_grid_uses_llama_projection_order(lori_report):
    _, report, _, _ = lori_report
    assert report["grid"]["projections"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_cli_with_mask_files(tmp_path, capsys):
    mask_file = pytest.importorskip("workbench.masking.file")
    from workbench.masking.mask import Mask

    adapters = [lori_adapter(1, 10, "x"), lori_adapter(2, 20, "y")]
    dirs = [str(a.save(tmp_path / a.name)) for a in adapters]
    masks = [masks_for(a, i) for i, a in enumerate(adapters)]
    mask_file.save_mask(tmp_path / "x.mask.safetensors", Mask(masks[0]))
    out = tmp_path / "out"
    assert main(["report", *dirs, "--masks", str(tmp_path / "x.mask.safetensors"), "-", "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["masks_given"] is True
    mask_file.save_mask(tmp_path / "y.mask.safetensors", Mask(masks[1]))
    report = build_report(dirs, masks=[tmp_path / "x.mask.safetensors", tmp_path / "y.mask.safetensors"], out_dir=out)
    key = "model.layers.0.self_attn.q_proj"
    ma, mb = masks[0][file_key(key, "B")], masks[1][file_key(key, "B")]
    assert report["pairs"][0]["modules"][key]["mask_overlap"]["overlap"] == int((ma & mb).sum())
    assert main(["report", *dirs, "--masks", str(tmp_path / "x.mask.safetensors"), "--out", str(out)]) == 2
    assert "1 masks for 2 adapters" in capsys.readouterr().err
