"""Start-up checks: the model folder is complete, and the GPU has room for a job once everything is loaded.

``check_model_folder`` runs before loading (a clear message instead of a stack trace from deep in a loader);
``check_gpu_headroom`` is registered as a RunPod fitness check, so a worker that cannot run a job reports itself
unhealthy at start instead of failing its first job.
"""

from __future__ import annotations

import json
import os

import torch

from ..engine.errors import CheckpointError
from ..engine.loading import _check_keys_and_shapes, build_empty_model, resolve_transformer
from ..engine.model_paths import ENCODER_FOLDERS, resolve_model_paths
from .config import WorkerConfig

# GPU memory a 480p / 720p job needs beyond the loaded weights (activations, VAE decode of a clip), in GB.
HEADROOM_GB = {"480p": 10.0, "720p": 22.0}


def check_model_folder(config: WorkerConfig) -> list[str]:
    """Raise ``CheckpointError`` naming what is missing; return the files that make up the transformer."""
    paths = resolve_model_paths(config.model_path)
    source = resolve_transformer(paths.transformer, paths.multitalk)
    _check_keys_and_shapes(build_empty_model(source.dims), source)  # every tensor present, right shape (meta: no RAM)
    for folder in ENCODER_FOLDERS:
        if folder in ("tokenizer", "image_processor"):
            continue
        weights = list((paths.diffusers / folder).glob("*.safetensors")) + list(
            (paths.diffusers / folder).glob("*.bin")
        )
        if not weights:
            raise CheckpointError(f"{paths.diffusers / folder}: no weight files")
        for index in (paths.diffusers / folder).glob("*.index.json"):
            named = set(json.loads(index.read_text()).get("weight_map", {}).values())
            missing = sorted(f for f in named if not (index.parent / f).is_file())
            if missing:
                raise CheckpointError(
                    f"{index.parent}: missing shard files named in {index.name}: {', '.join(missing)}"
                )
    for name in ("config.json", "preprocessor_config.json"):
        if not (paths.wav2vec / name).is_file():
            raise CheckpointError(f"{paths.wav2vec}: missing {name}")
    if not any((paths.wav2vec / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        raise CheckpointError(f"{paths.wav2vec}: no model.safetensors or pytorch_model.bin")
    return [str(f) for f in source.files]


def check_gpu_headroom(device: torch.device, resolution: str | None = None) -> None:
    """Free GPU memory after loading must cover one job at the largest resolution the worker accepts."""
    if device.type != "cuda":
        return
    resolution = resolution or os.environ.get("MAX_RESOLUTION", "720p")
    need = float(os.environ.get("MIN_FREE_GPU_GB", HEADROOM_GB.get(resolution, 22.0)))
    free, total = torch.cuda.mem_get_info(device)
    if free / 2**30 < need:
        raise RuntimeError(
            f"only {free / 2**30:.1f} GB of {total / 2**30:.1f} GB GPU memory free after loading the models; "
            f"{resolution} jobs need about {need:.0f} GB (set MIN_FREE_GPU_GB to override)"
        )
