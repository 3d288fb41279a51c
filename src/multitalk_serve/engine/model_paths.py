"""Where each component lives in a model directory.

A model root may be laid out like the tiny models and the provisioning profiles::

    ROOT/Wan2.1-I2V-14B-480P-Diffusers/   text encoder, tokenizer, CLIP, VAE (and a transformer)
    ROOT/Wan2.1-I2V-14B-480P/             original-layout transformer (optional)
    ROOT/*.gguf                           a GGUF transformer (optional)
    ROOT/MeiGen-MultiTalk/multitalk.safetensors
    ROOT/chinese-wav2vec2-base/

or ROOT may itself be the ``-Diffusers`` folder. Explicit paths override what is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoints import MODEL_INDEX_NAME, MULTITALK_WEIGHTS_NAME
from .errors import CheckpointError

ENCODER_FOLDERS = ("text_encoder", "tokenizer", "image_encoder", "image_processor", "vae")


@dataclass(frozen=True)
class ModelPaths:
    diffusers: Path  # folder with model_index.json: the encoders and the VAE
    transformer: Path  # any layout load_transformer accepts
    multitalk: Path | None
    wav2vec: Path


def _find_diffusers(root: Path) -> Path | None:
    if (root / MODEL_INDEX_NAME).is_file():
        return root
    found = sorted(p.parent for p in root.glob(f"*/{MODEL_INDEX_NAME}"))
    return found[0] if found else None


def resolve_model_paths(
    root: str | Path,
    *,
    transformer: str | Path | None = None,
    multitalk: str | Path | None = None,
    wav2vec: str | Path | None = None,
) -> ModelPaths:
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"model directory does not exist: {root}")
    diffusers = _find_diffusers(root)
    if diffusers is None:
        raise CheckpointError(
            f"{root}: no diffusers-layout folder (model_index.json) for the text encoder, CLIP and VAE "
            "(Wan-AI/Wan2.1-I2V-14B-480P-Diffusers); the original layout's .pth encoders are not supported yet"
        )
    missing = [name for name in ENCODER_FOLDERS if not (diffusers / name).is_dir()]
    if missing:
        raise CheckpointError(f"{diffusers}: missing component folders: {', '.join(missing)}")
    if multitalk is None:
        candidate = root / "MeiGen-MultiTalk" / MULTITALK_WEIGHTS_NAME
        multitalk = candidate if candidate.is_file() else None
    if wav2vec is None:
        wav2vec = root / "chinese-wav2vec2-base"
        if not (wav2vec / "config.json").is_file():
            raise CheckpointError(f"{root}: no chinese-wav2vec2-base folder (TencentGameMate/chinese-wav2vec2-base)")
    return ModelPaths(
        diffusers=diffusers,
        transformer=Path(transformer) if transformer is not None else diffusers,
        multitalk=Path(multitalk) if multitalk is not None else None,
        wav2vec=Path(wav2vec),
    )
