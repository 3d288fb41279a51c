"""GPU memory: fp8 weights, offloading, and a planner that picks what fits the GPU.

Weight formats of the transformer (the 14B DiT + MultiTalk's audio layers, 18.9 B parameters):

- ``bf16``: 37.8 GB.
- ``fp8``: every linear of the 40 blocks (attention, feed-forward, audio attention: 98 % of the parameters) stored
  as float8 e4m3 with one scale per output row (torchao ``Float8Tensor``), the rest bf16: 19.2 GB. On GPUs with fp8
  tensor cores (compute capability 8.9+: L4, L40S, RTX 4090, H100, H200) the activations are quantised per row too
  and the matmuls run in fp8 (``Float8DynamicActivationFloat8WeightConfig``); elsewhere the weights are widened to
  bf16 for each matmul (``Float8WeightOnlyConfig``: memory only). Blocks are quantised as they load, so loading never
  holds the bf16 model on the GPU.
- ``gguf``: a GGUF file chosen with ``MULTITALK_TRANSFORMER`` (Q8_0 22.4 GB, Q4_K_M 15.2 GB with the audio layers).

Placement: the T5 text encoder (11.4 GB) can live in host memory and visit the GPU per prompt (``T5TextEncoder.
offload``); the transformer can be group-offloaded (diffusers ``enable_group_offload``: block by block, the next
block copied on a side CUDA stream while the current one computes).

The planner's figures are estimates from parameter counts plus an activation allowance per resolution; they were
not measured on a GPU here (docs/benchmarks.md).

FlashTalk (``plan_resolution="flashtalk"``, what ``MultiTalkPipeline.from_pretrained(adapters=["flashtalk"])``
plans for): the same 14B transformer with the audio layers (same parameter count, so the same weight formats),
smaller jobs: a window is 33 frames at 768x448 (9 latent frames of 48x28 tokens = 12,096 tokens, against 32,760
for an 81-frame 480p clip), one forward per step, one speaker. Its workspace is the 480p allowance scaled by the
tokens (3.7 GB), rounded up to 5 GB for the allocator's slack and the streaming audio buffers: bf16 56.3 GB,
bf16+t5-offload 52.3 GB, fp8 37.7 GB, fp8+t5-offload 33.7 GB, fp8+t5-offload+group-offload 16.5 GB (estimates,
not measured). Its authors state "more than 64G of VRAM" on one GPU and 40 GB with their ``--cpu_offload`` (README
of Soul-AILab/SoulX-FlashTalk): their process also holds CLIP's text tower (fp16, 1.1 GB more), compiles the model
and the VAE with ``torch.compile``, and their offload moves the whole transformer onto the GPU for the sampling
loop and everything else off it (a plan we do not have: 37.8 GB of bf16 weights + the window's activations).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import EngineError

logger = logging.getLogger(__name__)

GB = 1e9
WEIGHT_FORMATS = ("bf16", "fp8", "gguf")
# Parameters of the published components (counted from the real checkpoints' headers).
TRANSFORMER_PARAMS = 16_394_878_784 + 2_487_168_000
BLOCK_LINEAR_PARAMS = 40 * (10 * 5120 * 5120 + 2 * 5120 * 13824 + 5120 * 5120 * 2 + 768 * 2 * 5120)
T5_BYTES = 5_680_910_336 * 2
OTHER_BYTES = 632_076_800 * 2 + 126_892_531 * 4 + 95_044_608 * 4  # CLIP vision bf16, VAE and wav2vec2 fp32
# Activations, the VAE decode of one 81-frame clip and the allocator's slack, beyond the weights (GB). "flashtalk": one
# 33-frame 768x448 window (12,096 tokens: 0.37x a 480p clip's 32,760, so 3.7 GB scaled) rounded up to 5 GB.
WORKSPACE_GB = {"480p": 10.0, "720p": 22.0, "flashtalk": 5.0}
PLAN_RESOLUTIONS = tuple(WORKSPACE_GB)  # what ``plan_memory`` / ``parse_plan`` plan for
GROUP_OFFLOAD_RESIDENT_GB = 2.0  # two blocks in flight + the non-block layers


def transformer_bytes(weights: str, gguf_bytes: int | None = None) -> float:
    if weights == "bf16":
        return TRANSFORMER_PARAMS * 2
    if weights == "fp8":
        return BLOCK_LINEAR_PARAMS * 1 + (TRANSFORMER_PARAMS - BLOCK_LINEAR_PARAMS) * 2
    if weights == "gguf":
        if gguf_bytes is None:
            raise EngineError("the gguf weight format needs the GGUF file's size")
        return gguf_bytes + 2_487_168_000 * 2  # the audio layers stay bf16
    raise EngineError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")


@dataclass(frozen=True)
class MemoryPlan:
    weights: str  # "bf16", "fp8" or "gguf"
    offload_text_encoder: bool
    group_offload: bool
    gpu_gb: float  # estimated peak GPU memory for a job at the planned resolution

    @property
    def name(self) -> str:
        parts = [self.weights]
        if self.offload_text_encoder:
            parts.append("t5-offload")
        if self.group_offload:
            parts.append("group-offload")
        return "+".join(parts)


def estimate_gb(
    weights: str, offload_text_encoder: bool, group_offload: bool, resolution: str, gguf_bytes: int | None = None
) -> float:
    """Peak GPU memory of one job (weights resident + the T5 visiting if offloaded + the workspace). ``resolution``:
    ``480p``, ``720p`` or ``flashtalk`` (a FlashTalk window; others are planned as 720p)."""
    dit = transformer_bytes(weights, gguf_bytes) / GB
    resident = GROUP_OFFLOAD_RESIDENT_GB if group_offload else dit
    workspace = WORKSPACE_GB.get(resolution, WORKSPACE_GB["720p"])
    t5 = T5_BYTES / GB
    others = OTHER_BYTES / GB
    if offload_text_encoder:  # the T5 is on the GPU only while the prompt is encoded, before sampling
        return resident + others + max(workspace, t5 + 1.0)
    return resident + others + t5 + workspace


def plan_memory(
    gpu_bytes: int, resolution: str = "480p", weights: str | None = None, gguf_bytes: int | None = None
) -> MemoryPlan:
    """The fastest plan that fits ``gpu_bytes`` (95 % usable), trying in order: everything resident; the T5 offloaded;
    fp8 weights (unless ``weights`` fixes the format); fp8 (or the fixed format) with group offload. ``resolution``:
    the largest job planned for, ``480p``, ``720p`` or ``flashtalk`` (FlashTalk's windows)."""
    formats = [weights] if weights else ["bf16", "fp8"]
    options = [(w, t5, False) for w in formats for t5 in (False, True)]
    options += [(formats[-1], True, True)]
    usable = gpu_bytes * 0.95 / GB
    for w, t5, group in options:
        need = estimate_gb(w, t5, group, resolution, gguf_bytes)
        if need <= usable:
            return MemoryPlan(w, t5, group, round(need, 1))
    w, t5, group = options[-1]
    need = estimate_gb(w, t5, group, resolution, gguf_bytes)
    raise EngineError(
        f"a {resolution} job needs about {need:.0f} GB of GPU memory even with {w} weights, the text encoder and the "
        f"transformer offloaded; this GPU has {gpu_bytes / GB:.0f} GB"
    )


def parse_plan(text: str, resolution: str = "480p", gguf_bytes: int | None = None) -> MemoryPlan:
    """``MULTITALK_MEMORY_PLAN`` as written by ``MemoryPlan.name``: e.g. ``bf16``, ``fp8+t5-offload``,
    ``fp8+t5-offload+group-offload``."""
    parts = [p.strip() for p in text.lower().split("+") if p.strip()]
    if not parts or parts[0] not in WEIGHT_FORMATS or not set(parts[1:]) <= {"t5-offload", "group-offload"}:
        raise EngineError(
            f"memory plan {text!r}: expected <bf16|fp8|gguf>[+t5-offload][+group-offload], e.g. fp8+t5-offload"
        )
    t5, group = "t5-offload" in parts, "group-offload" in parts
    return MemoryPlan(parts[0], t5, group, round(estimate_gb(parts[0], t5, group, resolution, gguf_bytes), 1))


# --- fp8 ------------------------------------------------------------------------------------------------------
def fp8_config(device: torch.device):
    """torchao's fp8 scheme for ``device``: fp8 matmuls where the GPU has fp8 tensor cores, weight-only elsewhere."""
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Float8WeightOnlyConfig,
            PerRow,
        )
    except ImportError as exc:
        raise EngineError("fp8 weights need torchao (pip install 'multitalk-serve[fp8]')") from exc
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9):
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    return Float8WeightOnlyConfig()


def quantize_block_fp8(block: torch.nn.Module, config) -> None:
    """Store every linear of ``block`` in fp8 (in place); norms and everything else stay as they are."""
    from torchao.quantization import quantize_

    quantize_(block, config, filter_fn=lambda module, _name: isinstance(module, torch.nn.Linear))


def is_fp8(module: torch.nn.Module) -> bool:
    """Whether a linear's weight is stored in fp8 by torchao."""
    weight = getattr(module, "weight", None)
    return weight is not None and "float8" in type(weight).__name__.lower()


# --- offload --------------------------------------------------------------------------------------------------
def group_offload(transformer, device: torch.device, blocks_per_group: int = 1) -> None:
    """Keep the transformer's weights in host memory and stream them block by block to ``device`` (diffusers'
    group offloading; with CUDA the next group is copied on a side stream while the current one computes)."""
    use_stream = device.type == "cuda"
    transformer.enable_group_offload(
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=blocks_per_group,
        use_stream=use_stream,
    )
    logger.info("transformer group offload: %d block(s) per group, stream=%s", blocks_per_group, use_stream)
