#!/usr/bin/env bash
# Install the wheel folder made by scripts/gpu_wheels.py on a bare GPU machine: offline, nothing fetched, the
# machine's torch untouched (no torch wheel is carried and nothing is resolved: --no-deps). Wheels go to a separate
# folder ($GPU_SITE, default /tmp/site) put first on PYTHONPATH, so the machine's own packages stay as they are;
# then `gpu_wheels.py --check` verifies that every requirement of what was carried is met.
#
#   . scripts/gpu_install.sh [WHEEL_DIR]     # sourced: PYTHONPATH stays exported for the commands that follow
#   bash scripts/gpu_install.sh [WHEEL_DIR]  # just install and check
#
# PYTHON picks the interpreter (default python3, the one with the machine's CUDA torch).
_gpu_install() {
  local repo wheels python site
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  wheels="${1:-$repo/.whl}"
  python="${PYTHON:-python3}"
  site="${GPU_SITE:-/tmp/site}"
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "gpu_install: no wheels in $wheels (build them with: python scripts/gpu_wheels.py)" >&2
    return 1
  fi
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --upgrade --target "$site" "$wheels"/*.whl || return 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  "$python" "$repo/scripts/gpu_wheels.py" --check --out "$wheels" || return 1
}
if _gpu_install "$@"; then
  echo "gpu_install: done (PYTHONPATH=$PYTHONPATH)"
else
  echo "gpu_install: FAILED" >&2
  # shellcheck disable=SC2317
  return 1 2>/dev/null || exit 1
fi
