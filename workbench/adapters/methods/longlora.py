"""``longlora``: LongLoRA (Chen et al. 2023, arXiv:2309.12307): LoRA + shifted sparse attention in
training + trainable embeddings and norms.

LongLoRA extends a model's context cheaply: during fine-tuning, attention is S2-Attn (grouped causal
attention, half the heads shifted by half a group: :mod:`workbench.adapters.s2attn`), which costs
``O(t * G)``; at inference the model keeps standard full attention. The paper finds that LoRA alone does
not adapt to long context unless the embeddings and normalisation layers are trained too.

PEFT's: the LoRA layers and ``modules_to_save`` (full trainable copies of the embeddings and norms, saved
with the adapter). Ours: S2-Attn, registered with transformers' ``AttentionInterface`` as ``"s2attn"``
and active only while the model is in training mode (eval mode runs SDPA). Not included: position
interpolation (stretching RoPE to a longer context is a base-model setting, ``rope_scaling``).

Options:
- ``group_size`` (tokens per group) or ``group_ratio`` (fraction of the sequence; default 0.25).
- ``trainable_modules`` (default ``["embed_tokens", "norm"]``: module-name suffixes for ``modules_to_save``;
  ``norm`` matches every RMSNorm, whose names end in ``norm``).

Loading for inference: ``load_onto`` (PEFT's loader) restores LoRA and the saved embeddings and norms;
attention there is the base's standard one. With tied input/output embeddings the trained embedding stays
tied to ``lm_head`` (PEFT's ``ensure_weight_tying``).
"""

import dataclasses
from typing import Optional

from pydantic import Field

from workbench.adapters.method import Method, MethodOptions
from workbench.adapters.registry import register_method

DEFAULT_TRAINABLE = ("embed_tokens", "norm")


class LongLoraOptions(MethodOptions):
    group_size: Optional[int] = Field(None, ge=1, description="tokens per S2-Attn group (overrides group_ratio)")
    group_ratio: float = Field(0.25, gt=0, le=1, description="group size as a fraction of the sequence")
    trainable_modules: list[str] = Field(list(DEFAULT_TRAINABLE), min_length=1, strict=False,
                                         description="module-name suffixes trained in full (modules_to_save)")


class LongLora(Method):
    name = "longlora"
    train_a = True
    Options = LongLoraOptions

    def peft_config(self, spec, base_name=None):
        # ensure_weight_tying: with tied input/output embeddings the trained copy stays tied to lm_head.
        return dataclasses.replace(super().peft_config(spec, base_name), ensure_weight_tying=True,
                                   modules_to_save=list(self.options(spec).trainable_modules))

    def attach(self, model, spec, init=None, mask=None, base_name=None):
        """Switch the base to S2-Attn for training, then attach LoRA with trainable embeddings and norms.

        Raises:
            ConfigError: ``group_size`` < 1 or ``group_ratio`` outside (0, 1] (any bad option).
        """
        from workbench.adapters.s2attn import use_s2attn

        opts = self.options(spec)
        use_s2attn(model, group_size=opts.group_size, ratio=opts.group_ratio)
        return super().attach(model, spec, init=init, mask=mask, base_name=base_name)

    def trainable(self, adapter) -> int | None:
        """LoRA's A and B plus the fully trained modules (``modules_to_save``: embeddings, norms). A tied
        ``lm_head`` is saved as a copy of the embedding but is one parameter: not counted again."""
        suffixes = tuple(adapter.config.get("modules_to_save") or ())
        full = sum(t.numel() for k, t in adapter.tensors.items()
                   if ".lora_" not in k and k.removesuffix(".weight").endswith(suffixes))
        return super().trainable(adapter) + full


register_method(LongLora(), reference="https://arxiv.org/abs/2309.12307")
