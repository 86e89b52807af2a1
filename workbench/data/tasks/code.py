"""The ``code`` task: CodeAlpaca instructions for training, HumanEval for evaluation.

Chaudhary, *Code Alpaca* (2023); Chen et al., *Evaluating Large Language Models Trained on Code*
(https://arxiv.org/abs/2107.03374). Offline, only CodeAlpaca's 2k pilot set is available (LoRI trains on
the 20k set from the hub: use ``custom_task`` with ``sahil2801/CodeAlpaca-20k`` when online). The ``test``
split is HumanEval records (``task_id``, ``prompt``, ``entry_point``, ``test``, ``canonical_solution``);
held-out pairs are the CodeAlpaca records on the held-out side of the hash split. With
``template="lori_official"`` training prompts are the official Alpaca text and each HumanEval record's
``model_input`` is its prompt stripped, as the official harness sends it.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.data.readers import read_records, require_fields
from workbench.data.tasks.common import TemplatedTask, instruction_pairs, split_heldout

HUMANEVAL_FIELDS = ("task_id", "prompt", "entry_point", "test", "canonical_solution")
CODEALPACA_FULL = "codealpaca/code_alpaca_2k.json"


@dataclass(frozen=True)
class CodeTask(TemplatedTask):
    """CodeAlpaca -> HumanEval (pass@1 in ``workbench.evaluate``)."""

    def eval_splits(self, data_dir=None) -> list[str]:
        return ["test"]

    def pairs(self, root, heldout: bool) -> list[dict]:
        """CodeAlpaca pairs on one side of the held-out hash split."""
        path = self.source_file(root, "code/codealpaca.jsonl", CODEALPACA_FULL)
        return self.finish_pairs(split_heldout(instruction_pairs(path, self.on_error, raw=self.templated), heldout))

    def load_train(self, root, seed, limit):
        return self.pairs(root, heldout=False)

    def load_heldout(self, root):
        return self.pairs(root, heldout=True)

    def load_eval(self, split, root):
        path = self.source_file(root, "code/humaneval.jsonl", "humaneval/HumanEval.jsonl")
        out = [{k: record[k] for k in HUMANEVAL_FIELDS} for where, record in read_records(path, self.on_error)
               if require_fields(where, record, HUMANEVAL_FIELDS, self.on_error)]
        return [self.apply_template(r, r, "eval") for r in out] if self.templated else out


CODE = CodeTask(
    name="code", kind="code",
    description="CodeAlpaca (2k set) instructions; HumanEval pass@1",
    source="sahil280114/codealpaca@2f78ddc:data/code_alpaca_2k.json; openai/human-eval@6d43fb9:data/HumanEval.jsonl.gz",
    license="CodeAlpaca data: CC BY-NC 4.0; HumanEval: MIT",
)
