"""The dtype names users write (CLI ``--dtype``, the worker's ``MULTITALK_DTYPE``), in one table."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on a GPU (the production dtype), fp32 on a CPU (tests compare in fp32; bf16 is slow without AMX)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
