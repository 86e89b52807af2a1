#!/usr/bin/env bash
# The GPU run (benchmarks/gpu_suite.py): training throughput and MFU of our loop vs PEFT + Trainer on a
# Llama-3-8B-shaped random model, batched evaluation throughput, peak memory; prints RESULT lines.
#   benchmarks/gpu_suite.sh            one H100/H200, under 10 minutes, downloads nothing
#   benchmarks/gpu_suite.sh --tiny     the same script on the tiny model on CPU (CI)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py=python
exec "$py" "$here/gpu_suite.py" "$@"
