"""Download profiles: which files of which Hugging Face repositories make a working model directory.

Every profile holds everything a worker needs (transformer, MultiTalk audio layers, T5, CLIP, VAE, wav2vec2) and
fits well under a 100 GB network volume. Sizes below are computed from parameter counts (``estimate``); the
exact byte counts come from the Hub when you run ``download --dry-run``.

- ``bf16``: the diffusers-layout Wan2.1-I2V-14B-480P + MeiGen-MultiTalk + chinese-wav2vec2-base. The published
  diffusers weights are float32 (about 91 GB); each float32 safetensors file is converted to bfloat16 as soon as
  it is downloaded and verified (the dtype every GPU runs it in: the same numbers the loader would produce by
  casting at load time), so the volume holds half the bytes and a cold start reads half as much.
- ``official``: the original Wan layout as MultiTalk's README has users download it (bf16 transformer shards,
  ``.pth`` encoders), unchanged, + MeiGen-MultiTalk + chinese-wav2vec2-base.
- ``gguf-q8`` / ``gguf-q4``: city96's GGUF transformer (Q8_0 / Q4_K_M) with the diffusers encoders and the
  MultiTalk layers in bfloat16: the smallest download and the least GPU memory for the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..engine.loading.layouts import WanDims, multitalk_shapes, original_base_shapes
from ..engine.loading.original_encoders import CLIP_CHECKPOINT, T5_CHECKPOINT, T5_TOKENIZER, VAE_CHECKPOINT
from ..engine.loading.paths import DIFFUSERS_DIR, MULTITALK_DIR, ORIGINAL_DIR, WAV2VEC_DIR

DIFFUSERS_REPO = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
ORIGINAL_REPO = "Wan-AI/Wan2.1-I2V-14B-480P"
GGUF_REPO = "city96/Wan2.1-I2V-14B-480P-gguf"
MULTITALK_REPO = "MeiGen-AI/MeiGen-MultiTalk"
WAV2VEC_REPO = "TencentGameMate/chinese-wav2vec2-base"
GGUF_FILES = {"Q8_0": "wan2.1-i2v-14b-480p-Q8_0.gguf", "Q4_K_M": "wan2.1-i2v-14b-480p-Q4_K_M.gguf"}
# The lightx2v I2V 480p step-distillation LoRA (4 steps, no text guidance) as Kijai republished it; the file
# diffusers' Wan LoRA loader was tested with (diffusers PR #12040). The worker finds it at MODEL_PATH/Lightx2v/.
SPEED_LORA_REPO = "Kijai/WanVideo_comfy"
SPEED_LORA_FILE = "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank128_bf16.safetensors"
SPEED_LORA_GB = 1.44  # rank 128 over the 40 blocks' attention and FFN linears, bf16
ENCODERS = ("text_encoder", "tokenizer", "image_encoder", "image_processor", "vae")


@dataclass(frozen=True)
class Fetch:
    """Files of one repository revision, stored under ``folder`` of the model root (``""``: the root)."""

    repo_id: str
    folder: str
    include: tuple[str, ...]  # fnmatch patterns of repository paths; each must match at least one file
    revision: str = "main"
    to_bf16: tuple[str, ...] = ()  # float32 safetensors stored as bfloat16 once verified
    components: tuple[tuple[str, str], ...] = ()  # (component, path inside ``folder``)


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    fetches: tuple[Fetch, ...]

    def components(self) -> dict[str, tuple[Fetch, str]]:
        """Component name -> (the fetch that provides it, its path inside the fetch's folder)."""
        return {name: (f, path) for f in self.fetches for name, path in f.components}


def _multitalk(bf16: bool) -> Fetch:
    return Fetch(
        MULTITALK_REPO,
        MULTITALK_DIR,
        include=("multitalk.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
        to_bf16=("multitalk.safetensors",) if bf16 else (),
        components=(("multitalk", "multitalk.safetensors"),),
    )


# chinese-wav2vec2-base: configs from main, safetensors weights from the PR branch (as MultiTalk's README does).
WAV2VEC = (
    Fetch(
        WAV2VEC_REPO, WAV2VEC_DIR, include=("config.json", "preprocessor_config.json"), components=(("wav2vec", ""),)
    ),
    Fetch(WAV2VEC_REPO, WAV2VEC_DIR, include=("model.safetensors",), revision="refs/pr/1"),
)


def _diffusers(with_transformer: bool) -> Fetch:
    parts = (*ENCODERS, "scheduler") + (("transformer",) if with_transformer else ())
    return Fetch(
        DIFFUSERS_REPO,
        DIFFUSERS_DIR,
        include=("model_index.json", *(f"{p}/*" for p in parts)),
        to_bf16=tuple(f"{p}/*.safetensors" for p in ("transformer", "text_encoder", "image_encoder")),
        components=tuple((p, p) for p in ENCODERS) + ((("transformer", "transformer"),) if with_transformer else ()),
    )


def _gguf(profile: str, quant: str) -> Profile:
    name = GGUF_FILES[quant]
    return Profile(
        profile,
        f"city96's {quant} GGUF transformer, diffusers encoders and MultiTalk layers in bf16 (CLIP fp16)",
        (
            Fetch(GGUF_REPO, "", include=(name,), components=(("transformer", name),)),
            _diffusers(False),
            _multitalk(True),
            *WAV2VEC,
        ),
    )


PROFILES: dict[str, Profile] = {
    "bf16": Profile(
        "bf16",
        "diffusers layout, float32 files stored as bf16 (CLIP as fp16)",
        (_diffusers(True), _multitalk(True), *WAV2VEC),
    ),
    "official": Profile(
        "official",
        "the original Wan layout, as MultiTalk users already have it (bf16 shards, .pth encoders)",
        (
            Fetch(
                ORIGINAL_REPO,
                ORIGINAL_DIR,
                include=(
                    "config.json",
                    "diffusion_pytorch_model*.safetensors",
                    "diffusion_pytorch_model.safetensors.index.json",
                    T5_CHECKPOINT,
                    CLIP_CHECKPOINT,
                    VAE_CHECKPOINT,
                    f"{T5_TOKENIZER}/*",
                ),
                components=(
                    ("transformer", ""),
                    ("text_encoder", T5_CHECKPOINT),
                    ("tokenizer", T5_TOKENIZER),
                    ("image_encoder", CLIP_CHECKPOINT),
                    ("vae", VAE_CHECKPOINT),
                ),
            ),
            _multitalk(False),
            *WAV2VEC,
        ),
    ),
    "gguf-q8": _gguf("gguf-q8", "Q8_0"),
    "gguf-q4": _gguf("gguf-q4", "Q4_K_M"),
}


def with_speed_lora(profile: Profile) -> Profile:
    """``profile`` plus the speed LoRA for ``preset: fast`` (``download --speed-lora``)."""
    lora = Fetch(SPEED_LORA_REPO, "", include=(SPEED_LORA_FILE,))
    return Profile(
        f"{profile.name}+speed-lora", f"{profile.summary}; + the lightx2v speed LoRA", (*profile.fetches, lora)
    )


# --- sizes ---------------------------------------------------------------------------------------------------------
# Parameter counts of the published models (checked against the official classes and the library models in
# tests/test_provision_profiles.py).
T5_ENCODER_PARAMS = 5_680_910_336  # UMT5-XXL encoder
CLIP_VISION_PARAMS = 632_076_800  # ViT-H/14 vision tower + 1280x1024 projection
CLIP_TEXT_PARAMS = 560_937_985  # the open-clip checkpoint's XLM-RoBERTa text tower + head + log_scale
VAE_PARAMS = 126_892_531
WAV2VEC_PARAMS = 95_044_608  # wav2vec2-base with its pre-training heads, as the checkpoint stores it
GB = 1e9


def transformer_params(dims: WanDims | None = None) -> tuple[int, int]:
    """(base Wan2.1 I2V parameters, MultiTalk audio-layer parameters)."""
    dims = dims or WanDims()
    base = sum(math.prod(s) for s in original_base_shapes(dims).values())
    return base, sum(math.prod(s) for s in multitalk_shapes(dims).values())


def gguf_bytes(quant: str, dims: WanDims | None = None) -> int:
    """Tensor bytes of a community GGUF of the base transformer (tensor types as ``engine.gguf_quant``)."""
    import gguf

    from ..engine.loading.gguf_quant import tensor_type

    total = 0
    for name, shape in original_base_shapes(dims or WanDims()).items():
        block, size = gguf.GGML_QUANT_SIZES[tensor_type(name, shape, quant)]
        total += math.prod(shape) // block * size
    return total


@dataclass
class Estimate:
    profile: str
    download_gb: float  # bytes transferred
    disk_gb: float  # bytes kept on the volume
    transformer_gb: float  # transformer + MultiTalk layers, as loaded on the GPU
    encoders_gb: float  # T5 (bf16) + CLIP (bf16) + VAE (fp32) + wav2vec2 (fp32) on the GPU

    @property
    def gpu_weights_gb(self) -> float:
        return self.transformer_gb + self.encoders_gb


def estimate(name: str) -> Estimate:
    """Sizes of a profile, from parameter counts (the Hub's exact byte counts: ``download --dry-run``)."""
    base, audio = transformer_params()
    on_gpu_encoders = (T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 2 + (VAE_PARAMS + WAV2VEC_PARAMS) * 4
    small = VAE_PARAMS * 4 + WAV2VEC_PARAMS * 4
    if name == "bf16":
        download = (base + audio + T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 4 + small
        disk = (base + audio + T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 2 + small
        transformer = (base + audio) * 2
    elif name == "official":
        download = disk = base * 2 + T5_ENCODER_PARAMS * 2 + (CLIP_VISION_PARAMS + CLIP_TEXT_PARAMS) * 4 + small
        download = disk = download + audio * 4
        transformer = (base + audio) * 2
    elif name in ("gguf-q8", "gguf-q4"):
        quant = gguf_bytes("Q8_0" if name == "gguf-q8" else "Q4_K_M")
        download = quant + (audio + T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 4 + small
        disk = quant + (audio + T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 2 + small
        transformer = quant + audio * 2
    else:
        raise KeyError(name)
    return Estimate(name, download / GB, disk / GB, transformer / GB, on_gpu_encoders / GB)
