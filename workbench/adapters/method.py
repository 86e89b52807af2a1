"""The contract every adapter method implements; the built-in methods subclass :class:`Method`.

A method is one file (``workbench/adapters/methods/<name>.py``) whose :class:`Method` subclass owns
everything about it: its options (a pydantic ``Options`` model), how it attaches to a base (PEFT config,
initialisation, what trains), its optimizer groups, its training phases (:meth:`Method.run`) and per-step
hooks, how a saved adapter loads back onto a base (:meth:`Method.load`), what it trained
(:meth:`Method.trainable`, for ``inspect``) and whether it trains inside a mask (``uses_mask``). Code
elsewhere asks the method and never compares its name with a string.

Importing this module (like the registry and every method module) imports no torch, PEFT or
transformers, so ``workbench validate`` checks method names and options without them; those imports
live in the functions that touch a model.

PEFT puts an ``embed_tokens`` target in an ``Embedding`` LoRA layer whose factors are bare parameters
(``lora_embedding_A`` (r, vocab), ``lora_embedding_B`` (dim, r)) instead of the ``lora_A``/``lora_B``
Linear modules of every other layer. :func:`factor_pairs` returns both kinds, so the initialisation,
freezing and optimizer groups below treat an embedding's A and B like any other A and B.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from workbench.adapters.peft_config import lora_config
from workbench.errors import ConfigError, MismatchError
from workbench.keys import PEFT_PREFIX, file_key

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.adapters.adapter import Adapter
    from workbench.adapters.spec import AdapterSpec

EMBED_A, EMBED_B = ".lora_embedding_A", ".lora_embedding_B"


class MethodOptions(BaseModel):
    """Base of every method's ``Options`` model; as it is, the options of a method that takes none.
    Unknown keys are errors (``extra="forbid"``) and values are not coerced across types (``strict``:
    ``"16"`` or ``true`` is not a number); sequence fields opt out (a saved spec gives lists, code tuples)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def option_message(method: str, err: dict, model: type[BaseModel]) -> str:
    """One pydantic error on a method's options in words (without the ``options.<field>`` path)."""
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg += f" (method '{method}' takes: {', '.join(model.model_fields) or 'none'})"
    return msg


