"""What each evaluation record sends to the model: the runner's prompt format, or a preformatted text.

A task built with a prompt template other than the default (``template="lori_official"``, see
``workbench.data.prompts``) gives each evaluation record ``model_input`` (the exact prompt text) and
``add_bos`` (whether the tokenizer's BOS goes in front: the official ``eval_model.py`` tokenizes prompts
with ``add_special_tokens=False``, the official HumanEval harness with the tokenizer's default). Such a
text is sent as it is; every other record goes through ``runner.format`` as before.
"""

from __future__ import annotations

import dataclasses


def model_inputs(runner, records: list[dict]) -> tuple[object, list[str]]:
    """The prompt texts for ``records`` and the runner to generate them with.

    Args:
        runner: an evaluation runner (``workbench.evaluate.runner.Runner`` or a test double).
        records: evaluation records, all preformatted (``model_input``) or none.

    Returns:
        ``(runner, texts)``; the runner is a copy whose generation settings carry the records' ``add_bos``
        when they are preformatted and the runner is a dataclass, else the runner itself.

    Raises:
        ValueError: some records are preformatted and others not, or they disagree on ``add_bos``.
    """
    formatted = ["model_input" in r for r in records]
    if not any(formatted):
        return runner, [runner.format(r["prompt"], r.get("input", "")) for r in records]
    if not all(formatted):
        raise ValueError("evaluation records mix preformatted (model_input) and plain prompts")
    bos = {bool(r.get("add_bos", True)) for r in records}
    if len(bos) > 1:
        raise ValueError("preformatted evaluation records disagree on add_bos")
    gen = getattr(runner, "gen", None)
    if dataclasses.is_dataclass(runner) and gen is not None and hasattr(gen, "add_bos"):
        runner = dataclasses.replace(runner, gen=dataclasses.replace(gen, add_bos=bos.pop()))
    return runner, [r["model_input"] for r in records]
