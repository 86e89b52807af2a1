"""The ``nlu`` task: eight commonsense-reasoning tasks in the LLM-Adapters format.

Hu et al., *LLM-Adapters* (EMNLP 2023, https://arxiv.org/abs/2304.01933) put BoolQ, PIQA, SIQA,
ARC-c/e, OpenBookQA, WinoGrande and HellaSwag in one schema: the options and an ``Answer format:
a/b/c`` line are inside ``instruction``, ``output`` is ``"the correct answer is <label>"`` and ``answer``
is the label. LoRI trains on their ``commonsense_170k`` mix, which is not available offline; here the
train splits that exist (boolq, social_i_qa, arc-challenge, arc-easy, openbookqa, plus any
``<subtask>/train.json`` a user adds) are the substitute. HellaSwag is used when a user puts
``hellaswag/{train,test}.json`` in the data directory.

Eval splits: one per subtask that has a test file, records ``{"prompt", "answer", "options"}``. With
``template="lori_official"`` training prompts are the official Alpaca text (``get_commonsense``, 20-space
indentation) and evaluation prompts the official test-file text (``get_default``, 16 spaces, no input
section): the official code trains and evaluates NLU with these two different texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain, zip_longest
from pathlib import Path

from workbench.data.readers import read_records, report_bad, require_fields
from workbench.data.selection import join_instruction, seeded_subset
from workbench.data.task import SAMPLES_DIR, pair, resolve_data_dir
from workbench.data.tasks.common import TemplatedTask

SUBTASKS = ("boolq", "piqa", "social_i_qa", "arc-challenge", "arc-easy", "openbookqa", "winogrande", "hellaswag")
ANSWER_FORMAT = re.compile(r"Answer format:\s*([^\n]+?)\s*$")


def answer_options(instruction: str) -> list[str] | None:
    """The labels listed on the instruction's last ``Answer format: a/b/c`` line, or None."""
    match = ANSWER_FORMAT.search(instruction)
    return [o.strip() for o in match.group(1).split("/") if o.strip()] if match else None


def nlu_rows(path: Path, policy: str) -> list[dict]:
    """``{"prompt", "response", "answer", "options"}`` rows of one LLM-Adapters file."""
    out = []
    for where, record in read_records(path, policy):
        if not require_fields(where, record, ("instruction", "output", "answer"), policy):
            continue
        options = answer_options(record["instruction"])
        if not options or record["answer"] not in options:
            report_bad(where, f"answer '{record['answer']}' is not among the 'Answer format:' options", policy)
            continue
        prompt = join_instruction(record["instruction"], str(record.get("input") or ""))
        out.append({"prompt": prompt, "response": record["output"], "answer": record["answer"], "options": options,
                    "raw": {k: record.get(k) for k in ("instruction", "input", "output")}})
    return out


@dataclass(frozen=True)
class NluTask(TemplatedTask):
    """Commonsense reasoning (see the module docstring).

    Attributes:
        max_per_subtask: cap on training records per subtask (a seeded subset), None for all; it keeps a
            large subtask (social_i_qa, 33k) from drowning the small ones.
    """

    max_per_subtask: int | None = None

    def split_file(self, root: Path | None, subtask: str, split: str) -> Path:
        """Where ``subtask``'s ``split`` lives: the shipped sample or ``root/<subtask>/<split>.json``."""
        return SAMPLES_DIR / "nlu" / subtask / f"{split}.jsonl" if root is None else root / subtask / f"{split}.json"

    def subtasks_with(self, root: Path | None, split: str) -> list[str]:
        """The subtasks that have a file for ``split`` under the chosen root."""
        return [s for s in SUBTASKS if self.split_file(root, s, split).is_file()]

    def eval_splits(self, data_dir=None) -> list[str]:
        return self.subtasks_with(resolve_data_dir(data_dir), "test")

    def rows(self, root, subtask: str, split: str) -> list[dict]:
        """The parsed rows of one subtask split (see :func:`nlu_rows`)."""
        rel = f"{subtask}/{split}"
        return nlu_rows(self.source_file(root, f"nlu/{rel}.jsonl", f"{rel}.json"), self.on_error)

    def load_train(self, root, seed, limit):
        out = []
        for subtask in self.subtasks_with(root, "train"):
            rows = self.rows(root, subtask, "train")
            if self.max_per_subtask is not None:
                rows = seeded_subset(rows, self.max_per_subtask, seed)
            out += [self.nlu_pair(r) for r in rows]
        return out

    def nlu_pair(self, row: dict) -> dict:
        """A training (or held-out) pair from a parsed row, under the task's template."""
        p = pair(row["prompt"], row["response"])
        return self.apply_template(row["raw"], p, "train") if self.templated else p

    def load_eval(self, split, root):
        rows = self.rows(root, split, "test")
        out = [{k: r[k] for k in ("prompt", "answer", "options")} for r in rows]
        if self.templated:
            return [self.apply_template(r["raw"], o, "eval") for r, o in zip(rows, out)]
        return out

    def load_heldout(self, root):
        # Interleave the subtasks' test sets so that a limit still covers every subtask.
        per_task = [self.rows(root, s, "test") for s in self.subtasks_with(root, "test")]
        rows = [r for r in chain.from_iterable(zip_longest(*per_task)) if r is not None]
        return [self.nlu_pair(r) for r in rows]


NLU = NluTask(
    name="nlu", kind="nlu",
    description="Commonsense reasoning (BoolQ, PIQA, SIQA, ARC-c/e, OBQA, WinoGrande; HellaSwag if supplied)",
    source="juzhengz/LoRI:tasks/<subtask>/ (= AGI-Edgerunners/LLM-Adapters@8166572:dataset/)",
    license="LLM-Adapters data: ODC-By; upstream licences per dataset (see samples/SOURCES.md)",
)
