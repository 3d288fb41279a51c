#!/usr/bin/env bash
# Set up, then lint and run the whole test suite (no GPU, no network, no model downloads needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
