"""The adapter-method registry: ``METHODS.get("lori_s")`` -> a :class:`~workbench.adapters.method.Method`.

Torch-free: the registry, the method modules and their ``Options`` models import no torch, PEFT or
transformers, so ``workbench validate`` checks method names and options with none of them installed.
Built-in methods are found by scanning ``workbench/adapters/methods`` (one module each; a new file is
picked up without a list to edit); a plugin adds its own with :func:`register_method`.
"""

from __future__ import annotations

from typing import Any, Mapping

from workbench.registry import Registry

METHODS = Registry("adapter method")


def register_method(method, reference: str = "") -> None:
    """Register a :class:`~workbench.adapters.method.Method` instance under its ``name``; its ``Options``
    model is the entry's ``params`` (as a merge strategy's params model is)."""
    METHODS.add(method.name, method, params=method.Options, reference=reference)


def load_builtin_methods() -> None:
    """Import every module of ``workbench.adapters.methods`` (the package scans itself on import)."""
    import workbench.adapters.methods  # noqa: F401


def get_method(name: str):
    """Return the registered method object, importing the built-in method modules first.

    Raises:
        ConfigError: unknown method (with the valid names and a did-you-mean).
    """
    load_builtin_methods()
    return METHODS.get(name)


def method_options(name: str, raw: Mapping[str, Any], rank: int | None = None):
    """Validate a method's options without torch: what ``workbench validate`` and ``workbench train`` call.

    Args:
        name: the method (``lora_plus``, ``adalora``, ...).
        raw: option name -> value, e.g. ``{"lr_ratio": 16}``.
        rank: the adapter's rank when known (options bounded by it, such as AdaLoRA's ``target_r``,
            are then checked too).

    Returns:
        The method's parsed ``Options`` model (a pydantic model with every default filled in).

    Raises:
        ConfigError: ``name`` is not a registered method.
        pydantic.ValidationError: an unknown option or a bad value; each error's ``loc`` is
            ``(option_name, ...)``, its ``msg`` says why (unknown keys: type ``extra_forbidden``).
    """
    return get_method(name).parse_options(raw, rank=rank)


def method_of(adapter):
    """The method that made a saved adapter: its recorded ``method``, else (plain PEFT or merged adapters)
    the method named after the adapter's ``peft_type`` (``LORA`` -> ``lora``, ``ADALORA`` -> ``adalora``),
    else the base :class:`~workbench.adapters.method.Method` (plain LoRA layers).

    Args:
        adapter: an ``Adapter`` (or anything with ``.method`` and ``.config``).
    """
    load_builtin_methods()
    if adapter.method in METHODS:
        return METHODS.get(adapter.method)
    return method_for_peft_type(adapter.config.get("peft_type", "LORA"))


def method_for_peft_type(peft_type: str):
    """The method that reads adapters of ``peft_type`` (see :func:`method_of`)."""
    load_builtin_methods()
    named = peft_type.lower()
    if named in METHODS and METHODS.get(named).peft_type == peft_type:
        return METHODS.get(named)
    for name in METHODS:
        if METHODS.get(name).peft_type == peft_type:
            return METHODS.get(name)
    from workbench.adapters.method import Method

    return Method()


def loadable_peft_types() -> tuple[str, ...]:
    """Every ``peft_type`` a registered method saves (what evaluation and ``load_onto`` accept)."""
    load_builtin_methods()
    return tuple(sorted({"LORA", *(METHODS.get(n).peft_type for n in METHODS)}))
