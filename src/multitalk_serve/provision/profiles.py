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

- ``realtime`` (``REALTIME_PROFILES``): SoulX-FlashTalk-14B as published (its whole transformer with the audio
  layers, original layout, and the Wan encoders in the same folder) + chinese-wav2vec2-base: the ``realtime``
  preset's model. FlashTalk is not an adapter of the Wan base, so this profile fetches no Wan folder and takes no
  audio adapters; download it into the same volume as a Wan profile to have both (one worker runs one of them).

Audio models (``profile(name, models)``, ``download --models``): which audio adapters a profile fetches, MultiTalk's
(the default, as before) and/or InfiniteTalk's single and multi files (``MeiGen-AI/InfiniteTalk``, into
``InfiniteTalk/{single,multi}/``), each stored as the profile stores MultiTalk's (bf16 in ``bf16`` and the GGUF
profiles, float32 as published in ``official``). Any non-empty set makes a valid model folder.

Text to speech (``with_tts``, ``download --tts``): any profile plus Kokoro-82M (``hexgrad/Kokoro-82M``: config.json,
kokoro-v1_0.pth, every voice in voices/) into ``Kokoro-82M/``, where the worker and the CLI find it for text input.
An opt-in switch, as ``--speed-lora``: folders provisioned before stay complete, and text input also needs the
``tts`` extra (kokoro, misaki, spaCy, espeak-ng) in the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..engine.loading.layouts import INFINITETALK_WEIGHTS_NAME, WanDims, multitalk_shapes, original_base_shapes
from ..engine.loading.original_encoders import CLIP_CHECKPOINT, T5_CHECKPOINT, T5_TOKENIZER, VAE_CHECKPOINT
from ..engine.loading.paths import (
    ADAPTER_FIELDS,
    DIFFUSERS_DIR,
    FLASHTALK_DIR,
    FULL_MODEL_FIELDS,
    INFINITETALK_DIR,
    KOKORO_DIR,
    MULTITALK_DIR,
    ORIGINAL_DIR,
    WAV2VEC_DIR,
)

DIFFUSERS_REPO = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
ORIGINAL_REPO = "Wan-AI/Wan2.1-I2V-14B-480P"
GGUF_REPO = "city96/Wan2.1-I2V-14B-480P-gguf"
MULTITALK_REPO = "MeiGen-AI/MeiGen-MultiTalk"
INFINITETALK_REPO = "MeiGen-AI/InfiniteTalk"
WAV2VEC_REPO = "TencentGameMate/chinese-wav2vec2-base"
FLASHTALK_REPO = "Soul-AILab/SoulX-FlashTalk-14B"
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


# The audio models a profile can fetch (the names of ``engine.AUDIO_ADAPTERS``, in its order) and the shorthands
# ``download --models`` accepts.
AUDIO_MODELS = tuple(ADAPTER_FIELDS)  # multitalk, infinitetalk-single, infinitetalk-multi
DEFAULT_MODELS = ("multitalk",)
MODEL_SHORTHANDS = {"infinitetalk": ("infinitetalk-single", "infinitetalk-multi"), "all": AUDIO_MODELS}
# Whole models with their own profile (not audio adapters of a Wan profile): profile name -> model.
REALTIME_PROFILES = {"realtime": "flashtalk"}
FULL_MODELS = tuple(FULL_MODEL_FIELDS)  # flashtalk


