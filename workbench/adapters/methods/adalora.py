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
caller asks for ``ADALORA``); load it onto a model with :func:`load_adalora`, which evaluation uses.
Exact resume restores the weights but not the allocator's running importance scores.
"""

from __future__ import annotations

import warnings

import torch

from workbench.adapters.method import Method
from workbench.adapters.registry import METHODS
from workbench.errors import ConfigError


class AdaLora(Method):
    name = "adalora"
    train_a = True

    def peft_config(self, spec, base_name=None):
        from peft import AdaLoraConfig

        # total_step is not known before the loop plans its steps: a valid placeholder until on_train_start.
        return AdaLoraConfig(init_r=spec.rank, target_r=int(spec.option("target_r", max(1, spec.rank // 2))),
                             lora_alpha=spec.alpha, target_modules=list(spec.target_modules), lora_dropout=spec.dropout,
                             deltaT=int(spec.option("deltaT", 1)), beta1=float(spec.option("beta1", 0.85)),
                             beta2=float(spec.option("beta2", 0.85)),
                             orth_reg_weight=float(spec.option("orth_reg_weight", 0.5)), total_step=1,
                             task_type="CAUSAL_LM", base_model_name_or_path=base_name)

    def attach(self, model, spec, init=None, mask=None, base_name=None):
        """Wrap ``model`` in PEFT's AdaLoRA layers, initialised from the spec's seed.

        Raises:
            ConfigError: a mask or an adapter to continue was given (AdaLoRA takes neither).
        """
        from peft import get_peft_model

        if mask is not None or init is not None:
            raise ConfigError("method 'adalora' takes no mask and cannot continue an adapter (train a new one)")
        if not 1 <= int(spec.option("target_r", max(1, spec.rank // 2))) <= spec.rank:
            raise ConfigError(f"options.target_r: must be in [1, rank={spec.rank}]")
        with torch.random.fork_rng(devices=[]):  # PEFT draws P and Q from the global generator
            torch.manual_seed(spec.a_seed)
            pm = get_peft_model(model, self.peft_config(spec, base_name))
        pm._workbench_options = dict(spec.options)
        return pm

    def on_train_start(self, pm, total_steps: int) -> None:
        """Fix the budget schedule to the run's length.

        Raises:
            ConfigError: ``tinit``/``tfinal`` leave no steps to reduce ranks in.
        """
        cfg = pm.peft_config["default"]
        cfg.total_step = total_steps
        cfg.tinit = int(_spec_option(pm, "tinit", round(0.1 * total_steps)))
        cfg.tfinal = int(_spec_option(pm, "tfinal", round(0.2 * total_steps)))
        if cfg.tinit >= total_steps - cfg.tfinal:
            raise ConfigError(f"adalora: tinit={cfg.tinit} and tfinal={cfg.tfinal} leave no budget phase in "
                              f"{total_steps} steps (lower them or train longer)")

    def loss_extra(self, pm) -> torch.Tensor:
        """``orth_reg_weight`` times the mean over P and Q of ``||cov - I||_F`` (as PEFT's forward adds it)."""
        terms = [_orth_residual(p, "lora_A" in n) for n, p in pm.named_parameters()
                 if ("lora_A" in n or "lora_B" in n) and ".default" in n and p.requires_grad]
        return pm.peft_config["default"].orth_reg_weight * torch.stack(terms).mean()

    def on_step(self, pm, step: int) -> None:
        pm.base_model.update_and_allocate(step)


def _orth_residual(p: torch.Tensor, rows: bool) -> torch.Tensor:
    cov = p @ p.T if rows else p.T @ p  # Q (r, in): Q Q^T (r, r); P (out, r): P^T P (r, r)
    return torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device))


def _spec_option(pm, key: str, default):
    # The spec is not passed to on_train_start; AdaLora.attach records its options on the PEFT model.
    return getattr(pm, "_workbench_options", {}).get(key, default)


def adalora_ranks(pm) -> dict[str, int]:
    """Module key -> the rank kept so far (singular values not pruned)."""
    from peft.tuners.adalora import AdaLoraLayer

    out = {}
    for name, mod in pm.named_modules():
        if isinstance(mod, AdaLoraLayer) and "default" in mod.lora_E:
            out[name.removeprefix("base_model.model.")] = int((mod.lora_E["default"] != 0).sum())
    return out


def load_adalora(model, path):
    """Load a saved AdaLoRA adapter (a directory, or an ``Adapter`` already read from one) onto ``model``
    with PEFT's loader (reduced ranks restored).

    A directory gets the checked read first (SHA-256, structure, NaN): a module pruned to rank 0 is saved
    by PEFT as zero-element tensors, which the reader accepts exactly where ``rank_pattern`` says so.

    Raises:
        FileFormatError: missing or tampered files, or not an AdaLoRA adapter.
        MismatchError: the adapter was trained on another base.
    """
    from peft import PeftModel

    from workbench.adapters.adapter import Adapter, load_adapter
    from workbench.errors import MismatchError
    from workbench.models.fingerprint import base_fingerprint

    adapter = path if isinstance(path, Adapter) else load_adapter(path, peft_types=("ADALORA",))
    fp = adapter.fingerprint
    if fp and fp != base_fingerprint(model):
        raise MismatchError(f"{adapter.path}: adapter was trained on base {fp}, this base is {base_fingerprint(model)}")
    with warnings.catch_warnings():
        # PEFT's LoRA config check reads AdaLoRA's rank_pattern (lora_E keys) as LoRA ranks and warns that
        # they match no module; AdaLoRA's own loader applies them (the outputs are tested equal).
        warnings.filterwarnings("ignore", message="The following rank_pattern keys")
        return PeftModel.from_pretrained(model, str(adapter.path)).eval()


METHODS.add("adalora", AdaLora(), reference="https://arxiv.org/abs/2303.10512")
