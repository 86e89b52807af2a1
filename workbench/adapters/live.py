"""Between live PEFT models and Adapter values: attach a method to a base, extract the trained adapter,
and load a saved adapter onto a base with its fingerprint checked."""

from __future__ import annotations

import datetime as _dt
import re
import warnings

import torch

from workbench.adapters.adapter import Adapter, load_adapter
from workbench.adapters.factors import file_key
from workbench.adapters.init import tensors_hash
from workbench.adapters.method import lora_layers
from workbench.adapters.peft_config import config_dict
from workbench.adapters.registry import get_method
from workbench.adapters.spec import AdapterSpec
from workbench.errors import FileFormatError, MismatchError
from workbench.models.fingerprint import base_fingerprint

_PARAMETRIZED = re.compile(r"\.parametrizations\.weight\.(original|0\.\w+)$")


def attach(model, spec: AdapterSpec, init: Adapter | None = None, mask: dict | None = None):
    """Wrap ``model`` in the spec's method (in place) and return the PEFT model.

    Raises:
        MismatchError: ``init`` was made on a different base model.
    """
    if init is not None:
        check_base(init, model)
    return get_method(spec.method).attach(model, spec, init=init, mask=mask)


def adapter_tensors(pm) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's file keys, with masked B's materialised."""
    from peft import get_peft_model_state_dict

    with warnings.catch_warnings():  # PEFT mistakes the masked values for unsharded FSDP tensors
        warnings.simplefilter("ignore")
        state = {k: v for k, v in get_peft_model_state_dict(pm).items() if not _PARAMETRIZED.search(k)}
    for module, layer in lora_layers(pm).items():
        state[file_key(module, "A")] = layer.lora_A["default"].weight
        state[file_key(module, "B")] = layer.lora_B["default"].weight  # parametrised: the full B
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def extract(pm, spec: AdapterSpec, **meta) -> Adapter:
    """Snapshot a live PEFT model as an :class:`Adapter` with a complete workbench.json.

    Args:
        pm: the PEFT model.
        spec: its adapter spec.
        **meta: extra sidecar fields (task, mask_hash, parent, name, training summary ...).
    """
    from workbench import __version__

    tensors = adapter_tensors(pm)
    cfg = config_dict(pm.peft_config["default"])
    a_tensors = {k: v for k, v in tensors.items() if k.endswith(".lora_A.weight")}
    sidecar = {
        "format": "workbench-adapter/1", "method": spec.method, "task": spec.task, "a_seed": spec.a_seed,
        "rank": spec.rank, "alpha": spec.alpha, "spec": spec.to_dict(),
        "base_fingerprint": base_fingerprint(pm), "a_hash": tensors_hash(a_tensors),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "workbench_version": __version__, "mask_hash": None, "parent": None,
    }
    sidecar.update(meta)
    return Adapter(tensors=tensors, config=cfg, meta=sidecar)


def check_base(adapter: Adapter, model) -> None:
    """Refuse an adapter recorded on another base (PEFT would load it silently onto any same-shaped base)."""
    if adapter.fingerprint is None:
        return
    fp = base_fingerprint(model)
    if fp != adapter.fingerprint:
        raise MismatchError(f"{adapter.path or adapter.name}: adapter was trained on base {adapter.fingerprint}, "
                            f"this base is {fp}")


def load_onto(model, adapter: Adapter | str, trainable: bool = False):
    """Load a saved adapter onto a base with PEFT's own loader, after the fingerprint check.

    Returns a ``PeftModel`` (eval mode unless ``trainable``).
    """
    from peft import PeftModel

    adapter = load_adapter(adapter) if not isinstance(adapter, Adapter) else adapter
    check_base(adapter, model)
    if adapter.path is None:
        raise FileFormatError("load_onto needs a saved adapter (call adapter.save(path) first)")
    pm = PeftModel.from_pretrained(model, str(adapter.path), is_trainable=trainable)
    _check_loaded(pm, adapter)
    return pm


def _check_loaded(pm, adapter: Adapter) -> None:
    # PEFT only warns about missing keys; strict key accounting makes it an error.
    live = set(adapter_tensors(pm))
    saved = set(adapter.tensors)
    if live != saved:
        raise MismatchError(f"{adapter.path}: adapter keys do not match the model: missing "
                            f"{sorted(live - saved)[:3]}, unexpected {sorted(saved - live)[:3]}")
