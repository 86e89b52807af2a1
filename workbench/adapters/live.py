"""Between live PEFT models and Adapter values: attach a method to a base, extract the trained adapter,
and load a saved adapter onto a base with its fingerprint checked."""

from __future__ import annotations

import datetime as _dt
import re
import warnings

import torch

from workbench.adapters.adapter import Adapter, load_adapter
from workbench.adapters.base_check import check_base
from workbench.adapters.method import lora_layers
from workbench.adapters.peft_config import config_dict
from workbench.adapters.registry import get_method, loadable_peft_types, method_of
from workbench.adapters.spec import AdapterSpec
from workbench.errors import FileFormatError, MismatchError
from workbench.hashing import tensors_hash
from workbench.keys import file_key
from workbench.models.fingerprint import base_fingerprint

_PARAMETRIZED = re.compile(r"\.parametrizations\.weight\.(original|0\.\w+)$")


def attach(model, spec: AdapterSpec, init: Adapter | None = None, mask: dict | None = None):
    """Wrap ``model`` in the spec's method (in place) and return the PEFT model.

    Raises:
        ConfigError: unknown method or bad options (named ``options.<field>``).
        MismatchError: ``init`` was made on a different base model (both fingerprints named).
    """
    method = get_method(spec.method)
    method.options(spec)  # before the base fingerprint is computed: bad options fail first
    if init is not None:
        check_base(init, model)
    return method.attach(model, spec, init=init, mask=mask)


def adapter_tensors(pm) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's file keys, with masked B's materialised."""
    from peft import get_peft_model_state_dict

    with warnings.catch_warnings():  # PEFT mistakes the masked values for unsharded FSDP tensors
        warnings.simplefilter("ignore")
        # save_embedding_layers=False: PEFT would copy a resized embedding (pad_token: add) into the adapter;
        # its one new row is seeded (workbench.models.base), so loading the base the same way rebuilds it
        state = {k: v for k, v in get_peft_model_state_dict(pm, save_embedding_layers=False).items()
                 if not _PARAMETRIZED.search(k)}
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
    sidecar.update(get_method(spec.method).sidecar(pm))
    sidecar.update(meta)
    return Adapter(tensors=tensors, config=cfg, meta=sidecar)


def load_onto(model, adapter: Adapter | str, trainable: bool = False, hint: str = ""):
    """Load a saved adapter onto a base: the fingerprint check, then the adapter's method loads it
    (:meth:`~workbench.adapters.method.Method.load`: PEFT's loader with strict key accounting; AdaLoRA's
    restores its reduced ranks).

    Args:
        model: the base (transformers model).
        adapter: an ``Adapter`` read from a directory, or the directory.
        trainable: load for further training (default: eval mode).
        hint: appended to a fingerprint error (evaluation: which flag picks the base).

    Returns:
        A ``PeftModel``.

    Raises:
        MismatchError: another base (both fingerprints named), or keys that do not match the model.
        FileFormatError: an in-memory adapter with no directory.
    """
    adapter = load_adapter(adapter, peft_types=loadable_peft_types()) if not isinstance(adapter, Adapter) else adapter
    check_base(adapter, model, hint=hint)
    if adapter.path is None:
        raise FileFormatError("load_onto needs a saved adapter (call adapter.save(path) first)")
    pm = method_of(adapter).load(model, adapter, trainable=trainable)
    return pm if trainable else pm.eval()


def check_loaded(pm, adapter: Adapter) -> None:
    """Strict key accounting after a load (PEFT only warns about missing keys).

    Raises:
        MismatchError: the loaded model's adapter keys and the file's differ (lists a few of each).
    """
    live = set(adapter_tensors(pm))
    saved = set(adapter.tensors)
    if live != saved:
        raise MismatchError(f"{adapter.path}: adapter keys do not match the model: missing "
                            f"{sorted(live - saved)[:3]}, unexpected {sorted(saved - live)[:3]}")
