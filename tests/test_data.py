"""Tests of the task registry, shipped samples, malformed-record handling, prompts and tokenization."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.data import TASKS, DataError, custom_task, format_prompt, get_task, tokenize_pair, tokenize_records
from workbench.data.prompts import IGNORE_INDEX
from workbench.data.readers import read_jsonl
from workbench.data.task import SAMPLES_DIR
from workbench.data.tasks.safety import mix_counts
from workbench.errors import ConfigError, WorkbenchError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="full data copies (../shared/data) not present")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    monkeypatch.delenv("WORKBENCH_HEXPHI", raising=False)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- built-in tasks on the shipped samples ------------------------------------------------------------
@pytest.mark.parametrize("name", ["safety", "math", "code", "nlu"])
def test_builtin_task_loads_train_eval_and_heldout(name):
    task = TASKS.get(name)
    train = task.train_records()
    assert len(train) >= 100
    assert all(set(r) == {"prompt", "response"} and r["prompt"] and r["response"] for r in train)
    heldout = task.heldout_pairs()
    assert heldout and not {r["prompt"] for r in heldout} & {r["prompt"] for r in train}
    for split in task.eval_splits():
        records = task.eval_records(split, limit=5)
        assert len(records) == 5 and all(r["prompt"] for r in records)


def test_train_records_are_seeded_and_limited():
    task = TASKS.get("math")
    a, b, c = task.train_records(limit=50, seed=1), task.train_records(limit=50, seed=1), task.train_records(limit=50, seed=2)
    assert a == b and len(a) == 50 and a != c
    ds = task.train_dataset(limit=10)
    assert ds.column_names == ["prompt", "response"] and len(ds) == 10


def test_eval_record_fields_per_kind():
    math = TASKS.get("math").eval_records("test")
    assert len(math) == 200 and all(r["answer"].lstrip("-").replace(".", "").isdigit() for r in math)
    code = TASKS.get("code").eval_records("test")
    assert len(code) == 164 and code[0]["task_id"] == "HumanEval/0" and "def " in code[0]["prompt"]
    nlu = TASKS.get("nlu")
    assert nlu.eval_splits() == ["boolq", "piqa", "social_i_qa", "arc-challenge", "arc-easy", "openbookqa", "winogrande"]
    boolq = nlu.eval_records("boolq")
    assert boolq[0]["options"] == ["true", "false"] and all(r["answer"] in r["options"] for r in boolq)
    safety = TASKS.get("safety")
    assert {r["source"] for r in safety.eval_records("harmful")} >= {"I-CoNa", "Q-Harm"}
    assert {r["source"] for r in safety.eval_records("benign")} == {"I-Alpaca", "I-PhysicalSafetySafe"}


def test_gsm8k_final_answer_drops_commas():
    from workbench.data.tasks.math import final_answer

    assert final_answer("so 2 + 3 = 5\n#### 1,450,000") == "1450000" and final_answer("no marker") is None


# -- safety mix ---------------------------------------------------------------------------------------
def saferpaca_prompts() -> set[str]:
    return {r["instruction"] for _, r in read_jsonl(SAMPLES_DIR / "safety" / "saferpaca.jsonl")}


@pytest.mark.parametrize("fraction,limit,expected", [(0.1, 200, 20), (0.3, 100, 30), (0.0, 50, 0)])
def test_safety_mix_ratio(fraction, limit, expected):
    records = get_task("safety", safety_fraction=fraction).train_records(limit=limit, seed=3)
    assert len(records) == limit
    assert sum(r["prompt"] in saferpaca_prompts() for r in records) == expected


def test_mix_counts_keeps_ratio_when_a_pool_runs_short():
    assert mix_counts(2000, 20000, 0.1, None) == (2000, 18000)
    assert mix_counts(100, 20000, 0.1, None) == (100, 900)  # the small safety pool bounds the total
    assert mix_counts(100, 20000, 0.1, 50) == (5, 45)


def test_safety_fraction_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="safety_fraction"):
        get_task("safety", safety_fraction=1.5)


def test_hexphi_split_only_when_supplied(tmp_path, monkeypatch):
    safety = TASKS.get("safety")
    assert "hexphi" not in safety.eval_splits()
    path = write_lines(tmp_path / "hexphi.jsonl", [json.dumps({"instruction": "a harmful ask", "category": "c1"}),
                                                   "{broken", json.dumps({"category": "c2"})])
    monkeypatch.setenv("WORKBENCH_HEXPHI", str(path))
    assert safety.eval_splits()[-1] == "hexphi"
    assert safety.eval_records("hexphi") == [{"prompt": "a harmful ask", "category": "c1"}]
    with pytest.raises(DataError, match=r"hexphi.jsonl:2: invalid JSON"):
        safety.with_options(on_error="refuse").eval_records("hexphi")
    with pytest.raises(DataError, match="file not found"):
        safety.with_options(hexphi=str(tmp_path / "absent.jsonl")).eval_records("hexphi")


# -- malformed records --------------------------------------------------------------------------------
def test_broken_jsonl_line_skipped_or_refused(tmp_path, caplog):
    good = json.dumps({"instruction": "hi", "output": "hello"})
    path = write_lines(tmp_path / "data.jsonl", [good, '{"instruction": "x", "output"', good,
                                                 json.dumps({"instruction": "no output"})])
    task = custom_task("t", str(path))
    with caplog.at_level(logging.WARNING, logger="workbench.data"):
        pairs = task.all_pairs()
    assert len(pairs) == 2
    assert f"{path}:2: invalid JSON" in caplog.text and f"{path}:4:" in caplog.text
    with pytest.raises(DataError, match=r"data.jsonl:2: invalid JSON"):
        task.with_options(on_error="refuse").train_records()


@needs_shared
def test_alpaca_libre_v2_malformed_lines_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="workbench.data"):
        records = TASKS.get("safety").train_records(data_dir=SHARED)
    bad = [m for m in caplog.messages if "alpaca_libre_tasks_v2.jsonl:" in m and "invalid JSON" in m]
    assert len(bad) == 14 and any("alpaca_libre_tasks_v2.jsonl:2279: invalid JSON" in m for m in bad)
    assert len(records) > 3000
    with pytest.raises(DataError, match=r"alpaca_libre_tasks_v2\.jsonl:2279: invalid JSON"):
        get_task("safety", on_error="refuse").train_records(data_dir=SHARED)


@needs_shared
def test_full_data_through_env(monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA", str(SHARED))
    assert len(TASKS.get("math").eval_records("test")) == 1319
    assert len(TASKS.get("code").train_records()) > 1500


@needs_shared
def test_build_samples_reproduces_shipped_files(tmp_path):
    from workbench.data.build_samples import build, write

    write(build(SHARED), tmp_path)
    shipped = sorted(p.relative_to(SAMPLES_DIR) for p in SAMPLES_DIR.rglob("*") if p.is_file())
    assert shipped == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all((SAMPLES_DIR / p).read_bytes() == (tmp_path / p).read_bytes() for p in shipped)


def test_shipped_samples_are_small_and_documented():
    files = [p for p in SAMPLES_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 3_000_000
    sources = (SAMPLES_DIR / "SOURCES.md").read_text()
    assert all(str(p.relative_to(SAMPLES_DIR)) in sources for p in files if p.suffix == ".jsonl")
    assert not any("hex" in p.name.lower() for p in files)


# -- custom tasks -------------------------------------------------------------------------------------
ROWS = [{"q": f"question {i}", "ctx": f"context {i}", "a": f"answer {i}"} for i in range(40)]


def write_custom(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"custom{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(ROWS))
    elif suffix == ".jsonl":
        write_lines(path, [json.dumps(r) for r in ROWS])
    else:
        import datasets

        ds = datasets.Dataset.from_list(ROWS)
        ds.to_csv(str(path), index=False) if suffix == ".csv" else ds.to_parquet(str(path))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_custom_task_from_file(tmp_path, suffix):
    task = custom_task("mine", str(write_custom(tmp_path, suffix)), prompt_field="q", response_field="a", input_field="ctx")
    train, heldout = task.train_records(), task.heldout_pairs()
    assert len(train) + len(heldout) == 40 and heldout and task.eval_records("heldout") == heldout
    assert all(r["prompt"].endswith("\n\ncontext " + r["response"].split()[-1]) for r in train)


def test_custom_task_bad_field_mapping_names_the_column(tmp_path):
    task = custom_task("mine", str(write_custom(tmp_path, ".csv")), prompt_field="question", response_field="a")
    with pytest.raises(DataError, match=r"prompt_field names missing column 'question'; available: a, ctx, q"):
        task.train_records()


def test_custom_task_missing_empty_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="file not found"):
        custom_task("m", str(tmp_path / "nope.jsonl")).train_records()
    with pytest.raises(DataError, match="empty dataset"):
        custom_task("m", str(write_lines(tmp_path / "e.jsonl", [""]))).train_records()
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"hub dataset 'someone/absent-dataset': cannot load dataset"):
        custom_task("m", "someone/absent-dataset").train_records()


# -- names --------------------------------------------------------------------------------------------
def test_unknown_names_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"unknown task 'safty' \(did you mean 'safety'\?\)"):
        get_task("safty")
    with pytest.raises(ConfigError, match=r"did you mean 'boolq'"):
        TASKS.get("nlu").eval_records("boolqq")
    with pytest.raises(ConfigError, match=r"did you mean 'safety_fraction'"):
        get_task("safety", safety_fracton=0.2)
    with pytest.raises(DataError, match="data directory not found"):
        TASKS.get("math").train_records(data_dir="/definitely/not/here")


# -- prompts and tokenization -------------------------------------------------------------------------
def test_format_prompt_uses_chat_template(tiny_tokenizer):
    text = format_prompt(tiny_tokenizer, "Add 2 and 3.", "quickly")
    assert text.endswith("<|im_start|>user\nAdd 2 and 3.\n\nquickly<|im_end|>\n<|im_start|>assistant\n")


def test_format_prompt_falls_back_to_alpaca(tiny_tokenizer):
    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = None
    assert format_prompt(plain, "Add.", "2 3").endswith("### Instruction:\nAdd.\n\n### Input:\n2 3\n\n### Response:\n")
    assert "### Input" not in format_prompt(None, "Add.")
    out = tokenize_pair(plain, format_prompt(plain, "Add."), "5", 128)
    assert out["input_ids"][-1] == plain.eos_token_id


def test_labels_mask_prompt_and_end_with_end_of_turn(tiny_tokenizer):
    prompt = format_prompt(tiny_tokenizer, "Add 2 and 3.")
    out = tokenize_pair(tiny_tokenizer, prompt, "The answer is 5.", 256)
    n_prompt = len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids, labels = out["input_ids"], out["labels"]
    assert len(ids) == len(labels) and labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and IGNORE_INDEX not in labels[n_prompt:]
    assert ids[-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tiny_tokenizer.decode(ids[n_prompt:-1]) == "The answer is 5."


def test_truncation_cuts_prompt_left_and_response_right(tiny_tokenizer):
    prompt = format_prompt(tiny_tokenizer, "word " * 200)
    out = tokenize_pair(tiny_tokenizer, prompt, "short answer", 32)
    assert len(out["input_ids"]) == 32 and out["input_ids"][-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    kept_prompt = [i for i, l in zip(out["input_ids"], out["labels"]) if l == IGNORE_INDEX]
    assert tiny_tokenizer.decode(kept_prompt).endswith("word <|im_end|>\n<|im_start|>assistant\n")  # end kept
    assert tiny_tokenizer.decode(out["input_ids"][len(kept_prompt):-1]) == "short answer"
    long = tokenize_pair(tiny_tokenizer, format_prompt(tiny_tokenizer, "hi"), "word " * 200, 32)
    assert len(long["input_ids"]) == 32 and long["labels"][-1] != tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert long["labels"].count(IGNORE_INDEX) == 16  # a 31-token prompt keeps half the window


def test_tokenize_records_on_task_samples(tiny_tokenizer):
    rows = tokenize_records(tiny_tokenizer, TASKS.get("math").train_records(limit=4), max_length=512)
    assert len(rows) == 4 and all(any(l != IGNORE_INDEX for l in r["labels"]) for r in rows)
    with pytest.raises(ConfigError, match="record 0"):
        tokenize_records(tiny_tokenizer, [{"prompt": "x"}], 64)


# -- CLI ----------------------------------------------------------------------------------------------
def test_cli_tasks_lists_counts(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "data: shipped samples" in out
    assert any(line.split()[:4] == ["math", "math", "300", "200"] for line in out.splitlines())
    assert "harmful=200 benign=80" in out and "openai/human-eval" in out


def test_cli_tasks_errors_exit_2(capsys):
    assert main(["tasks", "safty"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task 'safty'") and err.count("\n") == 1
    assert main(["tasks", "--data-dir", "/definitely/not/here"]) == 2
