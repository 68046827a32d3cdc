#!/usr/bin/env bash
# The README's test command: install what the tests need (Debian's Chromium for the browser tests, Python packages),
# then run every test. Needs root (or sudo) for apt-get on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v chromium >/dev/null; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium
fi
python3 -m pip install -q -r requirements-dev.txt
export GRADIO_ANALYTICS_ENABLED=False
python3 -m pytest "$@"
