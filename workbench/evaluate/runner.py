"""The runner: what task evaluators may ask of a model (generate text, score options, score responses).

Evaluators (``workbench/evaluate/metrics/<kind>.py``) receive a runner and never the model, so a fake
runner tests them without one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from workbench.evaluate.generate import DEFAULT_MAX_NEW_TOKENS, GenerationConfig, generate
from workbench.evaluate.loglik import mean_nll, option_logprobs
from workbench.evaluate.sandbox import SandboxLimits


def format_with_template(tokenizer, instruction: str, input: str = "") -> str:
    """The data layer's prompt format (chat template, or Alpaca for a tokenizer without one)."""
    from workbench.data.prompts import format_prompt  # lazy: evaluation must not need the data layer to import

    return format_prompt(tokenizer, instruction, input)


@dataclass
class Runner:
    """A model, its tokenizer and the settings evaluators use.

    ``gen`` is completed per task kind (:meth:`for_kind`) with the kind's default ``max_new_tokens`` and
    stop strings. ``raw_prompts``: send prompts as they are, without the prompt format (for base models
    evaluated on already formatted prompts). ``judge``: a safety judge (None: the keyword judge).
    ``nlu_mode``: "generate" (the paper's) or "loglik".
    """

    model: object
    tokenizer: object
    gen: GenerationConfig = GenerationConfig()
    score_batch_size: int = 8
    raw_prompts: bool = False
    judge: object = None
    nlu_mode: str = "generate"
    sandbox_limits: SandboxLimits | None = None

    def for_kind(self, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, stop: tuple[str, ...] = ()) -> "Runner":
        """A copy whose generation settings fill in a task kind's defaults."""
        gen = replace(self.gen, max_new_tokens=self.gen.max_new_tokens or max_new_tokens,
                      stop=tuple(dict.fromkeys((*self.gen.stop, *stop))))
        return replace(self, gen=gen)

    def format(self, instruction: str, input: str = "") -> str:
        if self.raw_prompts:
            return f"{instruction}\n\n{input}" if input else instruction
        return format_with_template(self.tokenizer, instruction, input)

    def generate(self, prompts: list[str], seed: int = 0) -> list[str]:
        return generate(self.model, self.tokenizer, prompts, self.gen, seed=seed)

    def option_logprobs(self, contexts: list[str], options: list[list[str]]) -> list[list[float]]:
        return option_logprobs(self.model, self.tokenizer, contexts, options, self.score_batch_size,
                               self.gen.merge_adapter)

    def response_nll(self, pairs: list[dict]) -> dict:
        """Mean NLL of held-out responses, their prompts formatted as in training: the runner's format, or
        a preformatted pair's ``model_input`` (``template="lori_official"``: no BOS, as the official
        tokenization; ``workbench.evaluate.model_inputs``)."""
        from workbench.evaluate.model_inputs import model_inputs

        runner, contexts = model_inputs(self, [dict(p, add_bos=p.get("add_bos", False)) if "model_input" in p
                                               else p for p in pairs])
        return mean_nll(self.model, self.tokenizer, contexts, [p["response"] for p in pairs],
                        self.score_batch_size, self.gen.merge_adapter, add_bos=runner.gen.add_bos)
