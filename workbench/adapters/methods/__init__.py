"""Built-in adapter methods, one module each; importing this package registers them."""

import importlib

BUILTIN = ["lora", "lori_d", "lori_s"]
OPTIONAL = ["lora_fa", "lora_plus", "qlora", "lora_drop", "adalora", "dora", "longlora"]

for _name in BUILTIN:
    importlib.import_module(f"{__name__}.{_name}")
for _name in OPTIONAL:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:  # a method not built in this checkout
        if _exc.name != f"{__name__}.{_name}":
            raise
