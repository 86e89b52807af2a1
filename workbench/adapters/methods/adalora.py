"""``adalora``: AdaLoRA, adaptive budget allocation (Zhang et al. 2023, arXiv:2303.10512).

Each update is kept in SVD form ``P diag(E) Q`` (PEFT names them lora_B, lora_E, lora_A). Training starts
at rank ``init_r`` (the spec's ``rank``) everywhere; after a warm-up, singular values are scored by a
smoothed sensitivity ``|w * grad|`` and the least important are zeroed, following a cubic budget schedule
down to an average rank of ``target_r`` per module; the last ``tfinal`` steps train at the final pattern.
An orthogonality regulariser ``||P^T P - I||_F + ||Q Q^T - I||_F`` keeps P and Q near-orthogonal.

PEFT's: the SVD layers, the rank allocator (``update_and_allocate``), the budget schedule, the saved
format (``peft_type: ADALORA``, pruned triplets removed and ``rank_pattern`` in adapter_config.json) and
the loader (``PeftModel.from_pretrained`` restores the reduced ranks).
Ours: the hooks into the workbench loop: the total step count is set when training starts
(:meth:`on_train_start`), the regulariser is added to the loop's own loss (:meth:`loss_extra`; PEFT adds it
only when the model computes the loss from ``labels``), and the allocator runs after each optimizer step,
before the gradients are cleared (:meth:`on_step`).

Options: ``target_r`` (default rank // 2), ``tinit`` (default 10% of the steps), ``tfinal`` (default 20%),
``deltaT`` (1), ``beta1`` / ``beta2`` (0.85), ``orth_reg_weight`` (0.5).

What does not apply: an AdaLoRA adapter has no (A, B) LoRA factors, so ``Adapter.factors``, factor-space
merges, analytics, LoRI masks and continuing (``init``) refuse it (``load_adapter`` reads it only when the
caller asks for ``ADALORA``). It loads onto a base like any adapter (``load_onto``, evaluation):
:meth:`AdaLora.load` is PEFT's loader; :func:`load_adalora` reads and loads in one call.
Exact resume restores the weights but not the allocator's running importance scores.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING
from typing import Optional

from pydantic import Field, ValidationInfo, field_validator

from workbench.adapters.method import Method, MethodOptions
from workbench.adapters.registry import register_method
from workbench.errors import ConfigError
from workbench.keys import owning_module

if TYPE_CHECKING:
    import torch


class AdaLoraOptions(MethodOptions):
    target_r: Optional[int] = Field(None, ge=1, description="average final rank per module (default rank // 2)")
    tinit: Optional[int] = Field(None, ge=0, description="warm-up steps before pruning (default 10% of the steps)")
    tfinal: Optional[int] = Field(None, ge=0, description="last steps at the final pattern (default 20%)")
    deltaT: int = Field(1, ge=1, description="steps between rank allocations")
    beta1: float = Field(0.85, gt=0, lt=1, description="smoothing of the sensitivity")
    beta2: float = Field(0.85, gt=0, lt=1, description="smoothing of its uncertainty")
    orth_reg_weight: float = Field(0.5, ge=0, description="weight of the orthogonality regulariser")

    @field_validator("target_r")
    @classmethod
    def _within_rank(cls, value, info: ValidationInfo):
        rank = (info.context or {}).get("rank")
        if value is not None and rank is not None and value > rank:
            raise ValueError(f"must be in [1, rank={rank}] (got {value})")
        return value


class AdaLora(Method):
    name = "adalora"
    train_a = True
    peft_type = "ADALORA"
    Options = AdaLoraOptions

    def peft_config(self, spec, base_name=None):
        from peft import AdaLoraConfig

        opts = self.options(spec)
        # total_step is not known before the loop plans its steps: a valid placeholder until on_train_start.
        return AdaLoraConfig(init_r=spec.rank, target_r=_target_r(opts, spec.rank), lora_alpha=spec.alpha,
                             target_modules=list(spec.target_modules), lora_dropout=spec.dropout,
                             deltaT=opts.deltaT, beta1=opts.beta1, beta2=opts.beta2,
                             orth_reg_weight=opts.orth_reg_weight, total_step=1,
                             task_type="CAUSAL_LM", base_model_name_or_path=base_name)

    def attach(self, model, spec, init=None, mask=None, base_name=None):
        """Wrap ``model`` in PEFT's AdaLoRA layers, initialised from the spec's seed.

        Raises:
            ConfigError: a mask or an adapter to continue was given (AdaLoRA takes neither); bad options.
        """
        import torch
        from peft import get_peft_model

        if mask is not None or init is not None:
            raise ConfigError("method 'adalora' takes no mask and cannot continue an adapter (train a new one)")
        config = self.peft_config(spec, base_name)
        with torch.random.fork_rng(devices=[]):  # PEFT draws P and Q from the global generator
            torch.manual_seed(spec.a_seed)
            return get_peft_model(model, config)

    def on_train_start(self, pm, spec, total_steps: int) -> None:
        """Fix the budget schedule to the run's length.

        Raises:
            ConfigError: ``tinit``/``tfinal`` leave no steps to reduce ranks in.
        """
        opts = self.options(spec)
        cfg = pm.peft_config["default"]
        cfg.total_step = total_steps
        cfg.tinit = opts.tinit if opts.tinit is not None else round(0.1 * total_steps)
        cfg.tfinal = opts.tfinal if opts.tfinal is not None else round(0.2 * total_steps)
        if cfg.tinit >= total_steps - cfg.tfinal:
            raise ConfigError(f"adalora: tinit={cfg.tinit} and tfinal={cfg.tfinal} leave no budget phase in "
                              f"{total_steps} steps (lower them or train longer)")

    def loss_extra(self, pm):
        """``orth_reg_weight`` times the mean over P and Q of ``||cov - I||_F`` (as PEFT's forward adds it)."""
        import torch

        terms = [_orth_residual(p, "lora_A" in n) for n, p in pm.named_parameters()
                 if ("lora_A" in n or "lora_B" in n) and ".default" in n and p.requires_grad]
        return pm.peft_config["default"].orth_reg_weight * torch.stack(terms).mean()

    def on_step(self, pm, step: int) -> None:
        pm.base_model.update_and_allocate(step)

    def load(self, model, adapter, trainable: bool = False):
        """PEFT's loader, which restores the reduced ranks from ``rank_pattern``."""
        with warnings.catch_warnings():
            # PEFT's LoRA config check reads AdaLoRA's rank_pattern (lora_E keys) as LoRA ranks and warns that
            # they match no module; AdaLoRA's own loader applies them (the outputs are tested equal).
            warnings.filterwarnings("ignore", message="The following rank_pattern keys")
            return super().load(model, adapter, trainable)

    def empty_modules(self, config: dict) -> set[str]:
        """Modules whose whole rank was pruned away: their ``rank_pattern`` row is all False and PEFT saves
        their factors with zero rows. Only these may hold empty tensors (elsewhere one means a broken file)."""
        return {key.removesuffix(".lora_E") for key, row in (config.get("rank_pattern") or {}).items()
                if isinstance(row, list) and not any(row)}

    def trainable(self, adapter) -> int | None:
        """``init_r`` triplets per module as attached: ``init_r * (in + out + 1)`` (P, E, Q); pruning zeroes
        entries of E but trains the full triplets."""
        init_r = adapter.config.get("init_r")
        if init_r is None:
            return None
        shapes: dict[str, dict] = {}
        for key, t in adapter.tensors.items():
            part = key.split(".lora_")[1].split(".")[0] if ".lora_" in key else ""
            shapes.setdefault(owning_module(key), {})[part] = t.shape
        return sum(init_r * (s["A"][1] + s["B"][0] + 1) for s in shapes.values() if "A" in s and "B" in s)


def _target_r(opts: AdaLoraOptions, rank: int) -> int:
    return opts.target_r if opts.target_r is not None else max(1, rank // 2)


def _orth_residual(p: torch.Tensor, rows: bool) -> torch.Tensor:
    import torch

    cov = p @ p.T if rows else p.T @ p  # Q (r, in): Q Q^T (r, r); P (out, r): P^T P (r, r)
    return torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device))