def parse_models(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"multitalk,infinitetalk-single"`` (or a list) -> the audio models in canonical order; ``ValueError`` naming
    the choices for an unknown or empty one. ``infinitetalk`` = single + multi, ``all`` = the three adapters.
    ``flashtalk`` (a whole model: ``profile("realtime")``) is accepted too, for ``verify --models``."""
    items = text.split(",") if isinstance(text, str) else list(text)
    chosen: set[str] = set()
    known = (*AUDIO_MODELS, *FULL_MODELS)
    for item in (i.strip().lower() for i in items):
        if item in MODEL_SHORTHANDS:
            chosen.update(MODEL_SHORTHANDS[item])
        elif item in known:
            chosen.add(item)
        elif item:
            choices = ", ".join((*known, *MODEL_SHORTHANDS))
            raise ValueError(f"unknown audio model {item!r}: choose from {choices} (comma-separated)")
    if not chosen:
        raise ValueError(f"no audio model named: choose from {', '.join((*known, *MODEL_SHORTHANDS))}")
    return tuple(m for m in known if m in chosen)


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    fetches: tuple[Fetch, ...]
    models: tuple[str, ...] = DEFAULT_MODELS  # the audio models it fetches
    base: str = ""  # the name in PROFILES it was made from ("": ``name``)

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


def _infinitetalk(models: tuple[str, ...], bf16: bool) -> Fetch | None:
    kinds = [m.removeprefix("infinitetalk-") for m in models if m.startswith("infinitetalk-")]
    if not kinds:
        return None
    files = tuple(f"{kind}/{INFINITETALK_WEIGHTS_NAME}" for kind in kinds)
    return Fetch(
        INFINITETALK_REPO,
        INFINITETALK_DIR,
        include=files,
        to_bf16=files if bf16 else (),
        components=tuple((f"infinitetalk_{kind}", file) for kind, file in zip(kinds, files, strict=True)),
    )


def _audio(models: tuple[str, ...], bf16: bool) -> tuple[Fetch, ...]:
    """The fetches of the audio models chosen (MultiTalk's repository, InfiniteTalk's)."""
    fetches = [_multitalk(bf16)] if "multitalk" in models else []
    infinitetalk = _infinitetalk(models, bf16)
    return (*fetches, infinitetalk) if infinitetalk is not None else tuple(fetches)


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


def _gguf(profile: str, quant: str, models: tuple[str, ...]) -> Profile:
    name = GGUF_FILES[quant]
    return Profile(
        profile,
        f"city96's {quant} GGUF transformer, diffusers encoders and MultiTalk layers in bf16 (CLIP fp16)",
        (
            Fetch(GGUF_REPO, "", include=(name,), components=(("transformer", name),)),
            _diffusers(False),
            *_audio(models, True),
            *WAV2VEC,
        ),
    )


def _official(models: tuple[str, ...]) -> Profile:
    return Profile(
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
            *_audio(models, False),
            *WAV2VEC,
        ),
    )


_BUILDERS = {
    "bf16": lambda models: Profile(
        "bf16",
        "diffusers layout, float32 files stored as bf16 (CLIP as fp16)",
        (_diffusers(True), *_audio(models, True), *WAV2VEC),
    ),
    "official": _official,
    "gguf-q8": lambda models: _gguf("gguf-q8", "Q8_0", models),
    "gguf-q4": lambda models: _gguf("gguf-q4", "Q4_K_M", models),
}


def _flashtalk() -> Fetch:
    """Soul-AILab/SoulX-FlashTalk-14B as published, into ``SoulX-FlashTalk-14B/``: config.json, the transformer's
    files whatever their number (``diffusion_pytorch_model*``: the shards and their index, or one unsharded file;
    the loader and ``verify`` read the index) and the Wan encoders it ships; stored as published (no conversion)."""
    return Fetch(
        FLASHTALK_REPO,
        FLASHTALK_DIR,
        include=(
            "config.json",
            "diffusion_pytorch_model*",
            T5_CHECKPOINT,
            CLIP_CHECKPOINT,
            VAE_CHECKPOINT,
            f"{T5_TOKENIZER}/*",
        ),
        components=(
            ("flashtalk", ""),
            ("text_encoder", T5_CHECKPOINT),
            ("tokenizer", T5_TOKENIZER),
            ("image_encoder", CLIP_CHECKPOINT),
            ("vae", VAE_CHECKPOINT),
        ),
    )


def _realtime(name: str) -> Profile:
    return Profile(
        name,
        "SoulX-FlashTalk-14B as published (its transformer with the audio layers, .pth encoders), for preset realtime",
        (_flashtalk(), *WAV2VEC),
        (REALTIME_PROFILES[name],),
        name,
    )


def profile_names() -> tuple[str, ...]:
    """Every profile ``download --profile`` can fetch: the Wan profiles (``PROFILES``), then ``realtime``."""
    return (*PROFILES, *REALTIME_PROFILES)


def profile(name: str, models: str | Iterable[str] | None = None) -> Profile:
    """The profile ``name`` fetching the audio models ``models`` (``parse_models``; default MultiTalk's only). With
    other models than the default the profile is named ``<name>+<model>+...`` (the manifest records it).

    ``None``: the profile's own default (MultiTalk's; ``realtime``: FlashTalk). ``realtime`` fetches FlashTalk, a
    whole model, and no adapter: ``models`` must be ``None`` or name ``flashtalk``; an adapter is a ``ValueError``
    (adapters need a Wan profile), and so is ``flashtalk`` with a Wan profile."""
    if name in REALTIME_PROFILES:
        own = REALTIME_PROFILES[name]
        if models is not None and parse_models(models) != (own,):
            raise ValueError(
                f"the {name} profile fetches {own} (a whole model of its own) and no audio adapter: "
                f"--models {','.join(parse_models(models))} needs a Wan profile ({', '.join(_BUILDERS)})"
            )
        return _realtime(name)
    if name not in _BUILDERS:
        raise KeyError(name)
    chosen = parse_models(DEFAULT_MODELS if models is None else models)
    full = [m for m in chosen if m in FULL_MODELS]
    if full:
        realtime = next(p for p, m in REALTIME_PROFILES.items() if m == full[0])
        raise ValueError(f"{full[0]} is a whole model with a profile of its own: --profile {realtime}")
    made = _BUILDERS[name](chosen)
    if chosen == DEFAULT_MODELS:
        return Profile(made.name, made.summary, made.fetches, chosen, name)
    listed = ", ".join(chosen)
    return Profile(f"{name}+{'+'.join(chosen)}", f"{made.summary}; audio: {listed}", made.fetches, chosen, name)


PROFILES: dict[str, Profile] = {name: profile(name) for name in _BUILDERS}


# Kokoro-82M (Apache-2.0). COMPUTED, not read from the Hub (not reachable from here): kokoro-v1_0.pth holds
# 81,810,022 float32 values at the published config (the state dict of ``kokoro.KModel``) = 327.2 MB, the size the
# model card gives; each voice is a [510, 1, 256] float32 tensor (522 KB), 54 voices in v1.0. ``download --dry-run``
# prints the Hub's exact bytes.
KOKORO_REPO = "hexgrad/Kokoro-82M"
KOKORO_WEIGHTS_BYTES = 81_810_022 * 4
KOKORO_VOICE_BYTES = 510 * 256 * 4
KOKORO_VOICES = 54
KOKORO_GB = (KOKORO_WEIGHTS_BYTES + KOKORO_VOICES * KOKORO_VOICE_BYTES) / 1e9


def with_tts(profile: Profile) -> Profile:
    """``profile`` plus Kokoro-82M for text input (``download --tts``)."""
    kokoro = Fetch(
        KOKORO_REPO,
        KOKORO_DIR,
        include=("config.json", "kokoro-v1_0.pth", "voices/*.pt"),
        components=(("kokoro", ""),),
    )
    return Profile(
        f"{profile.name}+tts",
        f"{profile.summary}; + Kokoro-82M (text to speech)",
        (*profile.fetches, kokoro),
        profile.models,
        profile.base or profile.name,
    )


def with_speed_lora(profile: Profile) -> Profile:
    """``profile`` plus the speed LoRA for ``preset: fast`` (``download --speed-lora``); not for ``realtime``
    (FlashTalk is distilled already and refuses the LoRA: ``ValueError``)."""
    if (profile.base or profile.name) in REALTIME_PROFILES:
        raise ValueError(f"the {profile.name} profile runs FlashTalk's own 4-step sampler: no speed LoRA applies")
    lora = Fetch(SPEED_LORA_REPO, "", include=(SPEED_LORA_FILE,))
    return Profile(
        f"{profile.name}+speed-lora",
        f"{profile.summary}; + the lightx2v speed LoRA",
        (*profile.fetches, lora),
        profile.models,
        profile.base or profile.name,
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


# Each InfiniteTalk file (single/, multi/) holds MultiTalk's 330 tensors with the same shapes, in float32 (a public
# converter reads "330 FP32 tensors"; our loader's strict key check, as the official's, requires exactly those keys;
# docs/infinitetalk.md section 2): 2,487,168,000 parameters = 9.95 GB each. COMPUTED, not read from the Hub (its file
# list was not reachable when this was written); ``download --dry-run`` prints the Hub's byte counts.
AUDIO_MODEL_PARAMS = dict.fromkeys(AUDIO_MODELS, 2_487_168_000)
# FlashTalk's shards: bytes per parameter ASSUMED (bf16, as its pipeline runs it: ``param_dtype = torch.bfloat16``);
# the Hub's files could not be read when this was written. ``download --dry-run`` prints the real byte counts.
FLASHTALK_BYTES_PER_PARAM = 2
VOLUME_GB = 100.0  # the network volume every profile, with any audio models and the speed LoRA, must fit


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
    transformer_gb: float  # transformer + one set of audio layers, as loaded on the GPU
    encoders_gb: float  # T5 (bf16) + CLIP (bf16) + VAE (fp32) + wav2vec2 (fp32) on the GPU
    models: tuple[str, ...] = DEFAULT_MODELS
    peak_gb: float = 0.0  # the most the volume holds while downloading, converting one file at a time
    adapter_host_gb: float = 0.0  # host memory of an AdapterBank holding every model (bf16), when more than one

    @property
    def gpu_weights_gb(self) -> float:
        return self.transformer_gb + self.encoders_gb


def _realtime_estimate(name: str, models: str | Iterable[str] | None) -> Estimate:
    """``realtime``: FlashTalk's folder as published + chinese-wav2vec2-base (no conversion: download = disk = peak).
    The transformer's bytes are an ESTIMATE: FlashTalk's parameter count (the Wan base + the audio layers, the same
    architecture, checked against the official class in tests/test_flashtalk_weights.py) at 2 bytes each, assuming
    bf16 shards (neither the Hub's dtype nor its shard sizes could be read when this was written; float32 shards
    would add 37.8 GB, 92.5 GB in all). The encoders are the Wan original layout's files (``official``)."""
    chosen = profile(name, models).models
    base, audio = transformer_params()
    flashtalk = (base + audio) * FLASHTALK_BYTES_PER_PARAM
    small = VAE_PARAMS * 4 + WAV2VEC_PARAMS * 4
    disk = flashtalk + T5_ENCODER_PARAMS * 2 + (CLIP_VISION_PARAMS + CLIP_TEXT_PARAMS) * 4 + small
    on_gpu_encoders = (T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 2 + (VAE_PARAMS + WAV2VEC_PARAMS) * 4
    return Estimate(name, disk / GB, disk / GB, (base + audio) * 2 / GB, on_gpu_encoders / GB, chosen, disk / GB)


def estimate(
    name: str, models: str | Iterable[str] | None = None, *, speed_lora: bool = False, tts: bool = False
) -> Estimate:
    """Sizes of a profile with the audio models ``models``, from parameter counts (the Hub's exact byte counts:
    ``download --dry-run``). The GPU holds one set of audio layers whatever the number of models (the others wait in
    host memory and are copied in when a job asks for them: ``AdapterBank``). ``realtime``: ``_realtime_estimate``
    (``models`` ``None`` or ``flashtalk``; no speed LoRA: FlashTalk is distilled already). ``tts``: + Kokoro-82M."""
    if name in REALTIME_PROFILES:
        if speed_lora:
            raise ValueError(f"the {name} profile runs FlashTalk's own 4-step sampler: the speed LoRA does not apply")
        made = _realtime_estimate(name, models)
        if tts:
            made.download_gb, made.disk_gb, made.peak_gb = (
                v + KOKORO_GB for v in (made.download_gb, made.disk_gb, made.peak_gb)
            )
        return made
    chosen = parse_models(DEFAULT_MODELS if models is None else models)
    base, _ = transformer_params()
    audio = sum(AUDIO_MODEL_PARAMS[m] for m in chosen)  # every file, as stored
    one = max(AUDIO_MODEL_PARAMS[m] for m in chosen)  # the set on the GPU
    on_gpu_encoders = (T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 2 + (VAE_PARAMS + WAV2VEC_PARAMS) * 4
    small = VAE_PARAMS * 4 + WAV2VEC_PARAMS * 4
    largest_converted = 0  # the float32 original alive beside its half copy while converting
    if name == "bf16":
        download = (base + audio + T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 4 + small
        disk = (base + audio + T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 2 + small
        transformer = (base + one) * 2
        largest_converted = one * 4  # the audio files are the largest float32 files (shards are smaller)
    elif name == "official":
        download = disk = base * 2 + T5_ENCODER_PARAMS * 2 + (CLIP_VISION_PARAMS + CLIP_TEXT_PARAMS) * 4 + small
        download = disk = download + audio * 4
        transformer = (base + one) * 2
    elif name in ("gguf-q8", "gguf-q4"):
        quant = gguf_bytes("Q8_0" if name == "gguf-q8" else "Q4_K_M")
        download = quant + (audio + T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 4 + small
        disk = quant + (audio + T5_ENCODER_PARAMS + CLIP_VISION_PARAMS) * 2 + small
        transformer = quant + one * 2
        largest_converted = one * 4
    else:
        raise KeyError(name)
    if speed_lora:
        download, disk = download + SPEED_LORA_GB * GB, disk + SPEED_LORA_GB * GB
    if tts:
        download, disk = download + KOKORO_GB * GB, disk + KOKORO_GB * GB
    host = audio * 2 if len(chosen) > 1 else 0
    return Estimate(
        name,
        download / GB,
        disk / GB,
        transformer / GB,
        on_gpu_encoders / GB,
        chosen,
        (disk + largest_converted) / GB,
        host / GB,
    )


def realtime_table() -> str:
    """The ``realtime`` profile's row for docs/provisioning.md (a test keeps it in sync; ``multitalk-serve profiles``
    can print it after the Wan profiles' tables). Its transformer size is an estimate (``_realtime_estimate``)."""
    rows = [
        "| profile | what | download | on the volume | fits 100 GB | GPU memory for the weights |",
        "|---|---|---|---|---|---|",
    ]
    for name in REALTIME_PROFILES:
        e = estimate(name)
        fits = "yes" if e.peak_gb < VOLUME_GB else "**no**"
        rows.append(
            f"| `{name}` | {profile(name).summary} | {e.download_gb:.1f} GB (est.) | {e.disk_gb:.1f} GB (est.) | "
            f"{fits} | {e.gpu_weights_gb:.1f} GB ({e.transformer_gb:.1f} transformer, est. + {e.encoders_gb:.1f} "
            "encoders) |"
        )
    return "\n".join(rows)