def options_error(method: str, exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    """One :class:`ConfigError` line per pydantic error, each naming ``options.<field>``."""
    return ConfigError("; ".join(f"options.{'.'.join(str(p) for p in err['loc']) or 'options'}: "
                                 f"{option_message(method, err, model)}" for err in exc.errors()))


class Method:
    """A LoRA-family method on top of PEFT's LoRA layers.

    Subclasses set ``name``, ``train_a``, ``uses_mask`` (and ``peft_type``, ``Options``) and override
    the hooks they need. The loop calls :meth:`run` (the method's phases), which calls back the loop's
    single phase; the phase calls :meth:`attach`, :meth:`param_groups`, :meth:`on_train_start`, and per
    step :meth:`loss_extra` and :meth:`on_step`.
    """

    name = "method"
    train_a = True
    uses_mask = False
    peft_type = "LORA"  # adapter_config.json's peft_type of this method's adapters
    Options: type[BaseModel] = MethodOptions

    # ---- options ---------------------------------------------------------------------------------

    def parse_options(self, raw: Mapping[str, Any], rank: int | None = None) -> BaseModel:
        """Validate raw options (no torch needed).

        Args:
            raw: option name -> value (from ``AdapterSpec.options``, ``--option``, a pipeline's ``options``).
            rank: the adapter's rank when known (options bounded by it are then checked too).

        Returns:
            The parsed ``Options`` model (defaults filled in).

        Raises:
            pydantic.ValidationError: an unknown option or a bad value; each error's ``loc`` is the option.
        """
        return self.Options.model_validate(dict(raw), context={"rank": rank})

    def options(self, spec: AdapterSpec) -> BaseModel:
        """The spec's options, parsed.

        Raises:
            ConfigError: ``options.<field>: <why>`` for every bad option.
        """
        try:
            return self.parse_options(dict(spec.options), rank=spec.rank)
        except ValidationError as exc:
            raise options_error(self.name, exc, self.Options) from None

    # ---- the base it trains on --------------------------------------------------------------------

    def resolve_base(self, base):
        """The base this method trains on, given the one asked for (a ``BaseSpec``). Default: as asked.

        Raises:
            ConfigError: the base asked for contradicts the method (QLoRA and ``quantize: none``).
        """
        return base

    # ---- attaching and training -------------------------------------------------------------------

    def peft_config(self, spec: AdapterSpec, base_name: str | None = None):
        return lora_config(rank=spec.rank, alpha=spec.alpha, target_modules=spec.target_modules,
                           dropout=spec.dropout, use_rslora=spec.use_rslora, base_model=base_name)

    def attach(self, model, spec: AdapterSpec, init: Adapter | None = None,
               mask: dict[str, torch.Tensor] | None = None, base_name: str | None = None):
        """Wrap ``model`` (in place) with PEFT LoRA layers initialised for this method.

        Args:
            model: a transformers causal LM.
            spec: the adapter settings.
            init: an adapter to continue (its A and B are loaded; continual learning).
            mask: lora_B file key -> bool tensor of trainable entries (methods with ``uses_mask``).

        Raises:
            ConfigError: bad options; a mask given to a method that takes none, or missing for one that needs it.
            MismatchError: ``init`` does not fit the model or the spec.
        """
        from peft import get_peft_model

        self.options(spec)
        if mask is not None and not self.uses_mask:
            raise ConfigError(f"method '{self.name}' takes no mask (use lori_s)")
        if mask is None and self.uses_mask:
            raise ConfigError(f"method '{self.name}' needs a mask (calibrate one from a lori_d adapter)")
        pm = get_peft_model(model, self.peft_config(spec, base_name))
        self.init_weights(pm, spec, init)
        self.set_trainable(pm, spec, mask)
        return pm

    def init_weights(self, pm, spec: AdapterSpec, init: Adapter | None) -> None:
        """A from the spec's seed (bit-reproducible), B zero; or both from ``init``. Embedding layers too
        (PEFT would start their A at zero and B random, the other way round, and unseeded)."""
        import torch

        from workbench.adapters.init import seeded_a

        with torch.no_grad():
            for module, (a, b, keys) in factor_pairs(pm).items():
                if init is None:
                    a.copy_(seeded_a(spec.a_seed, module, a.shape[0], a.shape[1]).to(a.dtype))
                    b.zero_()
                else:
                    a.copy_(_init_tensor(init, keys[0], a.shape))
                    b.copy_(_init_tensor(init, keys[1], b.shape))

    def set_trainable(self, pm, spec: AdapterSpec, mask) -> None:
        for a, b, _ in factor_pairs(pm).values():
            a.requires_grad_(self.train_a)
            b.requires_grad_(True)

    def param_groups(self, pm, spec: AdapterSpec, lr: float, weight_decay: float) -> list[dict]:
        params = [p for p in pm.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}]

    def on_train_start(self, pm, spec: AdapterSpec, total_steps: int) -> None:
        """Called once the loop knows its number of optimizer steps (AdaLoRA's budget schedule needs it)."""

    def loss_extra(self, pm) -> torch.Tensor | None:
        """A per-step term added to the training loss (AdaLoRA's orthogonality regulariser), or None."""
        return None

    def on_step(self, pm, step: int) -> None:
        """Called after each optimizer step, before the gradients are cleared (AdaLoRA's rank allocation
        reads them)."""

    def run(self, phase: Callable[..., Any], model, examples: list[dict], spec: AdapterSpec, cfg, out_dir, **kw):
        """The method's training phases. Default: one phase, ``phase(model, examples, spec, cfg, out_dir, **kw)``.

        Args:
            phase: the loop's single training run (``workbench.train.loop.train_phase``): call it once per
                phase. Passed in so that no method imports the loop.
            model, examples, spec, cfg, out_dir, **kw: as for :func:`workbench.train.loop.train`.

        Returns:
            The last phase's ``TrainResult``.
        """
        return phase(model, examples, spec, cfg, out_dir, **kw)

    def sidecar(self, pm) -> dict:
        """Extra workbench.json fields recorded when a trained adapter is extracted (LoRI-S: its mask size)."""
        return {}

    # ---- saved adapters ---------------------------------------------------------------------------

    def load(self, model, adapter: Adapter, trainable: bool = False):
        """Put a saved adapter onto ``model`` with PEFT's loader (the base fingerprint is checked by the caller,
        :func:`workbench.adapters.live.load_onto`).

        Raises:
            MismatchError: the adapter's keys and the loaded model's differ (PEFT only warns).
        """
        from peft import PeftModel

        from workbench.adapters.live import check_loaded

        pm = PeftModel.from_pretrained(model, str(adapter.path), is_trainable=trainable)
        check_loaded(pm, adapter)
        return pm

    def empty_modules(self, config: dict) -> set[str]:
        """Module keys whose saved tensors may have zero elements (AdaLoRA: modules pruned to rank 0)."""
        return set()

    def trainable(self, adapter: Adapter) -> int | None:
        """The number of elements this method trains for ``adapter`` (what ``requires_grad`` counted after
        :meth:`attach`), from the saved files; None when the files do not tell. Default: every ``lora_*``
        tensor (A, B, embedding factors, DoRA magnitudes), less the A factors when A is frozen. Other saved
        tensors are not trained by LoRA (PEFT also saves a targeted embedding's base weight)."""
        return sum(t.numel() for k, t in adapter.tensors.items()
                   if ".lora_" in k and (self.train_a or not is_a_key(k)))


