"""Start-up checks: the model folder is complete, and the GPU has room for a job once everything is loaded.

``check_model_folder`` runs before loading (a clear message instead of a stack trace from deep in a loader);
``check_gpu_headroom`` is registered as a RunPod fitness check, so a worker that cannot run a job reports itself
unhealthy at start instead of failing its first job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..engine import T5_BYTES, CheckpointError, MemoryPlan
from ..provision.verify import verify_model_dir
from .config import WorkerConfig

# GPU memory a 480p / 720p job needs beyond the loaded weights (activations, VAE decode of a clip), in GB.
HEADROOM_GB = {"480p": 10.0, "720p": 22.0}


def check_model_folder(config: WorkerConfig, adapters: Sequence[str] | None = None) -> list[str]:
    """What ``multitalk-serve verify`` checks (without re-hashing): raise ``CheckpointError`` naming everything
    missing or inconsistent (files download recorded, tensors, shapes, configs, widths between components; headers
    only, no weights read); return the files that make up the model. ``adapters``: the audio models the worker will
    load (``multitalk``, ``infinitetalk-single``, ``infinitetalk-multi``), each required; ``None``: any one."""
    result = verify_model_dir(config.model_path, transformer=config.transformer, adapters=adapters)
    if not result.ok:
        raise CheckpointError(f"{config.model_path}: " + "; ".join(result.all_problems))
    return result.inventory.files


def check_gpu_headroom(device: torch.device, resolution: str | None = None, plan: MemoryPlan | None = None) -> None:
    """Free GPU memory after loading must cover one job at the largest resolution the worker accepts (and, when the
    text encoder is offloaded, its visit to the GPU)."""
    if device.type != "cuda":
        return
    resolution = resolution or os.environ.get("MAX_RESOLUTION", "720p")
    need = HEADROOM_GB.get(resolution, 22.0)
    if plan is not None and plan.offload_text_encoder:
        need = max(need, T5_BYTES / 1e9 + 1.0)
    need = float(os.environ.get("MIN_FREE_GPU_GB", need))
    free, total = torch.cuda.mem_get_info(device)
    if free / 2**30 < need:
        raise RuntimeError(
            f"only {free / 2**30:.1f} GB of {total / 2**30:.1f} GB GPU memory free after loading the models; "
            f"{resolution} jobs need about {need:.0f} GB (set MIN_FREE_GPU_GB to override)"
        )