def adalora_ranks(pm) -> dict[str, int]:
    """Module key -> the rank kept so far (singular values not pruned)."""
    from peft.tuners.adalora import AdaLoraLayer

    out = {}
    for name, mod in pm.named_modules():
        if isinstance(mod, AdaLoraLayer) and "default" in mod.lora_E:
            out[name.removeprefix("base_model.model.")] = int((mod.lora_E["default"] != 0).sum())
    return out


def load_adalora(model, path):
    """Load a saved AdaLoRA adapter (a directory, or an ``Adapter`` already read from one) onto ``model``:
    :func:`workbench.adapters.live.load_onto` (fingerprint check, then :meth:`AdaLora.load`).

    A directory gets the checked read first (SHA-256, structure, NaN): a module pruned to rank 0 is saved
    by PEFT as zero-element tensors, which the reader accepts exactly where ``rank_pattern`` says so
    (:meth:`AdaLora.empty_modules`).

    Raises:
        FileFormatError: missing or tampered files, or not an AdaLoRA adapter.
        MismatchError: the adapter was trained on another base.
    """
    from workbench.adapters.adapter import Adapter, load_adapter
    from workbench.adapters.live import load_onto

    adapter = path if isinstance(path, Adapter) else load_adapter(path, peft_types=("ADALORA",))
    return load_onto(model, adapter)


register_method(AdaLora(), reference="https://arxiv.org/abs/2303.10512")
