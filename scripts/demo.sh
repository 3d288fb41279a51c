#!/usr/bin/env bash
# The main job on an embedded tiny model: set up, write tiny random-weight models in every published layout and
# show one transformer forward from each, start the RunPod worker's local API on the tiny model, send a two-person
# job with the example client (drawn picture, two synthetic voices), and save demo.mp4.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '\n==> %s\n' "$*"; }
say "[1/5] setting up: .venv and the pinned packages (the first run downloads torch and friends: minutes) ..."
bash scripts/setup.sh
PY=.venv/bin/python
TINY="${1:-tiny}"
OUT="${2:-demo.mp4}"

say "[2/5] writing tiny models (seeded random weights) in every published layout to $TINY/, then one transformer forward from each ..."
.venv/bin/multitalk-serve layouts "$TINY"
say "[3/5] drawing a picture and two voices in demo_volume/in/ ..."
.venv/bin/multitalk-serve demo-inputs demo_volume/in

PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

say "[4/5] starting the worker's local API on port $PORT (MODEL_PATH=$TINY; its log: demo_worker.log); it loads the models ..."
MODEL_PATH="$TINY" VOLUME_PATH=demo_volume MULTITALK_DTYPE=fp32 \
  $PY -m multitalk_serve.worker --rp_serve_api --rp_api_port "$PORT" > demo_worker.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
$PY - "$PORT" <<'PYEOF'
import sys, time, urllib.request
start = time.time()
for i in range(600):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/docs", timeout=1)
        print(f"    the worker is ready after {time.time() - start:.0f} s")
        sys.exit(0)
    except Exception:
        if i and i % 10 == 0:
            print(f"    still loading ({time.time() - start:.0f} s) ...", flush=True)
        time.sleep(0.5)
sys.exit("the worker did not start: see demo_worker.log")
PYEOF

say "[5/5] sending the job: two people, 4 sampling steps at 192x128 (progress below; a minute or two on a laptop CPU) ..."
$PY examples/client.py --endpoint "http://127.0.0.1:$PORT" --image demo_volume/in/portrait.png \
  --audio demo_volume/in/voice1.wav --audio demo_volume/in/voice2.wav --audio-type add \
  --prompt "Two people talk to each other" --width 192 --height 128 --steps 4 --seed 42 \
  --extra '{"output": {"format": "base64"}}' --out "$OUT"
echo
echo "This was a tiny RANDOM model: $OUT is noise with the voices' soundtrack, not a talking face; every step of the"
echo "real path ran (worker API, validation, audio, wav2vec2, encoders, streamed sampling, VAE, MP4 with AAC)."
echo "For real video, put the published weights in a folder (docs/generate.md, docs/deploy.md)."
