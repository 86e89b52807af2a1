"""Built-in task kinds, one module each; :mod:`workbench.data.registry` registers their instances."""
