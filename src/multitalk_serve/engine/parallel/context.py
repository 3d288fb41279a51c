"""Context parallelism for the MultiTalk transformer, on diffusers' machinery.

``enable_context_parallel(model)`` in every rank of an initialised process group:

- builds diffusers' ``ContextParallelConfig`` (Ulysses over all ranks by default) and calls
  ``model.enable_parallelism``: the device mesh, every attention processor's ``_parallel_config`` (so each
  self-attention runs as Ulysses all-to-all or ring through ``dispatch_attention_fn``), and the hooks of the model's
  ``_cp_plan`` (RoPE tables split like the tokens, the output head gathers);
- the model's own forward splits the tokens after the patch embedding and tells each block where its tokens sit
  (``models/context_parallel.py``): the audio attention per latent frame, the reference keys of frame 0 and the
  global min/max of label RoPE.

Every rank calls the model with the same full inputs; every rank gets the full output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from diffusers.models._modeling_parallel import ContextParallelConfig

Mode = Literal["ulysses", "ring"]


@contextlib.contextmanager
def _cpu_device_count() -> Iterator[None]:
    """diffusers 0.42.1 picks the rank's device as ``rank % torch.accelerator.device_count()``, which divides by zero
    on a host without an accelerator (CPU / gloo). There the device is the CPU whatever the index: count one."""
    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.accelerator.device_count = original  # type: ignore[assignment]


def context_parallel_config(world: int, mode: Mode = "ulysses", anything: bool = False) -> ContextParallelConfig:
    """diffusers' config for ``world`` ranks. ``anything``: shards of unequal length (a token count or head count
    that does not divide by ``world``), at the cost of one small all-gather of sizes per attention."""
    from diffusers.models._modeling_parallel import ContextParallelConfig

    if mode == "ulysses":
        return ContextParallelConfig(ulysses_degree=world, ulysses_anything=anything)
    if mode == "ring":
        return ContextParallelConfig(ring_degree=world, ring_anything=anything)
    raise ValueError(f"unknown context parallel mode {mode!r}: ulysses or ring")


def enable_context_parallel(
    model: torch.nn.Module, *, mode: Mode = "ulysses", anything: bool = False
) -> ContextParallelConfig:
    """Run ``model`` (a ``MultiTalkTransformer3DModel``) with context parallelism over the default process group.

    Call it in every rank, after ``torch.distributed.init_process_group`` and after the model is on its device with
    its attention backend set. Ulysses needs the head count to divide by the number of ranks (40 heads: 2, 4, 5, 8
    GPUs) unless ``anything``; ring needs a backend that returns the log-sum-exp (flash, cuDNN; not the native CPU
    one). Returns the config (its ``_world_size`` and mesh are set).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("context parallel needs torch.distributed.init_process_group first")
    world = dist.get_world_size()
    if world < 2:
        raise ValueError("context parallel needs at least 2 ranks")
    heads = model.config.num_attention_heads
    if mode == "ulysses" and not anything and heads % world:
        raise ValueError(f"Ulysses splits the {heads} heads across ranks: {world} ranks do not divide them")
    config = context_parallel_config(world, mode, anything)
    with _cpu_device_count():
        model.enable_parallelism(config=config)
    return config
