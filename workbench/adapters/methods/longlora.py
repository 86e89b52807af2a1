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

from workbench.adapters.method import Method
from workbench.adapters.registry import METHODS
from workbench.adapters.s2attn import use_s2attn
from workbench.errors import ConfigError

DEFAULT_TRAINABLE = ("embed_tokens", "norm")


class LongLora(Method):
    name = "longlora"
    train_a = True

    def peft_config(self, spec, base_name=None):
        # ensure_weight_tying: with tied input/output embeddings the trained copy stays tied to lm_head.
        return dataclasses.replace(super().peft_config(spec, base_name), ensure_weight_tying=True,
                                   modules_to_save=list(spec.option("trainable_modules", DEFAULT_TRAINABLE)))

    def attach(self, model, spec, init=None, mask=None, base_name=None):
        """Switch the base to S2-Attn for training, then attach LoRA with trainable embeddings and norms.

        Raises:
            ConfigError: ``group_size`` < 1 or ``group_ratio`` outside (0, 1].
        """
        size, ratio = spec.option("group_size"), float(spec.option("group_ratio", 0.25))
        if size is not None and int(size) < 1:
            raise ConfigError(f"options.group_size: must be >= 1 (got {size})")
        if not 0 < ratio <= 1:
            raise ConfigError(f"options.group_ratio: must be in (0, 1] (got {ratio})")
        use_s2attn(model, group_size=size, ratio=ratio)
        return super().attach(model, spec, init=init, mask=mask, base_name=base_name)


METHODS.add("longlora", LongLora(), reference="https://arxiv.org/abs/2309.12307")
