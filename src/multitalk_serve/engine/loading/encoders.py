"""Where the text encoder, the CLIP image encoder and the VAE come from, and how they are built.

Each component is described by a ``ComponentSource``: its architecture (the library config) and an index of its
tensors under the library model's parameter names, from either layout:

- diffusers layout (``Wan2.1-I2V-14B-480P-Diffusers/text_encoder``, ``image_encoder``, ``vae``): config files and
  safetensors, sharded or not;
- original layout (``Wan2.1-I2V-14B-480P/*.pth``, see ``original_layout``): architecture read off the shapes.

``check`` compares a source with the model built on the meta device (no tensor data read: what ``verify`` and
the worker's start-up check run); ``build`` creates the model on the meta device and reads every tensor straight
into its final dtype and device, several at a time (``weights.materialize``): no full copy in host memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from . import original_encoders as orig
from .weights import (
    TensorRef,
    building,
    check_refs,
    empty_weights,
    folder_refs,
    materialize,
    read_json,
    read_pth_header,
)


@dataclass
class ComponentSource:
    kind: str  # "text_encoder", "image_encoder" or "vae"
    layout: str  # "diffusers" or "original"
    path: Path
    config: dict[str, Any]
    refs: dict[str, TensorRef] = field(repr=False)

    @property
    def files(self) -> list[Path]:
        return sorted({r.path for r in self.refs.values()})

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in {(r.path, r.offset): r for r in self.refs.values()}.values())


def _pth(path: Path, kind: str) -> dict[str, TensorRef]:
    if not path.is_file():
        raise CheckpointError(f"missing {kind} checkpoint: {path}")
    return read_pth_header(path)


def text_encoder_source(path: str | Path) -> ComponentSource:
    """UMT5 encoder from a diffusers ``text_encoder`` folder or the original ``models_t5_*.pth``."""
    path = Path(path)
    if path.is_dir():
        config = read_json(path / "config.json")
        refs = folder_refs(path, "model")
        refs = {k: v for k, v in refs.items() if k == "shared.weight" or k.startswith("encoder.")}
        return ComponentSource("text_encoder", "diffusers", path, config, refs)
    refs = _pth(path, "T5 encoder")
    return ComponentSource("text_encoder", "original", path, orig.t5_config(refs), orig.t5_refs(refs))


def image_encoder_source(path: str | Path) -> ComponentSource:
    """CLIP vision tower from a diffusers ``image_encoder`` folder or the original open-clip ``.pth``."""
    path = Path(path)
    if path.is_dir():
        config = read_json(path / "config.json")
        refs = {k: v for k, v in folder_refs(path, "model").items() if k.startswith("vision_model.")}
        return ComponentSource("image_encoder", "diffusers", path, config, refs)
    refs = _pth(path, "CLIP")
    return ComponentSource("image_encoder", "original", path, orig.clip_config(refs), orig.clip_refs(refs))


def vae_source(path: str | Path) -> ComponentSource:
    """Wan VAE from a diffusers ``vae`` folder or the original ``Wan2.1_VAE.pth``."""
    path = Path(path)
    if path.is_dir():
        config = read_json(path / "config.json")
        return ComponentSource("vae", "diffusers", path, config, folder_refs(path, "diffusion_pytorch_model"))
    refs = _pth(path, "VAE")
    config = orig.vae_config(refs)
    return ComponentSource("vae", "original", path, config, orig.vae_refs(refs, config))


def empty_model(source: ComponentSource) -> torch.nn.Module:
    """The library model for ``source`` with its parameters on the meta device (buffers real)."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from ..libraries import quiet_transformers

    config = {k: v for k, v in source.config.items() if not k.startswith("_")}
    with building():
        try:
            with empty_weights(), quiet_transformers():
                if source.kind == "text_encoder":
                    model = UMT5EncoderModel(UMT5Config(**config))
                elif source.kind == "image_encoder":
                    model = CLIPVisionModel(CLIPVisionConfig(**config))
                else:
                    model = AutoencoderKLWan.from_config(config)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source.path}: cannot build the {source.kind} from its config ({exc})") from exc
        if source.kind == "text_encoder":
            # the encoder's embedding *is* ``shared`` (one tensor on disk); tied outside init_empty_weights, whose
            # parameter hook would re-wrap the tied tensor as a new one
            model.tie_weights()
    return model.eval().requires_grad_(False)


def check(source: ComponentSource) -> torch.nn.Module:
    """Every tensor the model needs is present with its shape (nothing read); returns the empty model.

    Sources name CLIP tensors ``vision_model.*`` (as the checkpoints do); recent transformers drop that prefix
    from ``CLIPVisionModel``'s own names, in which case the references are renamed to match."""
    model = empty_model(source)
    if source.kind == "image_encoder" and not hasattr(model, "vision_model"):
        source.refs = {k.removeprefix("vision_model."): v for k, v in source.refs.items()}
    groups: dict[int, list[str]] = {}
    shapes = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
        shapes[name] = tuple(param.shape)
    try:
        check_refs(shapes, source.refs, aliases=groups.values())
    except CheckpointError as exc:
        raise CheckpointError(f"{source.kind} ({source.layout} layout): {exc}") from None
    return model


def _dtype_rule(source: ComponentSource, dtype: torch.dtype) -> Callable[[str], torch.dtype]:
    if source.kind == "text_encoder" and dtype == torch.float16:
        # as transformers does for T5 in fp16: the output projections of the feed-forwards stay in fp32
        return lambda key: torch.float32 if ".wo." in key else dtype
    return lambda key: dtype


def build(
    source: ComponentSource, dtype: torch.dtype, device: str | torch.device = "cpu", workers: int = 4
) -> torch.nn.Module:
    """The model with every tensor read into ``dtype`` on ``device``."""
    model = check(source)
    materialize(model, source.refs, dtype=_dtype_rule(source, dtype), device=device, workers=workers)
    return model
