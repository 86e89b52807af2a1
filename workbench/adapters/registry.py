"""The adapter-method registry: ``METHODS.get("lori_s")`` -> a :class:`~workbench.adapters.method.Method`."""

from workbench.registry import Registry

METHODS = Registry("adapter method")


def get_method(name: str):
    """Return the registered method object, importing the built-in method modules first."""
    import workbench.adapters.methods  # noqa: F401  (registers the built-ins)

    return METHODS.get(name)