def is_a_key(key: str) -> bool:
    """True for an A factor's file key (Linear ``lora_A.weight`` or Embedding ``lora_embedding_A``)."""
    return key.endswith(".lora_A.weight") or key.endswith(EMBED_A)


def embedding_key(module: str, factor: str) -> str:
    """``("model.embed_tokens", "A")`` -> the key PEFT saves an Embedding LoRA factor under."""
    return f"{PEFT_PREFIX}{module}{EMBED_A if factor == 'A' else EMBED_B}"


def _module_name(name: str) -> str:
    return name.removeprefix("base_model.model.")


def lora_layers(pm) -> dict[str, nn.Module]:
    """Module key (``model.layers.0.self_attn.q_proj``) -> PEFT LoraLayer with Linear ``lora_A``/``lora_B``,
    for the default adapter (Embedding LoRA layers: :func:`embedding_layers`)."""
    from peft.tuners.lora import LoraLayer
    from torch import nn

    out = {}
    for name, mod in pm.named_modules():
        # AdaLoRA's layers hold bare Parameters (SVD triplets), not A/B Linear modules: not LoRA factors.
        if isinstance(mod, LoraLayer) and "default" in mod.lora_A and isinstance(mod.lora_A["default"], nn.Module):
            out[_module_name(name)] = mod
    return out


def embedding_layers(pm) -> dict[str, nn.Module]:
    """Module key (``model.embed_tokens``) -> PEFT LoRA Embedding layer, for the default adapter."""
    from peft.tuners.lora import LoraLayer

    return {_module_name(name): mod for name, mod in pm.named_modules()
            if isinstance(mod, LoraLayer) and "default" in getattr(mod, "lora_embedding_A", {})}


def factor_pairs(pm) -> dict[str, tuple]:
    """Module key -> ``(A, B, (A file key, B file key))`` over Linear and Embedding LoRA layers alike:
    A (r, in) and B (out, r) parameters (for an embedding, ``in`` is the vocabulary)."""
    out = {m: (l.lora_A["default"].weight, l.lora_B["default"].weight, (file_key(m, "A"), file_key(m, "B")))
           for m, l in lora_layers(pm).items()}
    for m, layer in embedding_layers(pm).items():
        out[m] = (layer.lora_embedding_A["default"], layer.lora_embedding_B["default"],
                  (embedding_key(m, "A"), embedding_key(m, "B")))
    return out


def _init_tensor(init: Adapter, key: str, shape) -> torch.Tensor:
    where = init.path or init.name
    if key not in init.tensors:
        raise MismatchError(f"{where}: adapter to continue has no tensor '{key}' (different target modules?)")
    t = init.tensors[key]
    if tuple(t.shape) != tuple(shape):
        raise MismatchError(f"{where}: '{key}' has shape {tuple(t.shape)}, the model needs {tuple(shape)} (different rank or base?)")
    return t
