#!/usr/bin/env bash
# Set up, write the tiny random-weight models in every published layout, and run one MultiTalk transformer
# forward from each layout (original, diffusers, GGUF Q8_0, GGUF Q4_K_M), printing shapes, timings and differences.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/multitalk-serve demo "${1:-tiny}"
