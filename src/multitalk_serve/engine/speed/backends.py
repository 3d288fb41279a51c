"""Attention kernel choice: the fastest backend that is installed, suits the GPU and passes a probe; SDPA otherwise.

Every attention call of the model (self, text/image cross, audio, reference map) goes through diffusers'
``dispatch_attention_fn``, so one ``transformer.set_attention_backend(name)`` switches them all. ``auto`` tries, in
order: FlashAttention 3 (``flash_attn_interface``, Hopper), SageAttention (``sageattention``, Ampere or newer),
FlashAttention 2 (``flash_attn``, Ampere or newer), then PyTorch SDPA (``native``, always there). A candidate must
pass a probe on the device (one small attention call, compared with SDPA) before it is used; a kernel that fails
later, during a job, is replaced by SDPA and the forward is retried (``MultiTalkPipeline._predict``): a fast kernel
never fails a job.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

NATIVE = "native"
# (backend, python module that provides it, minimum CUDA compute capability, maximum (exclusive) or None)
CANDIDATES = (
    ("_flash_3", "flash_attn_interface", (9, 0), (10, 0)),
    ("sage", "sageattention", (8, 0), None),
    ("flash", "flash_attn", (8, 0), None),
)
PROBE_TOLERANCE = 0.05  # Sage quantises q/k to int8: a few 1e-3 off SDPA on the probe; a broken kernel is O(1)


def installed_backends(device: torch.device) -> list[str]:
    """Backends worth trying on ``device``, fastest first; always ends with ``native``."""
    found = []
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        for name, module, low, high in CANDIDATES:
            if capability < low or (high is not None and capability >= high):
                continue
            if importlib.util.find_spec(module) is not None:
                found.append(name)
    return [*found, NATIVE]


def probe(backend: str, device: torch.device, dtype: torch.dtype) -> float:
    """Largest difference between ``backend`` and SDPA on one small attention call (raises if the kernel fails)."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, 256, 2, 128, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    out = dispatch_attention_fn(q, k, v, backend=backend)
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    return float((out.float() - ref.float()).abs().max())


def choose_attention_backend(
    transformer, device: torch.device, dtype: torch.dtype, requested: str = "auto"
) -> tuple[str, list[str]]:
    """Set the first backend of ``requested`` ("auto" or a diffusers backend name) that works; return it and the
    reasons the others were passed over (for the logs and the worker's warnings)."""
    candidates = installed_backends(device) if requested == "auto" else [requested, NATIVE]
    skipped = []
    quiet = logging.getLogger("diffusers.models.modeling_utils")  # "attention backends are experimental", each call
    level = quiet.level
    for name in dict.fromkeys(candidates):
        try:
            quiet.setLevel(logging.ERROR)
            try:
                transformer.set_attention_backend(name)
            finally:
                quiet.setLevel(level)
            error = probe(name, device, dtype)
            if error > PROBE_TOLERANCE:
                raise RuntimeError(f"probe differs from SDPA by {error:.3g}")
            logger.info("attention backend: %s", name)
            return name, skipped
        except Exception as exc:
            skipped.append(f"attention backend {name} not used: {exc}")
            logger.warning(skipped[-1])
    raise RuntimeError("no attention backend works, not even PyTorch SDPA: " + "; ".join(skipped))


def is_kernel_failure(exc: BaseException) -> bool:
    """An error a different attention kernel might not have (not out-of-memory, not one of our input errors)."""
    from ..errors import EngineError

    if isinstance(exc, torch.OutOfMemoryError | EngineError):
        return False
    return isinstance(exc, RuntimeError | ImportError | NotImplementedError | ValueError | TypeError)
