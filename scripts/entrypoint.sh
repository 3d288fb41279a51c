#!/usr/bin/env bash
# Container entry point: report versions and GPU, optionally write a tiny model (smoke tests without weights),
# then run the worker (production loop, or the local API when SERVE_API_LOCALLY=true).
set -euo pipefail
# The worker never talks to the Hub (weights come from the volume or a cached model); `multitalk-serve download`,
# run as the container's command instead of this script, does.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
python3 - <<'PY'
import torch, multitalk_serve
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU visible"
print(f"multitalk-serve {multitalk_serve.__version__} | torch {torch.__version__} (CUDA {torch.version.cuda}) | {gpu}")
PY
if [ "${MAKE_TINY_MODEL:-false}" = "true" ] && [ ! -f "${MODEL_PATH}/TINY.json" ]; then
  echo "MAKE_TINY_MODEL=true: writing a tiny random model to ${MODEL_PATH} (it makes noise, not video)"
  multitalk-serve make-tiny "${MODEL_PATH}"
fi
if [ "${SERVE_API_LOCALLY:-false}" = "true" ]; then
  exec python3 -u -m multitalk_serve.worker --rp_serve_api --rp_api_host 0.0.0.0 --rp_api_port "${PORT:-8000}"
fi
exec python3 -u -m multitalk_serve.worker "$@"
