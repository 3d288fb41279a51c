"""Start-up checks: the model folder is complete, the models asked for are there, and the GPU has room for a job
once everything is loaded.

``check_model_folder`` runs before loading (a clear message instead of a stack trace from deep in a loader);
``plan_models`` decides which audio adapters the worker holds and its default model (``MULTITALK_ADAPTERS``,
``MULTITALK_MODEL``), each file present;
``check_gpu_headroom`` is registered as a RunPod fitness check, so a worker that cannot run a job reports itself
unhealthy at start instead of failing its first job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..engine import (
    AUDIO_ADAPTERS,
    MODEL_CHOICES,
    T5_BYTES,
    CheckpointError,
    ConfigError,
    MemoryPlan,
    find_components,
)
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


MODELS = MODEL_CHOICES  # what a request may name: multitalk, infinitetalk, infinitetalk-single, infinitetalk-multi
INFINITETALK = ("infinitetalk-single", "infinitetalk-multi")


def adapters_found(config: WorkerConfig) -> dict[str, str]:
    """The audio adapters the model folder holds: name -> file (``multitalk``, ``infinitetalk-single``, ...)."""
    located, _ = find_components(config.model_path, transformer=config.transformer)
    keys = {name: name.replace("-", "_") for name in AUDIO_ADAPTERS}  # ModelPaths' field names
    return {name: str(located[key]) for name, key in keys.items() if located.get(key) is not None}


def serves(model: str, held: list[str] | tuple[str, ...]) -> bool:
    """Whether a worker holding ``held`` adapters can serve ``model`` for some job."""
    return any(a in held for a in INFINITETALK) if model == "infinitetalk" else model in held


def plan_models(config: WorkerConfig) -> tuple[list[str] | None, str]:
    """The adapters this worker holds (``MULTITALK_ADAPTERS``, else every one the model folder has; None: the folder
    has none, the loader's own check reports it) and the model a request gets by default (``MULTITALK_MODEL``, else
    ``multitalk`` when held, else ``infinitetalk``). ``ConfigError`` for a name that is not a model or a default the
    worker cannot serve; ``CheckpointError`` naming each adapter asked for whose file is missing."""
    found = adapters_found(config)
    if config.adapters is not None:
        unknown = [n for n in config.adapters if n not in AUDIO_ADAPTERS]
        if unknown:
            raise ConfigError(
                f"MULTITALK_ADAPTERS: {', '.join(unknown)} is not an audio adapter; choose from "
                f"{', '.join(AUDIO_ADAPTERS)}"
            )
        missing = [n for n in config.adapters if n not in found]
        if missing:
            raise CheckpointError(
                "MULTITALK_ADAPTERS names "
                + "; ".join(
                    f"{n}, whose weights are not in {config.model_path} (expected "
                    f"{AUDIO_ADAPTERS[n].local_path(config.model_path)})"
                    for n in missing
                )
                + ": download them (docs/provisioning.md) or leave them out of MULTITALK_ADAPTERS"
            )
        held: list[str] | None = list(dict.fromkeys(config.adapters))
    else:
        held = list(found) or None
    names = held or ["multitalk"]
    if config.model is None:
        default = "multitalk" if "multitalk" in names else "infinitetalk"
    else:
        if config.model not in MODELS:
            raise ConfigError(f"MULTITALK_MODEL: {config.model!r} is not a model; choose from {', '.join(MODELS)}")
        if not serves(config.model, names):
            raise ConfigError(
                f"MULTITALK_MODEL is {config.model}, but this worker holds only {', '.join(names)} "
                "(MULTITALK_ADAPTERS, or the adapters in the model folder)"
            )
        default = config.model
    return held, default


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
