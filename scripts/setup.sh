#!/usr/bin/env bash
# Create .venv (once) and install the project with its pinned dependencies. Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch is a floor in pyproject (RunPod images bring their own CUDA build): install one only if none is there.
# TORCH_SPEC picks another build, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  .venv/bin/pip install -q ${TORCH_SPEC:-torch==2.13.0}
fi
.venv/bin/pip install -q -e ".[worker,dev]"
