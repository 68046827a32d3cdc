#!/usr/bin/env bash
# The README's test command: install what the tests need (Debian's Chromium for the browser tests and the PNG export,
# a Chinese font for the PNGs' Chinese labels, Python packages), then run every test. Needs root (or sudo) for
# apt-get on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
MISSING=()
command -v chromium >/dev/null || MISSING+=(chromium)
FONT=$(dpkg-query -W -f='${Status}' fonts-wqy-microhei 2>/dev/null || true)
[ "$FONT" = "install ok installed" ] || MISSING+=(fonts-wqy-microhei)
if [ ${#MISSING[@]} -gt 0 ]; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${MISSING[@]}"
fi
python3 -m pip install -q -r requirements-dev.txt
export GRADIO_ANALYTICS_ENABLED=False
python3 -m pytest "$@"
