"""The ``safety`` task: a Saferpaca-style mix of refusals to harmful requests and general instructions.

Bianchi et al., *Safety-Tuned LLaMAs*, ICLR 2024 (https://arxiv.org/abs/2309.07875): Saferpaca adds
2,000 safety examples (harmful request -> refusal) to 20k Alpaca examples. The Alpaca half is not
available offline, so the general half here is alpaca-libre (CC0, records with ``status == "ok"``); the
mixing ratio is ``safety_fraction`` (default 0.1, i.e. 2,000 among 20k).

Evaluation splits: ``harmful`` (refusal expected: I-MaliciousInstructions, I-CoNa, I-Controversial,
I-PhysicalSafetyUnsafe, Q-Harm) and ``benign`` (an answer expected: I-Alpaca, I-PhysicalSafetySafe),
records ``{"prompt", "source"}``. HEx-PHI (used by the LoRI paper) is licensed against redistribution:
a user who has it passes ``hexphi=path`` (or sets ``WORKBENCH_HEXPHI``) to get an extra ``hexphi`` split
read from JSON lines with ``instruction`` and ``category``; it is never shipped. With
``hexphi_prompt="official"`` the ``hexphi`` split is prompted the way the LoRI paper's numbers were
measured (the official HEx-PHI prompt, no BOS, ``workbench.data.lori_official.hexphi_prompt``); with
``template="lori_official"`` every safety split gets that prompt. The default (``"template"``) formats
it like the other splits, as earlier releases did.

Pointing the task at HEx-PHI: ``get_task("safety", hexphi="/path/HEx-PHI.jsonl")`` in Python,
``WORKBENCH_HEXPHI=/path/HEx-PHI.jsonl`` for the CLI and pipelines; one JSON object per line with
``instruction`` (the prompt) and ``category``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workbench.data.readers import DataError, read_json, read_records, require_fields
from workbench.data.selection import shuffled
from workbench.data.prompts import format_example
from workbench.data.tasks.common import TemplatedTask, instruction_pairs, split_heldout
from workbench.errors import ConfigError

HEXPHI_ENV = "WORKBENCH_HEXPHI"
HARMFUL = ("I-MaliciousInstructions", "I-CoNa", "I-Controversial", "I-PhysicalSafetyUnsafe", "Q-Harm")
BENIGN = ("I-Alpaca", "I-PhysicalSafetySafe")
SAFETY_FULL = "saferpaca/safety_only_data_Instructions.json"
GENERAL_FULL = tuple(f"alpaca-libre/alpaca_libre_tasks_v{v}.jsonl" for v in (1, 2, 3))
HEXPHI_PROMPTS = ("official", "template")


def mix_counts(n_safety: int, n_general: int, fraction: float, limit: int | None) -> tuple[int, int]:
    """How many safety and general records a mix of ``fraction`` safety can take from the pools.

    The total is the largest that keeps the ratio with the records available (and at most ``limit``).

    Returns:
        ``(safety, general)`` counts; ``safety == round(fraction * total)``.
    """
    caps = [limit] if limit is not None else []
    if fraction > 0:
        caps.append(int(n_safety / fraction))
    if fraction < 1:
        caps.append(int(n_general / (1 - fraction)))
    total = min(caps)
    safety = min(n_safety, round(fraction * total))
    general = min(n_general, total - safety)
    return safety, general


@dataclass(frozen=True)
class SafetyTask(TemplatedTask):
    """Saferpaca-style safety task (see the module docstring).

    Attributes:
        safety_fraction: share of safety (refusal) examples in the training mix, in [0, 1].
        hexphi: path of a user-supplied HEx-PHI JSON-lines file (default: ``$WORKBENCH_HEXPHI``).
        hexphi_prompt: ``template`` (the HEx-PHI split is formatted like the other splits) or ``official``
            (it gets the official LoRI prompt, whatever the template).
    """

    safety_fraction: float = 0.1
    hexphi: str | None = None
    hexphi_prompt: str = "template"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.safety_fraction, (int, float)) or not 0.0 <= self.safety_fraction <= 1.0:
            raise ConfigError(f"task '{self.name}': safety_fraction must be in [0, 1], got {self.safety_fraction}")
        if self.hexphi_prompt not in HEXPHI_PROMPTS:
            raise ConfigError(f"task '{self.name}': hexphi_prompt must be one of {', '.join(HEXPHI_PROMPTS)}, "
                              f"got {self.hexphi_prompt!r}")

    def hexphi_path(self) -> Path | None:
        """The HEx-PHI file to use, if any (the field, else ``$WORKBENCH_HEXPHI``)."""
        chosen = self.hexphi or os.environ.get(HEXPHI_ENV) or None
        return Path(chosen).expanduser() if chosen else None

    def eval_splits(self, data_dir=None) -> list[str]:
        return ["harmful", "benign"] + (["hexphi"] if self.hexphi_path() else [])

    def pools(self, root: Path | None, heldout: bool) -> tuple[list[dict], list[dict]]:
        """``(safety, general)`` pairs on one side of the held-out split, in file order."""
        safety = instruction_pairs(self.source_file(root, "safety/saferpaca.jsonl", SAFETY_FULL), self.on_error,
                                   raw=self.templated)
        general_files = ["safety/alpaca_libre.jsonl"] if root is None else list(GENERAL_FULL)
        general = []
        for rel in general_files:
            path = self.source_file(root, rel, rel)
            general += instruction_pairs(path, self.on_error, keep=lambda r: r.get("status") == "ok",
                                         raw=self.templated)
        return split_heldout(safety, heldout), split_heldout(general, heldout)

    def mix(self, root: Path | None, heldout: bool, seed: int, limit: int | None) -> list[dict]:
        """Safety and general pairs drawn (seeded) in the ``safety_fraction`` ratio."""
        safety, general = self.pools(root, heldout)
        n_safety, n_general = mix_counts(len(safety), len(general), float(self.safety_fraction), limit)
        return shuffled(safety, seed)[:n_safety] + shuffled(general, seed + 1)[:n_general]

    def load_train(self, root, seed, limit):
        return self.finish_pairs(self.mix(root, heldout=False, seed=seed, limit=limit))

    def load_heldout(self, root):
        # Shuffled so that a limit keeps the mixing ratio roughly; seed fixed for a stable metric.
        return self.finish_pairs(shuffled(self.mix(root, heldout=True, seed=0, limit=None), 0))

    def load_eval(self, split, root):
        if split == "hexphi":
            records = read_hexphi(self.hexphi_path(), self.on_error)
        elif root is None:
            records = prompts_from(self.source_file(None, f"safety/eval_{split}.jsonl", ""), self.on_error)
        else:
            records = []
            for stem in HARMFUL if split == "harmful" else BENIGN:
                records += prompts_from(self.source_file(root, "", f"safety-eval/{stem}.json"), self.on_error, stem)
        if self.templated:
            return [self.apply_template({"instruction": r["prompt"]}, r, "eval") for r in records]
        if split == "hexphi" and self.hexphi_prompt == "official":
            return [official_hexphi(r) for r in records]
        return records


def official_hexphi(record: dict) -> dict:
    """A HEx-PHI record sent with the official LoRI prompt (``model_input``, no BOS)."""
    example = format_example({"instruction": record["prompt"]}, "safety", "lori_official", "eval")
    return {**record, "template": "lori_official", "model_input": example["prompt"], "add_bos": example["add_bos"]}


def prompts_from(path: Path, policy: str, source: str | None = None) -> list[dict]:
    """``{"prompt", "source"}`` records from a safety-eval JSON file or a shipped JSON-lines subset."""
    out = []
    for where, record in read_records(path, policy, list_key="instructions"):
        if require_fields(where, record, ("instruction",), policy):
            out.append({"prompt": record["instruction"], "source": source or str(record.get("source", ""))})
    return out


def read_hexphi(path: Path | None, policy: str) -> list[dict]:
    """HEx-PHI records ``{"prompt", "category"}`` from the user's JSON-lines file.

    Raises:
        DataError: no file configured, missing file, or bad lines under policy ``"refuse"``.
    """
    if path is None:
        raise DataError(f"no HEx-PHI file: pass hexphi=PATH or set {HEXPHI_ENV}")
    out = []
    for where, record in read_records(path, policy):
        if require_fields(where, record, ("instruction",), policy):
            out.append({"prompt": record["instruction"], "category": str(record.get("category", ""))})
    return out


SAFETY = SafetyTask(
    name="safety", kind="safety",
    description="Saferpaca-style mix: harmful request -> refusal, plus general instructions",
    source="vinid/safety-tuned-llamas@36a4b8d (saferpaca, safety-eval); mobarski/alpaca-libre@9024e0c",
    license="saferpaca/safety-eval: CC BY-NC 4.0; alpaca-libre: CC0",
)
