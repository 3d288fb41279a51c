# The MultiTalk RunPod serverless worker. Weights are not in the image: they live on a network volume
# (MODEL_PATH, default /runpod-volume/models; see docs/deploy.md).
# Build: scripts/build_and_push.sh registry/name:tag  (linux/amd64)
FROM --platform=linux/amd64 runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    DEBIAN_FRONTEND=noninteractive \
    TOKENIZERS_PARALLELISM=false \
    RUNPOD_LOG_LEVEL=INFO \
    MODEL_PATH=/runpod-volume/models \
    VOLUME_PATH=/runpod-volume

WORKDIR /app
# Dependencies first (pinned in pyproject.toml; the image's torch satisfies torch>=2.6 and is kept).
COPY pyproject.toml README.md ./
COPY src ./src
# tts: Kokoro-82M for text requests (about 300 MB installed; the weights come from the volume: download --tts)
RUN python3 -m pip install ".[worker,fp8,tts]" \
 && python3 -c "import torch, diffusers, transformers, runpod, av, kokoro, misaki; import multitalk_serve.worker.handler; print('torch', torch.__version__)"

COPY scripts/entrypoint.sh /app/entrypoint.sh
COPY examples/client.py examples/fanout.py test_input.json /app/
CMD ["bash", "/app/entrypoint.sh"]
