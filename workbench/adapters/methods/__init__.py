"""Built-in adapter methods, one module each; importing this package registers every module in it.

The modules are found by scanning the package (no list to keep): a new method is one new file here that
calls :func:`workbench.adapters.registry.register_method`.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
