"""Rebuild the shipped data subsets in ``workbench/data/samples/`` from full copies of the sources.

Run from the repository root::

    python -m workbench.data.build_samples --source ../shared/data

Every subset is a seeded choice (``random.Random(0)``) kept in source-file order, written as JSON lines
(UTF-8, original field names). Train-side and held-out-side counts follow the hash split of
:func:`workbench.data.selection.is_heldout`, so the shipped files keep that split. ``SOURCES.md`` is
written alongside with the sources, licences and the counts actually written. HEx-PHI is never shipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.data.readers import read_records
from workbench.data.selection import is_heldout, join_instruction, seeded_subset
from workbench.data.tasks.safety import BENIGN, GENERAL_FULL, HARMFUL, SAFETY_FULL
from workbench.data.task import SAMPLES_DIR
from workbench.data.tasks.common import is_usable
from workbench.io.atomic import atomic_write_text

SEED = 0
NLU_TRAIN = ("boolq", "social_i_qa", "arc-challenge", "arc-easy", "openbookqa")
NLU_TEST = ("boolq", "piqa", "social_i_qa", "arc-challenge", "arc-easy", "openbookqa", "winogrande")
COUNTS = dict(saferpaca=(150, 30), alpaca_libre=(300, 40), eval_prompts=40, gsm8k_train=300, gsm8k_test=200,
              codealpaca=(300, 40), nlu_train=150, nlu_test=100)
SOURCES = {
    "saferpaca": ("vinid/safety-tuned-llamas", "36a4b8d", "data/training/safety_only_data_Instructions.json", "CC BY-NC 4.0"),
    "safety-eval": ("vinid/safety-tuned-llamas", "36a4b8d", "data/evaluation/*.json", "CC BY-NC 4.0"),
    "alpaca-libre": ("mobarski/alpaca-libre", "9024e0c", "data/output/work/alpaca_libre_tasks_v{1,2,3}.jsonl", "CC0/MIT"),
    "gsm8k": ("openai/grade-school-math", "3101c7d", "grade_school_math/data/{train,test}.jsonl", "MIT"),
    "codealpaca": ("sahil280114/codealpaca", "2f78ddc", "data/code_alpaca_2k.json", "CC BY-NC 4.0 (data)"),
    "humaneval": ("openai/human-eval", "6d43fb9", "data/HumanEval.jsonl.gz", "MIT"),
    "nlu": ("juzhengz/LoRI (= AGI-Edgerunners/LLM-Adapters @ 8166572)", "-", "tasks/<subtask>/{train,test}.json",
            "ODC-By (LLM-Adapters DATA_LICENSE); PIQA upstream AFL-3.0"),
}


def raw(path: Path) -> list[dict]:
    """Records of a source file (malformed lines skipped with a warning, as the loaders do)."""
    return [record for _, record in read_records(path, "skip")]


def usable(path: Path) -> list[dict]:
    """Alpaca-schema records of a source file that the loaders would keep (non-blank instruction/output)."""
    return [record for record in raw(path) if is_usable(record)]


def split_pick(records: list[dict], counts: tuple[int, int]) -> list[dict]:
    """``counts[0]`` train-side and ``counts[1]`` held-out-side records, seeded, in source order."""
    def side(held):
        return [r for r in records if is_heldout(join_instruction(r["instruction"], r.get("input") or "")) == held]
    chosen = {id(r) for r in seeded_subset(side(False), counts[0], SEED) + seeded_subset(side(True), counts[1], SEED)}
    return [r for r in records if id(r) in chosen]


def eval_prompts(src: Path, stems: tuple[str, ...]) -> list[dict]:
    """``COUNTS['eval_prompts']`` instructions from each safety-eval file, tagged with the file stem."""
    out = []
    for stem in stems:
        items = [r["instruction"] for _, r in read_records(src / f"safety-eval/{stem}.json", "skip", "instructions")]
        out += [{"instruction": text, "source": stem} for text in seeded_subset(items, COUNTS["eval_prompts"], SEED)]
    return out


def build(src: Path) -> dict[str, list[dict]]:
    """Relative sample path -> records to write."""
    general = [r for rel in GENERAL_FULL for r in usable(src / rel) if r.get("status") == "ok"]
    files = {
        "safety/saferpaca.jsonl": split_pick(usable(src / SAFETY_FULL), COUNTS["saferpaca"]),
        "safety/alpaca_libre.jsonl": split_pick(general, COUNTS["alpaca_libre"]),
        "safety/eval_harmful.jsonl": eval_prompts(src, HARMFUL),
        "safety/eval_benign.jsonl": eval_prompts(src, BENIGN),
        "math/train.jsonl": seeded_subset(raw(src / "gsm8k/train.jsonl"), COUNTS["gsm8k_train"], SEED),
        "math/test.jsonl": seeded_subset(raw(src / "gsm8k/test.jsonl"), COUNTS["gsm8k_test"], SEED),
        "code/codealpaca.jsonl": split_pick(usable(src / "codealpaca/code_alpaca_2k.json"), COUNTS["codealpaca"]),
        "code/humaneval.jsonl": raw(src / "humaneval/HumanEval.jsonl"),
    }
    for name in NLU_TRAIN:
        files[f"nlu/{name}/train.jsonl"] = seeded_subset(raw(src / name / "train.json"), COUNTS["nlu_train"], SEED)
    for name in NLU_TEST:
        files[f"nlu/{name}/test.jsonl"] = seeded_subset(raw(src / name / "test.json"), COUNTS["nlu_test"], SEED)
    return files


def sources_md(files: dict[str, list[dict]]) -> str:
    """The text of ``SOURCES.md``: sources, licences, selection rule and the counts written."""
    lines = ["# Shipped data subsets", "", "Built by `python -m workbench.data.build_samples --source ../shared/data`",
             "(deterministic: rerunning it rewrites the same bytes). Each file is JSON lines with the source's",
             "field names. Selection: `random.Random(0)` picks the records, kept in source-file order; for",
             "`safety/saferpaca`, `safety/alpaca_libre` and `code/codealpaca` the picks are made separately on each",
             "side of the 10 % hash split (`workbench.data.selection.is_heldout`), so the loaders' train/held-out",
             "split of these files matches the full data. alpaca-libre keeps `status == \"ok\"` only; its v2 file",
             "has 14 invalid JSON lines upstream, skipped. Records with an empty instruction or output are left out",
             "(as the loaders do). safety-eval subsets take up to 40 prompts per file",
             "(field `source` = file stem). HEx-PHI is not shipped (its licence forbids redistribution).", "",
             "| source | repository | commit | path | licence |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {r} | {c} | `{p}` | {lic} |" for k, (r, c, p, lic) in SOURCES.items()]
    lines += ["", "| file | records |", "|---|---|"]
    lines += [f"| `{rel}` | {len(records)} |" for rel, records in files.items()]
    return "\n".join(lines) + "\n"


def write(files: dict[str, list[dict]], out: Path) -> None:
    """Write every subset and ``SOURCES.md`` under ``out`` (atomically, file by file)."""
    for rel, records in files.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write_text(out / rel, text)
    atomic_write_text(out / "SOURCES.md", sources_md(files))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``--source`` (full copies) and ``--out`` (default: the package samples)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR)
    args = parser.parse_args(argv)
    files = build(args.source)
    write(files, args.out)
    print(f"wrote {sum(len(v) for v in files.values())} records in {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
