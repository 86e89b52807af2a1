"""The one base-fingerprint check. Every path that puts an adapter on a base calls :func:`check_base`:
training that continues an adapter (``live.attach``), loading (``live.load_onto``: evaluation, AdaLoRA's
loader), merging into base weights, ``workbench export --base`` and ``workbench inspect --base``.

Why a check of our own: PEFT loads an adapter onto any base of the same shapes without complaint, and a
LoRA update is meaningless on weights it was not trained against. Every workbench adapter records its
base's fingerprint (:func:`workbench.models.fingerprint.base_fingerprint`); plain PEFT adapters record
none and are not checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Union

from workbench.errors import MismatchError

if TYPE_CHECKING:
    from workbench.adapters.adapter import Adapter


def check_base(adapters: Union[Adapter, Sequence[Adapter]], model, hint: str = "") -> str | None:
    """Refuse to put adapters onto a base other than the one they were trained on.

    Args:
        adapters: one ``Adapter`` or several (several must record the same base).
        model: the base, a transformers model or a PEFT-wrapped one (its base is fingerprinted).
        hint: appended to the error, e.g. ``"; pass the right --base"``.

    Returns:
        The base's fingerprint, or None when no adapter records one (then nothing is computed).

    Raises:
        MismatchError: ``<adapter>: adapter was trained on base <recorded>, this base is <model's>``; for
            several adapters that disagree among themselves, the error names each one's base.
    """
    from workbench.adapters.adapter import Adapter, check_same_base

    many = not isinstance(adapters, Adapter)
    group = list(adapters) if many else [adapters]
    recorded = check_same_base(group)
    if recorded is None:
        return None
    from workbench.models.fingerprint import base_fingerprint

    now = base_fingerprint(model)
    if now != recorded:
        where = ", ".join(str(a.path or a.name) for a in group if a.fingerprint)
        what = "adapters were" if many and len(group) > 1 else "adapter was"
        raise MismatchError(f"{where}: {what} trained on base {recorded}, this base is {now}"
                            f"{_pad_hint(group, model)}{hint}")
    return now


def _pad_hint(group: list, model) -> str:
    """Why two loads of one base differ when the pad token is the reason (``pad_token: add`` resizes the
    embeddings, ``workbench/models/base.py``): the adapters' recorded setting against the model's."""
    from workbench.models.base import PAD_MARK

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    loaded = getattr(base, PAD_MARK, "eos")
    trained = {a.meta.get("pad_token", "eos") for a in group if a.fingerprint}
    if trained == {loaded}:
        return ""
    return (f" (trained with pad_token: {'/'.join(sorted(trained))}, this base loaded with pad_token: {loaded}; "
            "load the base with the adapter's pad_token)")


def check_base_named(adapter: Adapter, base: str) -> str | None:
    """Load the base ``base`` (name, hub id, directory or .gguf) and :func:`check_base` ``adapter`` on it
    (``workbench export --base``, ``workbench inspect --base``).

    Returns:
        The base's fingerprint (None when the adapter records none: the base is then not loaded).

    Raises:
        MismatchError: the adapter was trained on another base.
        ModelNotFoundError: the base cannot be loaded.
    """
    if adapter.fingerprint is None:
        return None
    from workbench.models.base import load_base

    model, _ = load_base(base, with_tokenizer=False)
    return check_base(adapter, model, hint=f" ('{base}')")
