"""``qlora``: QLoRA (Dettmers et al. 2023, arXiv:2305.14314): LoRA on a base stored in 4 bits.

The base's linear weights are quantized to NF4 (4-bit NormalFloat) with double quantization (the
per-block scales are quantized too) and dequantized block by block to ``compute_dtype`` in the forward
pass; the LoRA factors stay in full precision and are the only trained parameters. QLoRA *is* a 4-bit
base, so the method brings it: :meth:`QLora.resolve_base` turns the base asked for into
``BaseSpec(quantize="nf4", ...)`` (``workbench train --method qlora`` needs no other flag; a pipeline
stage with ``method: qlora`` gets it too), and refuses a base explicitly set to full precision
(``--quantize none``, ``base.quantize: none``). A 4-bit base works under every method (``lori_d``,
``lori_s`` ...: ``--quantize nf4``); ``qlora`` is plain LoRA that checks the base is 4-bit and prepares it
for k-bit training.

PEFT's: the 4-bit LoRA layers (``peft.tuners.lora.bnb.Linear4bit``) and
``prepare_model_for_kbit_training`` (freezes the base, casts its non-quantized half-precision parameters
to fp32, optionally enables gradient checkpointing). bitsandbytes': NF4 storage and kernels.
Ours: the check, and :func:`linear_weight_bytes` (the footprint the docs report).

Options: ``gradient_checkpointing`` (default False: the loop's ``TrainConfig.gradient_checkpointing``
turns it on for every method).
"""

from __future__ import annotations

import dataclasses

from workbench.adapters.method import Method, MethodOptions
from workbench.adapters.registry import register_method
from workbench.errors import ConfigError

QUANTIZE = "nf4"


def is_4bit(model) -> bool:
    """True when the model's linear layers are bitsandbytes 4-bit (``load_in_4bit``)."""
    import bitsandbytes as bnb

    return any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def linear_weight_bytes(model) -> dict:
    """Bytes held by the weights of the model's linear layers, and what they would take in fp32.

    For a 4-bit layer the stored bytes are the packed NF4 codes plus the quantization state (absmax per
    block; with double quantization the 8-bit absmax, its own scales and offset). Embeddings, norms and
    ``lm_head`` are not counted (quantization leaves them as they are), nor are LoRA factors.

    Returns:
        ``{"stored": bytes, "fp32": bytes, "ratio": stored / fp32, "layers": n}``.
    """
    import bitsandbytes as bnb
    from torch import nn

    stored = fp32 = layers = 0
    for name, mod in model.named_modules():
        if ".lora_" in name or name.endswith("lm_head"):
            continue
        if isinstance(mod, bnb.nn.Linear4bit):
            w = mod.weight
            stored += w.numel() * w.element_size() + _quant_state_bytes(w.quant_state)
            fp32 += mod.in_features * mod.out_features * 4
        elif isinstance(mod, nn.Linear):
            stored += mod.weight.numel() * mod.weight.element_size()
            fp32 += mod.weight.numel() * 4
        else:
            continue
        layers += 1
    return {"stored": stored, "fp32": fp32, "ratio": stored / fp32 if fp32 else None, "layers": layers}


def _quant_state_bytes(qs) -> int:
    total = qs.absmax.numel() * qs.absmax.element_size()
    if getattr(qs, "nested", False) and qs.state2 is not None:
        total += qs.state2.absmax.numel() * qs.state2.absmax.element_size() + qs.offset.numel() * qs.offset.element_size()
    return total


class QLoraOptions(MethodOptions):
    gradient_checkpointing: bool = False


class QLora(Method):
    name = "qlora"
    train_a = True
    Options = QLoraOptions

    def resolve_base(self, base):
        """The base in NF4: an unset ``quantize`` becomes ``nf4``.

        Raises:
            ConfigError: ``quantize`` is set to anything but ``nf4`` (e.g. ``none``: full precision).
        """
        if base.quantize in (None, QUANTIZE):
            return dataclasses.replace(base, quantize=QUANTIZE)
        raise ConfigError(f"base.quantize: '{base.quantize}' conflicts with method 'qlora', which trains LoRA on a "
                          f"4-bit ({QUANTIZE}) base; leave quantize unset (qlora loads the base in {QUANTIZE} "
                          "itself) or use method 'lora' for a full-precision base")

    def attach(self, model, spec, init=None, mask=None, base_name=None):
        """Prepare the 4-bit base for training, then attach plain LoRA.

        Raises:
            ConfigError: the base is not loaded in 4 bits.
        """
        from peft import prepare_model_for_kbit_training

        if not is_4bit(model):
            raise ConfigError("method 'qlora' needs a 4-bit base: load it with BaseSpec(quantize='nf4') "
                              "(workbench train_task and the CLI do), or use method 'lora' on a full-precision base")
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=self.options(spec).gradient_checkpointing)
        return super().attach(model, spec, init=init, mask=mask, base_name=base_name)


register_method(QLora(), reference="https://arxiv.org/abs/2305.14314")
