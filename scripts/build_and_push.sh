#!/usr/bin/env bash
# Build the worker image for linux/amd64 and push it.
#   scripts/build_and_push.sh registry.example.com/you/multitalk-serve[:tag]
# Without a tag the image is tagged with `git describe` (never :latest: RunPod endpoints should pin versions).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
IMAGE="${1:?usage: $0 registry/name[:tag]}"
if [[ "${IMAGE##*/}" != *:* ]]; then
  IMAGE="${IMAGE}:$(git describe --tags --always --dirty)"
fi
if [[ "$IMAGE" == *:latest ]]; then
  echo "refusing :latest; give a version tag" >&2
  exit 2
fi
docker buildx build --platform linux/amd64 --tag "$IMAGE" --push .
echo "pushed $IMAGE"
