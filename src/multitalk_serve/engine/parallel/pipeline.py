"""One job on N processes: every rank runs the same ``MultiTalkPipeline`` code on the same inputs and options (so the
same seed), and only the transformer's forward is split across the ranks (context parallel).

Why this design: the transformer is where the time goes (a 480p window is 40 steps x 1-3 passes of ~32k tokens;
the encoders run once a job, the VAE once a window), and with every rank running the whole loop there is no second
code path to keep equal to the one-process pipeline, no state to ship between ranks, and each rank's output is the
job's output (rank 0 keeps it; the others may discard it). The price: every rank holds and runs the encoders and the
VAE (memory on each GPU; no slow-down, they run at the same time).

The ranks must feed the transformer the same tensors. They do when the encoders are deterministic, but a GPU kernel
picked differently on one rank would silently mix two different sequences in the attention, so every forward takes
rank 0's inputs (one broadcast per input tensor, a few MB at 480p against the all-to-alls of 40 blocks).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .context import enable_context_parallel


def _rank0_inputs(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    def synced(value):
        if not isinstance(value, torch.Tensor):
            return value
        value = value.clone()  # never overwrite the caller's tensor (it may be a view of the sampler's state)
        dist.broadcast(value, src=0)
        return value

    return tuple(synced(a) for a in args), {k: synced(v) for k, v in kwargs.items()}


def enable_pipeline_parallel(pipe, *, anything: bool = True) -> None:
    """Split ``pipe``'s transformer forward across the ranks of the default process group (call it in every rank).

    ``anything``: shards of unequal length, so that every resolution bucket and head count works whatever the
    number of ranks (diffusers' "Ulysses anything"); False is plain Ulysses (tokens and heads must divide).
    If the pipeline's attention kernel has no context-parallel form in diffusers, it switches to PyTorch SDPA
    (noted in ``pipe.notes``).
    """
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    from ..speed.backends import NATIVE, choose_attention_backend

    backend = AttentionBackendName(pipe.attention_backend)
    if not _AttentionBackendRegistry._is_context_parallel_available(backend):
        pipe.attention_backend, _ = choose_attention_backend(pipe.transformer, pipe.device, pipe.dtype, NATIVE)
        pipe.notes.append(f"attention backend {backend.value} has no context-parallel form: PyTorch SDPA instead")
    enable_context_parallel(pipe.transformer, anything=anything)
    pipe.transformer.register_forward_pre_hook(_rank0_inputs, with_kwargs=True)
