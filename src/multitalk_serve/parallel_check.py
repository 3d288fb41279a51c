"""The transformer forward with context parallelism on N ranks, against one process: for the tests and the bench.

Each rank builds the same deterministic model (``tiny._randomize``, or ``forward_check.random_model`` at a real
size), turns on context parallelism, and runs the same inputs; every rank returns the full output.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import torch

from .engine.loading.adapters import AUDIO_ADAPTERS, apply_spec
from .engine.loading.layouts import WanDims
from .engine.models.transformer import MultiTalkTransformer3DModel
from .forward_check import random_inputs


@dataclass(frozen=True)
class Case:
    """One forward: speakers, adapter numerics, video shape (pixels), uneven shards (``anything``)."""

    speakers: int = 1
    adapter: str = "multitalk"  # or an InfiniteTalk name: the same model with audio_norm_fp32
    frames: int = 9
    height: int = 64
    width: int = 96
    anything: bool = False
    seed: int = 0
    step_cache: bool = False  # two forwards with TeaCache, the second reusing the first's residual


def tiny_model(dims: WanDims, adapter: str = "multitalk", seed: int = 5) -> MultiTalkTransformer3DModel:
    from .tiny import _randomize

    torch.manual_seed(0)
    model = MultiTalkTransformer3DModel(**dims.model_kwargs()).eval()
    _randomize(model, seed=seed)
    apply_spec(model, AUDIO_ADAPTERS[adapter], adapter)
    return model


@torch.no_grad()
def forward(model: MultiTalkTransformer3DModel, case: Case) -> torch.Tensor:
    inputs = random_inputs(model, case.speakers, case.frames, case.height, case.width, torch.float32, "cpu", case.seed)
    if case.speakers == 1:
        inputs.pop("ref_masks")
    if not case.step_cache:
        return model(**inputs, return_dict=False)[0]
    from .engine.speed.step_cache import StepCache

    cache = StepCache(threshold=5.0, warmup_steps=0)
    outputs = []
    for step, t in enumerate((900.0, 900.0)):  # no change of the modulation: the second reuses
        cache.select("cond", step)
        inputs["timestep"] = torch.tensor([t])
        outputs.append(model(**inputs, step_cache=cache, return_dict=False)[0])
    if (cache.computed, cache.skipped) != (1, 1):
        raise AssertionError(f"expected one computed and one reused forward, got {cache.summary}")
    return torch.stack(outputs)


def reference(dims: WanDims, cases: list[Case]) -> list[torch.Tensor]:
    """Every case in this one process, no parallelism."""
    return [forward(tiny_model(dims, case.adapter), case) for case in cases]


def _fail_in_block(rank: int, block: int, how: str):
    def hook(module, args, kwargs):
        if how == "kill":  # as the OOM killer or a lost GPU would: no exception, no report
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure in rank {rank}, block {block}")

    return hook


def rank_forward(
    rank: int, world: int, dims: WanDims, cases: list[Case], fail: tuple[int, int, str] | None = None
) -> dict[str, list]:
    """On one rank: every case with context parallelism (one model per case). Returns the outputs and the number of
    tokens each block saw on this rank. ``fail=(rank, block, how)``: that rank fails inside that block's forward,
    mid-forward, while the others wait in its collectives; ``how`` is "raise" or "kill" (SIGKILL itself)."""
    from .engine.parallel import enable_context_parallel

    outputs, block_tokens = [], []
    for case in cases:
        model = tiny_model(dims, case.adapter)
        enable_context_parallel(model, anything=case.anything)
        seen: list[int] = []
        model.blocks[0].register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[0].shape[1]))
        if fail is not None and fail[0] == rank:
            model.blocks[fail[1]].register_forward_pre_hook(_fail_in_block(*fail), with_kwargs=True)
        outputs.append(forward(model, case))
        block_tokens.append(seen[0])
    return {"outputs": outputs, "block_tokens": block_tokens}


@torch.no_grad()
def rank_timing(
    rank: int, world: int, dims: WanDims, case: Case, dtype: str, repeats: int, backend: str | None = None
) -> dict:
    """On one rank: seconds per forward of a random model of ``dims`` (context parallel when world > 1). On CPU each
    rank computes with ``cores / world`` threads, so that N ranks share the machine as one process does."""
    import torch.distributed as dist

    from .engine.parallel import enable_context_parallel
    from .forward_check import random_model

    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    model = random_model(dims, getattr(torch, dtype), device, seed=0)
    if backend:
        model.set_attention_backend(backend)
    if world > 1:
        enable_context_parallel(model, anything=case.anything)
    inputs = random_inputs(model, case.speakers, case.frames, case.height, case.width, model.dtype, device, case.seed)
    if case.speakers == 1:
        inputs.pop("ref_masks")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if world > 1:
            dist.barrier()

    out = model(**inputs, return_dict=False)[0]  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = model(**inputs, return_dict=False)[0]
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return {
        "seconds": times,
        "output": out.float().cpu() if rank == 0 else None,
        "peak_bytes": peak,
        "threads": torch.get_num_threads(),
    }


def generate_frames(pipe, image, audio: list, options) -> torch.Tensor:
    """Every frame of one job ``[3, n, H, W]``, the pipeline's own loop (prepare -> frames)."""
    job = pipe.prepare(image, audio, "a person talks", options=options)
    return torch.cat(list(pipe.frames(job)), dim=1)


def rank_generate(rank: int, world: int, pipe, jobs: list[tuple]) -> list[torch.Tensor]:
    """On one rank: ``pipe`` (every rank loads the same one) with its transformer split across the ranks runs every
    job ``(image, audio, options)``. With the "fork" launcher the pipeline is the caller's, shared copy-on-write."""
    from .engine.parallel.pipeline import enable_pipeline_parallel

    enable_pipeline_parallel(pipe)
    return [generate_frames(pipe, *job) for job in jobs]
