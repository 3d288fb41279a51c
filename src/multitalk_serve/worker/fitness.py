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
    DEFAULT_PRESET,
    FULL_MODELS,
    MODEL_CHOICES,
    PRESETS,
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


MODELS = MODEL_CHOICES  # what a request may name: multitalk, infinitetalk(-single, -multi), flashtalk
INFINITETALK = ("infinitetalk-single", "infinitetalk-multi")
# SoulX-FlashTalk: a whole transformer of its own (InfiniteTalk's, distilled), not audio layers on the shared base, so
# a process that holds it holds nothing else. Its folder under MODEL_PATH (the engine's loader reads it there).
FLASHTALK, REALTIME = "flashtalk", "realtime"  # the model and the one preset it runs
FLASHTALK_DIR = FULL_MODELS[FLASHTALK].folder  # SoulX-FlashTalk-14B, as its README downloads it
MODEL_SPECS = {**AUDIO_ADAPTERS, **FULL_MODELS}  # what MULTITALK_ADAPTERS may name


def adapters_found(config: WorkerConfig) -> dict[str, str]:
    """The audio adapters the model folder holds: name -> file (``multitalk``, ``infinitetalk-single``, ...), and the
    whole models (``flashtalk`` -> its folder), as the loader finds them."""
    located, _ = find_components(config.model_path, transformer=config.transformer)
    keys = {name: name.replace("-", "_") for name in MODEL_SPECS}  # ModelPaths' field names
    return {name: str(located[key]) for name, key in keys.items() if located.get(key) is not None}


def _expected(name: str, root) -> str:
    """Where the weights of ``name`` are expected under a model root, for messages."""
    if MODEL_SPECS[name].full_transformer:
        return f"{root}/{MODEL_SPECS[name].folder}/ (config.json and the transformer's safetensors)"
    return str(MODEL_SPECS[name].local_path(root))


def serves(model: str, held: list[str] | tuple[str, ...]) -> bool:
    """Whether a worker holding ``held`` adapters can serve ``model`` for some job."""
    return any(a in held for a in INFINITETALK) if model == "infinitetalk" else model in held


def plan_models(config: WorkerConfig) -> tuple[list[str] | None, str]:
    """The adapters this worker holds (``MULTITALK_ADAPTERS``, else every one the model folder has; None: the folder
    has none, the loader's own check reports it) and the model a request gets by default (``MULTITALK_MODEL``, else
    ``multitalk`` when held, else ``infinitetalk``; FlashTalk's worker: ``flashtalk``). FlashTalk is held alone
    (``MULTITALK_ADAPTERS=flashtalk``, or ``MULTITALK_MODEL=flashtalk`` without a list, or a folder with nothing
    else). ``ConfigError`` for a name that is not a model, FlashTalk with another adapter, or a default the worker
    cannot serve; ``CheckpointError`` naming each adapter asked for whose file is missing."""
    found = adapters_found(config)
    adapters = config.adapters
    if adapters is None and config.model == FLASHTALK:
        adapters = (FLASHTALK,)  # FlashTalk is never held beside others: asking for it by default is asking for it
    if adapters is not None:
        unknown = [n for n in adapters if n not in MODEL_SPECS]
        if unknown:
            raise ConfigError(
                f"MULTITALK_ADAPTERS: {', '.join(unknown)} is not an audio adapter; choose from "
                f"{', '.join(MODEL_SPECS)}"
            )
        held: list[str] | None = list(dict.fromkeys(adapters))
        if FLASHTALK in held and len(held) > 1:
            others = ", ".join(n for n in held if n != FLASHTALK)
            raise ConfigError(
                f"MULTITALK_ADAPTERS: flashtalk is a transformer of its own (one per process) and cannot be held with "
                f"{others}: run it on a worker of its own (MULTITALK_ADAPTERS=flashtalk)"
            )
        missing = [n for n in held if n not in found]
        if missing:
            raise CheckpointError(
                "MULTITALK_ADAPTERS names "
                + "; ".join(
                    f"{n}, whose weights are not in {config.model_path} (expected {_expected(n, config.model_path)})"
                    for n in missing
                )
                + ": download them (docs/provisioning.md) or leave them out of MULTITALK_ADAPTERS"
            )
    else:  # FlashTalk only when asked for, or when the folder has nothing else
        held = [n for n in found if n != FLASHTALK] or [n for n in found if n == FLASHTALK] or None
    names = held or ["multitalk"]
    if config.model is None:
        default = "multitalk" if "multitalk" in names else FLASHTALK if names == [FLASHTALK] else "infinitetalk"
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


def default_preset_for(model: str, preset: str | None = None) -> str:
    """The preset of a job that names none on a worker whose default model is ``model``: ``MULTITALK_PRESET``
    (``preset``), else ``realtime`` for FlashTalk and ``quality`` for the others. ``ConfigError`` when the preset
    does not fit the model (realtime runs only FlashTalk, FlashTalk runs only realtime); an unknown name is left to
    the speed policy's check (``plan_speed_setup``)."""
    if preset is None:
        return REALTIME if model == FLASHTALK else DEFAULT_PRESET
    if preset not in PRESETS:
        return preset
    runs = PRESETS[preset].model  # None: any model but FlashTalk
    if model == FLASHTALK and runs != FLASHTALK:
        raise ConfigError(
            f"MULTITALK_PRESET={preset} does not fit this worker's model flashtalk, which runs only its distilled "
            f"sampler: set MULTITALK_PRESET={REALTIME} or leave it unset"
        )
    if runs is not None and runs != model:
        others = ", ".join(n for n, p in PRESETS.items() if p.model is None)
        raise ConfigError(
            f"MULTITALK_PRESET={preset} runs model {runs}, but this worker's model is {model}: {runs} needs a worker "
            f"of its own (MULTITALK_ADAPTERS={runs}); here choose {others}"
        )
    return preset


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
