"""The ``math`` task: GSM8K grade-school word problems (Cobbe et al. 2021, https://arxiv.org/abs/2110.14168).

Training pairs are question -> worked answer ending in ``#### <number>`` (kept as upstream, calculator
annotations included, as the hub copy LoRI trains on). The ``test`` split gives ``{"prompt", "answer"}``
with the final number (thousands separators removed); held-out pairs are test question -> answer.
With ``template="lori_official"`` prompts are the question plus the official instruction suffix and
targets say ``The final answer is: `` where GSM8K writes ``####`` (``workbench.data.lori_official``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.data.readers import read_records, report_bad, require_fields
from workbench.data.task import pair
from workbench.data.tasks.common import TemplatedTask


def final_answer(solution: str) -> str | None:
    """The number after the last ``####`` of a GSM8K solution, without commas; None when absent."""
    if "####" not in solution:
        return None
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def gsm8k_rows(path: Path, policy: str) -> list[tuple[str, str, str]]:
    """``(question, solution, final answer)`` triples of a GSM8K file; records without ``####`` are bad."""
    out = []
    for where, record in read_records(path, policy):
        if not require_fields(where, record, ("question", "answer"), policy):
            continue
        final = final_answer(record["answer"])
        if not final:
            report_bad(where, "answer has no '#### <number>' line", policy)
            continue
        out.append((record["question"], record["answer"], final))
    return out


@dataclass(frozen=True)
class MathTask(TemplatedTask):
    """GSM8K: train on ``train``, evaluate exact match of the final number on ``test``."""

    def eval_splits(self, data_dir=None) -> list[str]:
        return ["test"]

    def rows(self, root: Path | None, split: str) -> list[tuple[str, str, str]]:
        """``(question, solution, final answer)`` triples of the ``train`` or ``test`` split."""
        return gsm8k_rows(self.source_file(root, f"math/{split}.jsonl", f"gsm8k/{split}.jsonl"), self.on_error)

    def pairs(self, root: Path | None, split: str) -> list[dict]:
        """Question -> solution pairs of one split, under the task's template."""
        out = [pair(q, solution) for q, solution, _ in self.rows(root, split)]
        if not self.templated:
            return out
        return [self.apply_template({"question": p["prompt"], "answer": p["response"]}, p, "train") for p in out]

    def load_train(self, root, seed, limit):
        return self.pairs(root, "train")

    def load_eval(self, split, root):
        out = [{"prompt": q, "answer": final} for q, _, final in self.rows(root, "test")]
        return [self.apply_template({"question": r["prompt"]}, r, "eval") for r in out] if self.templated else out

    def load_heldout(self, root):
        return self.pairs(root, "test")


MATH = MathTask(
    name="math", kind="math",
    description="GSM8K grade-school math word problems; exact match on the final number",
    source="openai/grade-school-math@3101c7d:grade_school_math/data/{train,test}.jsonl",
    license="MIT",
)
