#!/usr/bin/env bash
# Install a headless browser for tests/test_report_browser.py and scripts/screenshot_report.py:
# Debian's chromium and chromium-driver (the report is checked in a real browser; no browser is
# downloaded from anywhere but the system's package archive), and selenium into .venv when it is there.
# Idempotent: with both already installed it only checks them (a second or so). Needs root (CI and the
# developer machines run as root); about 1.5 minutes on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import selenium" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "selenium>=4.20,<5"
fi
chromium --version 2>/dev/null; echo
