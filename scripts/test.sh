#!/usr/bin/env bash
# Set up, then lint and run the whole test suite (no GPU, no network, no model downloads needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# two worker processes (one torch thread each, tests/conftest.py): the tiny models' many small operations keep one
# core busy per process; a file's tests stay in one process (its module fixtures are built once)
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
