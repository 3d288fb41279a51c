"""Speed LoRAs (lightx2v, FusionX, ...) on the MultiTalk transformer, through diffusers' Wan LoRA loader and PEFT.

The published speed LoRAs use the original Wan key names (``diffusion_model.blocks.N.self_attn.q.lora_down.weight``,
``.alpha``, ``.diff_b`` bias deltas, ``k_img`` / ``v_img`` of the I2V cross-attention, ``.diff`` norm and
modulation deltas); diffusers' ``WanLoraLoaderMixin.lora_state_dict`` converts them to the diffusers names our
transformer shares (the audio layers are MultiTalk's own and no speed LoRA touches them). The LoRA is then a PEFT
adapter named ``"speed"``: switched on and off per job (``set_speed_lora``), or fused into the weights
(``fuse=True``, no per-forward cost, but every job then uses it).

Scaling: diffusers applies ``alpha / rank`` (as ComfyUI does); the official MultiTalk merge ignores ``alpha``, which
is the same whenever ``alpha == rank``. ``.diff`` keys of norms and modulation are dropped by diffusers (they are zero
in the lightx2v files; diffusers logs them).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import CheckpointError, EngineError
from .policy import DEFAULT_SPEED_LORA_SCALE

logger = logging.getLogger(__name__)

ADAPTER = "speed"


def read_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file (original Wan, musubi or diffusers key names) as a diffusers-named state dict."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"speed LoRA {path}: no such file")
    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"speed LoRA {path}: not a safetensors file ({exc})") from exc
    try:
        state = WanLoraLoaderMixin.lora_state_dict(_fold_alpha(raw))
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"speed LoRA {path}: not a Wan LoRA diffusers can read ({exc})") from exc
    if isinstance(state, tuple):  # (state_dict, metadata) in some diffusers paths
        state = state[0]
    if not state:
        raise CheckpointError(f"speed LoRA {path}: no LoRA tensors in it")
    return state


def _fold_alpha(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scale each ``lora_down`` by ``alpha / rank`` and drop the ``alpha`` tensors. diffusers' converter does this
    for block layers only and refuses an ``alpha`` on the others (head, embeddings); folding first treats all alike."""
    out = dict(state)
    for key in [k for k in state if k.endswith(".alpha")]:
        stem = key[: -len(".alpha")]
        alpha = float(out.pop(key))
        for down in (f"{stem}.lora_down.weight", f"{stem}.lora_A.weight"):
            if down in out:
                out[down] = out[down] * (alpha / out[down].shape[0])
    return out


def load_speed_lora(transformer, path: str | Path, scale: float = DEFAULT_SPEED_LORA_SCALE, fuse: bool = False) -> int:
    """Attach the LoRA at ``path`` to ``transformer`` as the ``"speed"`` adapter (weight ``scale``), or fuse it.

    Returns the number of LoRA tensors loaded. Raises ``CheckpointError`` if the file does not fit the model.
    """
    state = read_lora(path)
    dtype = transformer.patch_embedding.weight.dtype  # the compute dtype (a conv: never quantized, never fp32-kept)
    state = {k: v.to(dtype) for k, v in state.items()}
    try:
        transformer.load_lora_adapter(state, adapter_name=ADAPTER, prefix="transformer")
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"speed LoRA {path}: does not fit this transformer ({exc})") from exc
    if fuse:
        transformer.fuse_lora(lora_scale=scale, adapter_names=[ADAPTER])
        transformer.unload_lora()  # keeps the fused weights, drops the PEFT wrappers
    else:
        transformer.set_adapters([ADAPTER], weights=[scale])
        transformer.disable_adapters()  # on only for the jobs that ask for it
    logger.info("speed LoRA %s: %d tensors, scale %g, %s", path, len(state), scale, "fused" if fuse else "adapter")
    return len(state)


def lora_deltas(path: str | Path, scale: float = DEFAULT_SPEED_LORA_SCALE) -> dict[str, torch.Tensor]:
    """The LoRA at ``path`` as weight and bias deltas keyed by the model's parameter names (float32):
    ``W += scale * B @ A`` and ``bias += scale * B.bias``. For weights that cannot host a PEFT adapter with bias
    deltas (torchao fp8): the loader adds them to the bf16 tensors just before each block is quantised."""
    deltas: dict[str, torch.Tensor] = {}
    state = {k.removeprefix("transformer."): v.float() for k, v in read_lora(path).items()}
    for key, down in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        stem = key[: -len(".lora_A.weight")]
        up = state[f"{stem}.lora_B.weight"]
        deltas[f"{stem}.weight"] = scale * (up @ down)
        if f"{stem}.lora_B.bias" in state:
            deltas[f"{stem}.bias"] = scale * state[f"{stem}.lora_B.bias"]
    return deltas


def apply_deltas(module: torch.nn.Module, deltas: dict[str, torch.Tensor], prefix: str = "") -> int:
    """Add the deltas under ``prefix`` (``"blocks.3."``, or ``""`` for all) to ``module``'s parameters, in place;
    returns how many were applied."""
    params = dict(module.named_parameters())
    count = 0
    with torch.no_grad():
        for name, delta in deltas.items():
            if not name.startswith(prefix):
                continue
            local = name[len(prefix) :]
            if local not in params:
                raise CheckpointError(f"speed LoRA: no parameter {name} in the transformer")
            param = params[local]
            param.add_(delta.reshape(param.shape).to(device=param.device, dtype=param.dtype))
            count += 1
    return count


def set_speed_lora(transformer, on: bool, *, loaded: bool, fused: bool) -> None:
    """Switch the speed adapter for the next forwards."""
    if fused:
        if not on:
            raise EngineError("this worker has its speed LoRA fused into the weights: only speed_lora=true jobs run")
        return
    if not loaded:
        if on:
            raise EngineError(
                "no speed LoRA is loaded (set MULTITALK_SPEED_LORA, or call load_speed_lora); the fast preset needs one"
            )
        return
    if on:
        transformer.enable_adapters()
    else:
        transformer.disable_adapters()
