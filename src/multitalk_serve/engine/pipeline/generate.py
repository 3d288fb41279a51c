"""The generation pipeline of MultiTalk and InfiniteTalk: a reference image (or, InfiniteTalk, a video to dub) + one
or two voices + prompt -> talking MP4.

Long videos stream clip by clip (the official algorithms): 81-frame clips; every clip after the first continues
from the last generated frames (the motion frames). MultiTalk: 25 motion frames, re-noised to the current timestep
at every step, and the clip's condition is those frames; each clip adds 56 new frames. InfiniteTalk: 9 motion
frames written clean at every step, and the clip's condition is the source frame at the clip's start (re-read from
the video, or the image again); each clip adds 72 frames (``variants.py``). The last clip sees mirror-padded audio;
every clip is colour-corrected towards its reference frame. With ``keep_background`` only the speaker regions of
the generated frames are kept, over the source frames (``composite.py``). Frames go to the MP4 encoder as clips
finish, so memory does not grow with the video's length.
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import AudioError, EngineError, InputError
from ..limits import MAX_SPEAKERS, MAX_STEPS
from ..speed.backends import NATIVE, choose_attention_backend, is_kernel_failure
from ..speed.lora import load_speed_lora, set_speed_lora
from ..speed.memory import MemoryPlan, group_offload, parse_plan, plan_memory
from ..speed.policy import DEFAULT_SPEED_LORA_SCALE, LIBRARY_NAMES, SettingNames, SpeedSetup, fp8_lora_note
from ..speed.presets import DEFAULT_PRESET, preset_values
from ..speed.step_cache import StepCache
from .audio import (
    SpeakerAudio,
    arrange_speakers,
    cached_window_features,
    decode_audio,
    loudness_normalize,
    window_features,
)
from .color import correct_colors
from .composite import composite, region_mask
from .conditioning import (
    Box,
    ImageInputError,
    choose_bucket,
    crop_masks,
    latent_masks,
    mask_preview,
    person_masks,
)
from .drift import DriftMonitor
from .inputs import LIBRARY_INPUT_NAMES, InputNames, check_output_path, plural
from .media import IMAGE_FORMATS
from .sampling import (
    DEFAULT_SHIFT,
    FLASHTALK_SHIFT,
    Guidance,
    add_noise,
    euler_step,
    flashtalk_timesteps,
    timesteps,
    x0_renoise_step,
)
from .segments import JobFolder, JobPlan, LoopState, Segment, assemble, peak_limited
from .segments import fingerprint as fingerprint_of
from .source import SOURCE_ENDS, ImageSource, VideoSource, sniff_media, video_limit
from .variants import LoopVariant, adapter_for, check_model_name, loop_for
from .video import AUDIO_RATE, FPS, Mp4Writer, frames_to_uint8, save_thumbnail

logger = logging.getLogger(__name__)

VAE_STRIDE = (4, 8, 8)
ConditionSource = ImageSource | VideoSource
PARALLEL_LOAD_MIN_CORES = 8
MAX_IMAGE_PIXELS = 40_000_000  # larger inputs are refused before decoding (decompression bombs)
MIN_IMAGE_SIDE = 32


@dataclass
class GenerateOptions:
    """Everything a caller may choose. Defaults are the official CLI's unless docs/differences.md says otherwise."""

    resolution: str = "480p"  # bucket table: 480p (multitalk-480) or 720p (multitalk-720)
    mode: str = "streaming"  # "streaming": as long as the audio; "clip": one clip (at most 81 frames)
    steps: int = 40
    shift: float | None = None  # None: 7 at 480p, 11 at 720p (use 2 with a speed LoRA)
    text_scale: float = 5.0
    audio_scale: float = 4.0
    use_apg: bool = False
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 55.0
    seed: int | None = None  # None: drawn at random, and reported
    negative_prompt: str | None = None  # None: the official English negative prompt
    audio_type: str = "add"  # two speakers: "add" (one after the other) or "para" (at the same time)
    color_correction: float = 1.0
    max_duration_s: float = 600.0
    frames_per_clip: int | None = None  # None: the model's window (MultiTalk and InfiniteTalk 81, FlashTalk 33)
    motion_frames: int | None = None  # None: the model's (MultiTalk 25, InfiniteTalk 9, FlashTalk 5)
    crf: int = 19
    size: tuple[int, int] | None = None  # explicit (height, width), multiples of 16, instead of the bucket
    num_frames: int | None = None  # exact length: the audio is cut or padded with silence to it
    cache_threshold: float = 0.0  # TeaCache step caching; 0 = off (every forward computed)
    speed_lora: bool = False  # use the loaded speed LoRA (lightx2v, FusionX) for this job
    model: str = "multitalk"  # multitalk | infinitetalk (single or multi by speakers) | infinitetalk-single | -multi
    # | flashtalk (SoulX-FlashTalk: the ``realtime`` preset)
    source_end: str = "hold"  # a video source shorter than the audio: "hold" its last frame, or "pingpong"
    keep_background: bool = False  # keep the source outside the speaker regions (boxes or mask)
    feather: float | None = None  # keep_background's soft edge in output pixels (None: automatic)

    @classmethod
    def from_preset(cls, preset: str = DEFAULT_PRESET, **overrides) -> GenerateOptions:
        """A preset's values (``presets.py``) with any field overridden, e.g. ``from_preset("fast", steps=6)``. A
        preset that runs its own model (``realtime``: ``flashtalk``) refuses another ``model``."""
        values = preset_values(preset)
        wanted = overrides.get("model")
        if "model" in values and wanted is not None and str(wanted).strip().lower() != values["model"]:
            raise InputError(f"preset {preset} runs model {values['model']}, not {wanted}")
        return cls(**{**values, **overrides})

    def resolved(self) -> GenerateOptions:
        """A copy with every ``None`` filled in (what was actually used)."""
        out = GenerateOptions(**asdict(self))
        loop = loop_for(out.model.strip().lower()) if isinstance(out.model, str) else None
        if out.shift is None:
            x0 = loop is not None and loop.sampler == "x0"
            out.shift = FLASHTALK_SHIFT if x0 else DEFAULT_SHIFT.get(out.resolution, 7.0)
        if out.seed is None:
            out.seed = random.randrange(2**31)
        if loop is not None:
            out.frames_per_clip = loop.frames_per_clip if out.frames_per_clip is None else out.frames_per_clip
            out.motion_frames = loop.motion_frames if out.motion_frames is None else out.motion_frames
        return out

    def validate(self) -> None:
        loop = loop_for(check_model_name(self.model))
        motion = self.motion_frames if self.motion_frames is not None else loop.motion_frames
        frames = self.frames_per_clip if self.frames_per_clip is not None else loop.frames_per_clip
        if not loop.guided:  # a distilled model: one pass a step, none of the guidance or speed-up switches
            refused = [
                (not math.isclose(self.text_scale, 1.0), "text_scale", self.text_scale),
                (not math.isclose(self.audio_scale, 1.0), "audio_scale", self.audio_scale),
                (self.use_apg, "use_apg", self.use_apg),
                (self.speed_lora, "speed_lora", self.speed_lora),
                (self.cache_threshold > 0, "cache_threshold", self.cache_threshold),
                (self.resolution != "480p", "resolution", self.resolution),
            ]
            for bad, name, value in refused:
                if bad:
                    raise InputError(
                        f"{name}={value!r} does not apply to {loop.name}: it is distilled to run without guidance, "
                        "step caching or a speed LoRA, at its ~768x448 sizes (480p class); use preset realtime"
                    )
            if loop.cached_audio_s and frames > loop.cached_audio_s * FPS:
                raise InputError(f"frames_per_clip must be at most {loop.cached_audio_s * FPS} for {loop.name}")
        checks = [
            (self.resolution in DEFAULT_SHIFT, f"resolution must be 480p or 720p, got {self.resolution!r}"),
            (self.mode in ("streaming", "clip"), f"mode must be 'streaming' or 'clip', got {self.mode!r}"),
            (1 <= self.steps <= MAX_STEPS, f"steps must be 1..{MAX_STEPS}, got {self.steps}"),
            (self.audio_type in ("add", "para"), f"audio_type must be 'add' or 'para', got {self.audio_type!r}"),
            (0.0 <= self.color_correction <= 1.0, f"color_correction must be 0..1, got {self.color_correction}"),
            (frames % 4 == 1 and frames > 1, "frames_per_clip must be 4k+1"),
            (
                motion % 4 == 1 and 0 < motion < frames,
                "motion_frames must be 4k+1 and shorter than a clip",
            ),
            (self.source_end in SOURCE_ENDS, f"source_end must be 'hold' or 'pingpong', got {self.source_end!r}"),
            (
                self.feather is None or (math.isfinite(self.feather) and 0 <= self.feather <= 256),
                f"feather must be 0..256 pixels, got {self.feather}",
            ),
            (self.max_duration_s > 0, "max_duration_s must be positive"),
            (self.num_frames is None or self.num_frames >= 1, f"num_frames must be >= 1, got {self.num_frames}"),
            (0 <= self.crf <= 51, f"crf must be 0..51, got {self.crf}"),
            (
                math.isfinite(self.cache_threshold) and 0 <= self.cache_threshold <= 5,
                f"cache_threshold must be 0..5, got {self.cache_threshold}",
            ),
            (
                self.size is None or (len(self.size) == 2 and all(v >= 16 and v % 16 == 0 for v in self.size)),
                f"size must be (height, width), multiples of 16, got {self.size}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        for name in ("text_scale", "audio_scale", "apg_norm_threshold"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value}")


@dataclass
class Progress:
    """Where a job is. Stages in order: ``audio``, ``conditioning``, then per clip ``encoding`` (CLIP and the VAE
    encoder on the condition frames; its last event, ``done == total``, marks its end), ``sampling`` (after every
    step) and ``decoding`` (VAE decoder, colour correction), then ``muxing`` and ``done``. Inside ``encoding`` and
    ``decoding``, ``done`` of ``total`` counts the VAE's frame chunks (latent frames). For the time left, feed the
    events to a ``ProgressClock``."""

    stage: str
    clip: int = 0
    total_clips: int = 0
    step: int = 0
    total_steps: int = 0
    done: int = 0  # units of the running stage done (encoding / decoding: latent frames)
    total: int = 0  # units of the running stage (0: not counted)

    @property
    def fraction(self) -> float:
        """Share of the sampling steps done (the VAE's share is left out: ``ProgressClock`` counts it)."""
        if self.stage == "done":
            return 1.0
        if self.total_clips == 0 or self.total_steps == 0:
            return 0.0
        return ((self.clip - 1) * self.total_steps + self.step) / (self.total_clips * self.total_steps)


@dataclass
class GenerationResult:
    video_path: Path
    frames: int
    seconds: float
    width: int
    height: int
    seed: int
    speakers: int
    clips: int
    options: dict
    timings: dict[str, float]
    thumbnail_path: Path | None = None
    mask_preview_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    forwards: dict[str, int] = field(default_factory=dict)  # transformer forwards computed / reused (step cache)
    model: str = "multitalk"  # the audio adapter used (multitalk, infinitetalk-single, infinitetalk-multi)
    segments: int = 0  # with a job folder: the segments the video was assembled from
    resumed_from: int = 0  # windows found done by an earlier run of the same job (job folder)
    drift: dict = field(default_factory=dict)  # DriftMonitor.summary(): the largest deviation per statistic


STAGES = ("audio", "text_encoder", "image_encoders", "sampling", "vae_decode", "color_correction", "encode_mux")


def _ignore(progress: Progress) -> None:
    return None


@dataclass
class PreparedJob:
    """Everything ``frames`` needs: encoded inputs, the clip plan, the resolved options, stage timings so far."""

    options: GenerateOptions
    speakers: int
    features: torch.Tensor | None  # [P, L, layers, C] wav2vec2 features at 25 fps (None: computed per window)
    soundtrack: np.ndarray  # 48 kHz mono, what the listener hears
    clips: list[ClipPlan]
    total_frames: int
    reference: torch.Tensor  # [3, H, W] in [-1, 1]: the resized, cropped reference image
    bucket_masks: torch.Tensor  # [3, H, W] person 1, person 2, background
    masks: torch.Tensor  # [3, h, w] the same at latent resolution
    context: torch.Tensor
    context_null: torch.Tensor
    timings: dict[str, float]
    source: ConditionSource  # the image or video each clip's reference frame is read from
    adapter: str  # the audio adapter (model) this job runs with
    loop: LoopVariant  # MultiTalk's or InfiniteTalk's clip loop
    region: torch.Tensor | None = None  # keep_background: [H, W] in [0, 1], 1 where the generated frame is kept
    step_cache: StepCache | None = None
    notes: list[str] = field(default_factory=list)
    state: LoopState = field(default_factory=LoopState)  # where the window loop stands (resume)
    drift: DriftMonitor = field(default_factory=DriftMonitor)  # the drift check over this job's windows
    tracks: list[np.ndarray] | None = None  # 16 kHz speech per speaker (FlashTalk: features per window from these)
    condition: tuple[torch.Tensor, torch.Tensor] | None = None  # (CLIP features, y) of an image source, made once


@dataclass
class ClipPlan:
    """Which video frames each clip covers (``start``, ``start + frames_per_clip``) and which it keeps."""

    index: int
    start: int
    end: int
    keep_from: int  # first frame of this clip written to the output (0 for the first clip, motion frames after)
    mirror_audio: bool  # the last clip sees the audio continued by its mirror image


def plan_clips(
    audio_frames: int, mode: str, frames_per_clip: int = 81, motion_frames: int = 25, lead_in: bool = False
) -> tuple[list[ClipPlan], int]:
    """The clips to generate and the output length in frames.

    Streaming: as many clips as needed to cover the audio, output = the audio's length; for every length the
    official code accepts (82 frames and more) it runs the same clips (82-137 frames: two), but drops the last 3
    frames of the video. Clip: one clip, output = min(audio, clip). Audio of at most one clip (81 frames), which the
    official code refuses in both modes, is padded by its mirror image and the video cut to the audio.

    ``lead_in`` (FlashTalk): every clip, the first too, starts with ``motion_frames`` frames the output does not
    show, so clip ``k`` covers frames ``k*stride - motion .. (k+1)*stride`` and adds ``stride`` frames; the last one's
    audio is padded with silence (the official code drops a last partial clip) and the video cut to the audio.
    """
    if audio_frames < 1:
        raise AudioError("the audio is shorter than one video frame (40 ms)")
    stride = frames_per_clip - motion_frames
    if lead_in:
        count = 1 if mode == "clip" else math.ceil(audio_frames / stride)
        clips = [ClipPlan(k, k * stride - motion_frames, (k + 1) * stride, motion_frames, False) for k in range(count)]
        return clips, min(audio_frames, stride) if mode == "clip" else audio_frames
    if mode == "clip" or audio_frames <= frames_per_clip:
        count = 1
    else:
        count = 1 + math.ceil((audio_frames - frames_per_clip) / stride)
    clips = []
    for k in range(count):
        start = k * stride
        last = k == count - 1
        mirror = last and (audio_frames < frames_per_clip if mode == "clip" else True)
        clips.append(ClipPlan(k, start, start + frames_per_clip, 0 if k == 0 else motion_frames, mirror))
    total = min(audio_frames, frames_per_clip) if mode == "clip" else audio_frames
    return clips, total


def load_image(source: str | Path | bytes | Image.Image, name: str = "image") -> Image.Image:
    """Open and check the reference image: in an accepted format (``IMAGE_FORMATS``: Pillow tries no other plugin),
    decodable, not huge, not tiny; returns RGB (first frame if animated)."""
    if isinstance(source, Image.Image):
        image = source
    else:
        handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
        try:
            image = Image.open(handle, formats=IMAGE_FORMATS)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageInputError(
                    f"{name}: {image.width}x{image.height} is over the {MAX_IMAGE_PIXELS // 1_000_000} MP limit"
                )
            image.load()
        except ImageInputError:
            raise
        except Image.DecompressionBombError as exc:  # Pillow's own guard fires first for the very largest
            raise ImageInputError(
                f"{name}: over the {MAX_IMAGE_PIXELS // 1_000_000} MP limit (a decompression bomb? {exc})"
            ) from exc
        except Image.UnidentifiedImageError:
            if sniff_media(source) == "video":
                raise ImageInputError(
                    f"{name}: this is a video, not an image; send it as the video to dub (an InfiniteTalk model)"
                ) from None
            raise ImageInputError(
                f"{name}: not a readable image in an accepted format ({', '.join(IMAGE_FORMATS)})"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageInputError(f"{name}: not a readable image ({exc})") from exc
    if min(image.width, image.height) < MIN_IMAGE_SIDE:
        raise ImageInputError(
            f"{name}: {image.width}x{image.height} is too small ({MIN_IMAGE_SIDE} px a side at least)"
        )
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray((array / top * 255).clip(0, 255).astype(np.uint8))
    return image.convert("RGB")


def _weight_files(paths, audio: Path | None) -> list[Path]:
    """The weight files loading will read, found without importing the model libraries (so that reading ahead
    starts before the imports). The original layout's CLIP checkpoint is left out: only its vision half is read."""

    def weights(path: Path | None) -> list[Path]:
        if path is None:
            return []
        if path.is_file():
            return [path]
        inner = path / "transformer" if (path / "model_index.json").is_file() else path
        return sorted(inner.glob("*.safetensors"))

    image = [] if paths.image_encoder.suffix == ".pth" else weights(paths.image_encoder)
    return [
        *weights(paths.transformer),
        *weights(audio),
        *weights(paths.text_encoder),
        *image,
        *weights(paths.vae),
    ]


class MultiTalkPipeline:
    """Loads every component once; ``generate`` turns an image, one or two voices and a prompt into an MP4."""

    def __init__(
        self,
        transformer,
        vae,
        text_encoder,
        image_encoder,
        audio_encoder,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        adapter: str | None = None,
    ):
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.audio_encoder = audio_encoder
        self.device = torch.device(device)
        self.dtype = dtype
        self._negative_cache: dict[str, torch.Tensor] = {}
        self.attention_backend = NATIVE
        self.memory_plan: MemoryPlan | None = None
        self.speed_lora: Path | None = None  # the loaded speed LoRA file
        self.speed_lora_fused = False
        self.notes: list[str] = []  # what loading chose or passed over (the worker reports them)
        # the audio adapter the transformer holds now, and (``from_pretrained(adapters=...)``) the others it can take
        self.adapter: str = adapter or getattr(transformer, "audio_adapter", None) or "multitalk"
        self.adapter_bank = None  # loading.adapters.AdapterBank when more than one adapter is loaded

    @property
    def adapters(self) -> list[str]:
        """The audio adapters (models) this pipeline can run: the loaded one and those in its bank."""
        return list(self.adapter_bank.names) if self.adapter_bank is not None else [self.adapter]

    def use_adapter(self, name: str, field_name: str = "model") -> float:
        """Make ``name`` the transformer's audio adapter (a copy of the audio layers, never a reload of the base);
        returns the seconds it took (0 when it is already active). ``InputError`` if it is not loaded here."""
        if name == self.adapter:
            return 0.0
        if self.adapter_bank is None or name not in self.adapter_bank.names:
            raise InputError(f"{field_name}: {name} is not loaded here (loaded: {', '.join(self.adapters)})")
        report = self.adapter_bank.activate(name)
        self.adapter = name
        logger.info("audio adapter %s -> %s in %.3f s", report.previous, name, report.seconds)
        return report.seconds

    def set_attention_backend(self, requested: str = "auto") -> str:
        """Use the fastest attention kernel that works here (``backends.py``); returns its name."""
        self.attention_backend, skipped = choose_attention_backend(self.transformer, self.device, self.dtype, requested)
        if requested != "auto":
            self.notes += skipped
        return self.attention_backend

    def load_speed_lora(self, path: str | Path, scale: float = DEFAULT_SPEED_LORA_SCALE, fuse: bool = False) -> None:
        """Attach a step-distillation LoRA (``lora.py``); jobs with ``speed_lora=True`` (the fast preset) use it.
        ``fuse`` merges it into the weights: no per-forward cost, but then every job must use it."""
        load_speed_lora(self.transformer, path, scale, fuse)
        self.speed_lora, self.speed_lora_fused = Path(path), fuse

    def compile(self) -> None:
        """Regional ``torch.compile`` of the repeated transformer block (diffusers ``compile_repeated_blocks``):
        one compiled block serves all 40; a new shape (resolution, speaker count) recompiles once."""
        self.transformer.compile_repeated_blocks(fullgraph=False, dynamic=False)

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        *,
        transformer: str | Path | None = None,
        multitalk: str | Path | None = None,
        wav2vec: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        vae_dtype: torch.dtype = torch.float32,
        parallel: bool | None = None,
        timings: dict[str, float] | None = None,
        memory_plan: MemoryPlan | str | None = None,
        plan_resolution: str = "480p",
        attention: str = "auto",
        speed_lora: str | Path | None = None,
        speed_lora_scale: float = DEFAULT_SPEED_LORA_SCALE,
        fuse_speed_lora: bool | None = False,
        speed: SpeedSetup | None = None,
        setting_names: SettingNames = LIBRARY_NAMES,
        compile: bool = False,
        adapters: list[str] | None = None,
    ) -> MultiTalkPipeline:
        """Load from a model root (see ``resolve_model_paths``); every component is loaded once, straight into its dtype
        and device (``dtype`` for the transformer and T5; the CLIP in fp16 when ``dtype`` is bf16, as the official:
        ``clip_dtype``; the VAE in ``vae_dtype``). The kernel starts reading the weight files first
        (``weights.prefetch``) while the libraries import; then, with ``parallel``, the five components load at the same
        time (their reads overlap each other's model construction and dtype casts). ``parallel=None`` chooses: parallel
        with 8 CPU cores or more; with fewer, the threads only contend (on 2 cores, sequential loading measured 1-2 s
        faster for a 4.5 GB directory, see ``bench/bench_cold_start.py``). ``timings`` receives each component's
        seconds.

        ``memory_plan`` (``memory.py``): ``None`` keeps everything resident in ``dtype``; ``"auto"`` picks by the
        GPU's memory for jobs up to ``plan_resolution``; or a plan / its name such as ``"fp8+t5-offload"``.
        ``attention``: ``"auto"`` or a diffusers backend name (``backends.py``). ``speed_lora``: a lightx2v /
        FusionX LoRA for the fast preset; ``fuse_speed_lora``: merge it into the weights (``None``: only when the
        weights need it, i.e. fp8; otherwise a switchable adapter); ``speed`` (from ``plan_speed_setup``) sets these
        three at once; ``setting_names``: how the caller names its settings in messages. ``compile``: regional
        ``torch.compile`` of the blocks. ``adapters``: the audio adapters (models) to hold, e.g.
        ``["infinitetalk-single", "multitalk"]``: the transformer loads with the first, the others wait in host memory
        (``AdapterBank``) and a job switches to the one it needs; ``None``: the first the folder has (MultiTalk,
        InfiniteTalk single, multi; FlashTalk when its transformer is the only one). ``["flashtalk"]``: FlashTalk's
        folder (``ROOT/SoulX-FlashTalk-14B``) is the transformer, audio layers inside; it shares the process with
        no other model (``ConfigError``), and the memory plan is made for its windows (``plan_resolution``
        ``"flashtalk"``)."""
        from concurrent.futures import ThreadPoolExecutor
        from dataclasses import replace

        from ..errors import ConfigError
        from ..loading.adapters import adapter_spec, check_model_set
        from ..loading.paths import resolve_model_paths
        from ..loading.weights import prefetch

        if speed is not None:
            speed_lora, speed_lora_scale, fuse_speed_lora = speed.speed_lora, speed.scale, speed.fuse
        # InfiniteTalk files must be there when named (MultiTalk's weights may sit in the transformer's own files)
        needed = check_model_set(adapters or ())  # FlashTalk with another model: ConfigError
        paths = resolve_model_paths(
            model_dir,
            transformer=transformer,
            multitalk=multitalk,
            wav2vec=wav2vec,
            adapters=[a for a in needed if a != "multitalk"] or None,
        )
        held = _adapter_files(paths, adapters)
        first, first_file = next(iter(held.items())) if held else (None, paths.multitalk)
        if first is not None and adapter_spec(first).full_transformer:  # FlashTalk: its own folder is the transformer
            if transformer is not None or multitalk is not None:
                raise ConfigError(f"{first} loads its own transformer and audio layers: pass no transformer/multitalk")
            paths, first_file, plan_resolution = replace(paths, transformer=held[first], multitalk=None), None, first
        device = torch.device(device)
        plan = _resolve_plan(memory_plan, device, paths.transformer, plan_resolution)
        dit_device = torch.device("cpu") if plan and plan.group_offload else device
        t5_device = torch.device("cpu") if plan and plan.offload_text_encoder else device
        fp8 = bool(plan and plan.weights == "fp8")
        spent = timings if timings is not None else {}
        notes, fused_lora = [], None
        if fp8 and speed_lora is not None:
            if fuse_speed_lora is not False:  # torchao fp8 linears cannot host a LoRA with bias deltas: merged at load
                from ..speed.lora import lora_deltas

                fused_lora = lora_deltas(speed_lora, speed_lora_scale)
            else:
                notes.append(fp8_lora_note(Path(speed_lora), setting_names))
                speed_lora = None
        start = time.perf_counter()
        prefetch(_weight_files(paths, first_file))
        # Import the libraries here, once: imports from several threads at a time serialise on the import lock.
        from ..libraries import import_libraries
        from ..loading.transformer import load_transformer
        from ..models.encoders import ClipImageEncoder, T5TextEncoder, WanVideoVAE, clip_dtype
        from .audio import Wav2Vec2Features

        import_libraries()
        spent["imports"] = time.perf_counter() - start
        jobs = {
            "transformer": lambda: load_transformer(
                paths.transformer,
                first_file,
                dtype=dtype,
                device=dit_device,
                fp8=fp8,
                fused_lora=fused_lora,
                audio_adapter=first,
            ),
            "text_encoder": lambda: T5TextEncoder.from_pretrained(
                paths.tokenizer, paths.text_encoder, device=t5_device, dtype=dtype
            ),
            "image_encoder": lambda: ClipImageEncoder.from_pretrained(
                paths.image_encoder, paths.image_processor, device=device, dtype=clip_dtype(dtype)
            ),
            "vae": lambda: WanVideoVAE.from_pretrained(paths.vae, device=device, dtype=vae_dtype),
            "audio_encoder": lambda: Wav2Vec2Features.from_pretrained(paths.wav2vec, device=device),
        }

        def timed(name: str):
            start = time.perf_counter()
            value = jobs[name]()
            spent[name] = time.perf_counter() - start
            return value

        if parallel is None:
            parallel = (os.cpu_count() or 1) >= PARALLEL_LOAD_MIN_CORES
        if parallel:
            with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="multitalk-load") as pool:
                futures = {name: pool.submit(timed, name) for name in jobs}
                parts = {name: future.result() for name, future in futures.items()}
        else:
            parts = {name: timed(name) for name in jobs}
        if t5_device != device:
            parts["text_encoder"].device = device  # encodes there, lives in host memory between prompts
        if plan and plan.group_offload:
            group_offload(parts["transformer"], device)
        pipe = cls(**parts, device=device, dtype=dtype)
        if len(held) > 1:
            from ..loading.adapters import AdapterBank

            start = time.perf_counter()
            pipe.adapter_bank = AdapterBank(pipe.transformer)
            for name, path in list(held.items())[1:]:
                pipe.adapter_bank.add(name, path)
            spent["adapters"] = time.perf_counter() - start
        pipe.memory_plan = plan
        pipe.notes += notes
        pipe.set_attention_backend(attention)
        if fused_lora is not None:
            pipe.speed_lora, pipe.speed_lora_fused = Path(speed_lora), True
        elif speed_lora is not None:
            start = time.perf_counter()
            pipe.load_speed_lora(speed_lora, speed_lora_scale, bool(fuse_speed_lora))
            spent["speed_lora"] = time.perf_counter() - start
        if compile:
            pipe.compile()
        return pipe

    # --- inputs -------------------------------------------------------------------------------------------------
    def prepare_audio(
        self,
        audio: list[str | Path | bytes | np.ndarray | None],
        audio_type: str = "add",
        max_seconds: float | None = None,
        cut: bool = False,
    ) -> tuple[SpeakerAudio, SpeakerAudio]:
        """Decode each speaker at 16 kHz (features) and 48 kHz (the soundtrack), loudness-normalise with one gain
        per speaker, arrange them. Returns (16 kHz audio, 48 kHz audio). A track longer than ``max_seconds`` is an
        ``AudioError`` found while decoding (with ``cut``: it is cut there, the rest never decoded)."""
        if not 1 <= len(audio) <= MAX_SPEAKERS:
            raise AudioError(f"MultiTalk takes 1 or {MAX_SPEAKERS} speakers, got {len(audio)}")
        low, high = [], []
        for i, source in enumerate(audio):
            if source is None:
                low.append(None)
                high.append(None)
                continue
            name = f"audio of speaker {i + 1}"
            if isinstance(source, np.ndarray):
                wave16 = np.asarray(source, np.float32).reshape(-1)
                if not np.isfinite(wave16).all() or wave16.size == 0:
                    raise AudioError(f"{name}: empty or not finite")
                wave48 = np.interp(np.arange(len(wave16) * 3) / 3, np.arange(len(wave16)), wave16).astype(np.float32)
            else:
                wave16 = decode_audio(source, name, max_seconds=max_seconds, cut=cut)
                wave48 = decode_audio(source, name, rate=AUDIO_RATE, max_seconds=max_seconds, cut=cut)
            normalised = loudness_normalize(wave16)
            gain = float(np.dot(normalised, wave16) / max(float(np.dot(wave16, wave16)), 1e-20))
            low.append(normalised)
            high.append(wave48 * gain)
        return arrange_speakers(low, audio_type), arrange_speakers(high, audio_type)

    def encode_prompts(self, prompt: str, negative_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt, negative prompt) T5 features; the negative prompt's is computed once and cached."""
        if negative_prompt not in self._negative_cache:
            self._negative_cache[negative_prompt] = self.text_encoder([negative_prompt])[0]
        return self.text_encoder([prompt])[0], self._negative_cache[negative_prompt]

    # --- generation -------------------------------------------------------------------------------------------
    def prepare(
        self,
        image: str | Path | bytes | Image.Image | None,
        audio: list[str | Path | bytes | np.ndarray | None],
        prompt: str,
        *,
        video: str | Path | bytes | None = None,
        mask: str | Path | bytes | Image.Image | None = None,
        boxes: list[Box] | None = None,
        options: GenerateOptions | None = None,
        callback: Callable[[Progress], None] | None = None,
        names: InputNames = LIBRARY_INPUT_NAMES,
    ) -> PreparedJob:
        """Validate and encode every input (audio features, source, masks, prompts), choose and activate the audio
        adapter, and plan the clips. The job holds the source open: run it with ``frames`` (which closes it) or
        close ``job.source``. ``names``: how the caller names the image, video, mask and boxes (in messages)."""
        opts = (options or GenerateOptions()).resolved()
        opts.validate()
        loop = loop_for(opts.model)
        if (image is None) == (video is None):
            raise InputError(f"give either {names.image} or {names.video} (exactly one)")
        if video is not None and not loop.takes_video:
            raise InputError(
                f"{names.video}: {opts.model} animates an image; dubbing a video needs an InfiniteTalk model "
                "(infinitetalk)"
            )
        if opts.keep_background and boxes is None and mask is None:
            raise ImageInputError("keep_background needs the speaker regions: person boxes or a mask image")
        if mask is not None and not opts.keep_background:
            raise ImageInputError("a mask image is used by keep_background only; set keep_background")
        notify = callback or _ignore
        timings = dict.fromkeys(STAGES, 0.0)

        notify(Progress("audio"))
        t = time.perf_counter()
        # An explicit length needs at most the cap's worth of each track; without one, a track over the cap is refused
        # (one track over the cap is enough: arranged, the speakers last at least as long as each of them).
        speech16, speech48 = self.prepare_audio(
            audio, opts.audio_type, max_seconds=opts.max_duration_s, cut=opts.num_frames is not None
        )
        if opts.num_frames is not None:
            speech16, speech48 = speech16.fitted(opts.num_frames), speech48.fitted(opts.num_frames, AUDIO_RATE)
        if speech16.frames / FPS > opts.max_duration_s:
            raise AudioError(f"the audio lasts {speech16.frames / FPS:.1f} s, over the {opts.max_duration_s:g} s limit")
        speakers = len(speech16.tracks)
        adapter = adapter_for(opts.model, speakers)
        if adapter not in self.adapters:
            raise InputError(f"model: {adapter} is not loaded here (loaded: {', '.join(self.adapters)})")
        clips, total_frames = plan_clips(
            speech16.frames, opts.mode, opts.frames_per_clip, opts.motion_frames, lead_in=loop.lead_in
        )
        features = None  # FlashTalk: each window's features from its audio cache (``_window_audio``)
        if not loop.cached_audio_s:
            features = torch.stack([self.audio_encoder(track) for track in speech16.tracks])  # [P, L, layers, C]
        timings["audio"] = time.perf_counter() - t

        notify(Progress("conditioning", total_clips=len(clips), total_steps=opts.steps))
        if video is not None:
            cap = video_limit(opts.max_duration_s)
            source: ConditionSource = VideoSource(video, name=names.video, source_end=opts.source_end, max_seconds=cap)
        else:
            source = ImageSource(load_image(image, names.image))
        try:
            single_box = opts.keep_background and speakers == 1
            if boxes is not None and speakers != MAX_SPEAKERS and not (single_box and len(boxes) == 1):
                raise ImageInputError(
                    f"{names.boxes}: person boxes are for two speakers (or one box for keep_background with one "
                    f"speaker); got {plural(len(boxes), 'box')} and {plural(speakers, 'speaker')}"
                )
            if boxes is not None and speakers == 1:
                boxes[0].validate(source.width, source.height, names.box.format(n=1))
            height, width = source.height, source.width
            target = tuple(opts.size) if opts.size else choose_bucket(height, width, loop.buckets or opts.resolution)
            reference = source.frame(0, target)  # [3, H, W] in [-1, 1]
            routing_boxes = boxes if speakers == MAX_SPEAKERS else None
            bucket_masks = crop_masks(person_masks(height, width, routing_boxes, speakers), target)
            masks = latent_masks(bucket_masks, (target[0] // VAE_STRIDE[1], target[1] // VAE_STRIDE[2]))
            region = None
            if opts.keep_background:
                mask_image = load_image(mask, names.mask) if mask is not None else None
                region = region_mask(
                    target,
                    (height, width),
                    boxes=None if mask_image else boxes,
                    mask=mask_image,
                    feather=opts.feather,
                    name=names.mask,
                )
            t = time.perf_counter()
            switch = self.use_adapter(adapter)
            timings["adapter_switch"] = switch
            context, context_null = self.encode_prompts(prompt, opts.negative_prompt or _default_negative())
            timings["text_encoder"] = time.perf_counter() - t - switch
        except BaseException:
            source.close()
            raise
        return PreparedJob(
            options=opts,
            speakers=speakers,
            features=features,
            soundtrack=speech48.soundtrack,
            clips=clips,
            total_frames=total_frames,
            reference=reference,
            bucket_masks=bucket_masks,
            masks=masks.to(self.device),
            context=context,
            context_null=context_null,
            timings=timings,
            source=source,
            adapter=adapter,
            loop=loop,
            region=region,
            tracks=speech16.tracks if loop.cached_audio_s else None,
        )

    def frames(
        self, job: PreparedJob, callback: Callable[[Progress], None] | None = None, resume: LoopState | None = None
    ) -> Iterator[torch.Tensor]:
        """Denoise and decode clip after clip; yields each clip's new frames ``[3, n, H, W]`` in [-1, 1]
        (colour-corrected, composited over the source with ``keep_background``, cut so that all yielded frames add
        up to ``job.total_frames``). Closes the job's source when done. ``job.state`` says where the loop stands
        after each yield (save it to continue later); ``resume``: such a state, to continue from it."""
        try:
            yield from self._frames(job, callback, resume)
        finally:
            job.source.close()

    def _frames(self, job: PreparedJob, callback, resume: LoopState | None) -> Iterator[torch.Tensor]:
        opts, notify, timings, loop = job.options, callback or _ignore, job.timings, job.loop
        set_speed_lora(
            self.transformer, opts.speed_lora, loaded=self.speed_lora is not None, fused=self.speed_lora_fused
        )
        if self.adapter != job.adapter:  # another job switched adapters since this one was prepared
            timings["adapter_switch"] += self.use_adapter(job.adapter)
        if opts.cache_threshold > 0:
            job.step_cache = StepCache(opts.cache_threshold, opts.resolution)
        guidance = Guidance(opts.text_scale, opts.audio_scale, opts.use_apg, opts.apg_momentum, opts.apg_norm_threshold)
        grid = (flashtalk_timesteps if loop.sampler == "x0" else timesteps)(opts.steps, opts.shift).to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(opts.seed)
        size = tuple(job.reference.shape[1:])
        motion = job.reference[:, None].to(self.device)  # the frames the next clip continues from [3, n, H, W]
        written, first = 0, 0
        if resume is not None and resume.clip:  # continue a job an earlier run left after window resume.clip
            first, written = resume.clip, resume.written
            motion = resume.motion.to(self.device)
            generator.set_state(resume.rng)
            if job.step_cache is not None:
                job.step_cache.computed, job.step_cache.skipped = resume.forwards
            if resume.drift:
                job.drift = DriftMonitor.from_state(resume.drift)
        job.state = LoopState(first, written)
        for clip in job.clips[first:]:
            t = time.perf_counter()
            windows = self._window_audio(job, clip).to(self.device)
            timings["audio"] += time.perf_counter() - t
            if job.step_cache is not None:
                job.step_cache.new_clip()
            # InfiniteTalk: the clip's reference is the source frame at its start; MultiTalk: the motion frames
            reference = job.source.frame(max(clip.start, 0), size) if loop.source_condition else job.reference
            cond = reference[:, None].to(self.device) if loop.source_condition else motion
            latent = self._sample_clip(job, clip, cond, motion, windows, guidance, grid, generator, notify)

            def decoding(done: int, total: int, clip_no: int = clip.index + 1) -> None:
                notify(Progress("decoding", clip_no, len(job.clips), opts.steps, opts.steps, done=done, total=total))

            decoding(0, latent.shape[1])
            t = time.perf_counter()
            decoded = self.vae.decode(latent, progress=decoding)  # [3, F, H, W]
            timings["vae_decode"] += time.perf_counter() - t
            t = time.perf_counter()
            # colour: towards the clip's own reference (a video's frame at the clip start; the image otherwise)
            decoded = correct_colors(decoded, reference.to(decoded.device), opts.color_correction, loop.color)
            timings["color_correction"] += time.perf_counter() - t
            if job.region is not None:
                t = time.perf_counter()
                behind = job.source.clip(clip.start, decoded.shape[1], size)  # the source frames at the same times
                decoded = composite(decoded, behind.to(decoded.device), job.region.to(decoded.device))
                timings["composite"] = timings.get("composite", 0.0) + time.perf_counter() - t
            if len(job.clips) > 1:  # drift: windows that continue from one another, as shown and carried on
                t = time.perf_counter()
                note = job.drift.observe(clip.index, decoded, reference)
                timings["color_correction"] += time.perf_counter() - t
                if note is not None:
                    job.notes.append(note)
            new = decoded[:, clip.keep_from :][:, : job.total_frames - written]
            written += new.shape[1]
            # the next window continues from these frames, as a compact copy: the same tensor a resumed run loads
            # (a strided view could take other numerical paths in the encoders than the copy does)
            saved = decoded[:, -opts.motion_frames :].detach().cpu().clone()
            motion = saved.to(self.device)
            cache = job.step_cache
            job.state = LoopState(
                clip.index + 1,
                written,
                saved,
                generator.get_state(),
                (cache.computed, cache.skipped) if cache is not None else (0, 0),
                job.drift.state(),
            )
            yield new

    def warm_up(self, size: tuple[int, int] = (128, 128), frames: int = 5, steps: int = 1) -> float:
        """One tiny generation on synthetic inputs (every model runs once), so that the first real job does not pay
        for kernel selection, allocator growth and lazy initialisation. Returns the seconds it took."""
        start = time.perf_counter()
        rng = np.random.RandomState(0)
        image = Image.fromarray(rng.randint(0, 256, (*size, 3), dtype=np.uint8))
        t = np.arange(int((frames / 25 + 0.2) * 16000)) / 16000
        wave = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)
        window = {"size": size, "mode": "clip", "num_frames": frames, "frames_per_clip": frames, "motion_frames": 1}
        if self.adapter == "flashtalk":  # the realtime preset's model: its own sampler and audio path
            options = GenerateOptions.from_preset("realtime", steps=steps, seed=0, **window)
        else:
            options = GenerateOptions(steps=steps, seed=0, model=self.adapter, **window)
        job = self.prepare(image, [wave], "a person talks", options=options)
        for _ in self.frames(job):
            pass
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def generate(
        self,
        image: str | Path | bytes | Image.Image | None,
        audio: list[str | Path | bytes | np.ndarray | None],
        prompt: str,
        output: str | Path,
        *,
        video: str | Path | bytes | None = None,
        mask: str | Path | bytes | Image.Image | None = None,
        boxes: list[Box] | None = None,
        options: GenerateOptions | None = None,
        callback: Callable[[Progress], None] | None = None,
        thumbnail: str | Path | None = None,
        mask_preview_path: str | Path | None = None,
        names: InputNames = LIBRARY_INPUT_NAMES,
        job_dir: str | Path | None = None,
        fingerprint: str | None = None,
        on_segment: Callable[[Segment], None] | None = None,
        on_plan: Callable[[JobPlan], None] | None = None,
    ) -> GenerationResult:
        """Generate the talking video into ``output`` (MP4, H.264 + AAC, 25 fps).

        The source: ``image`` (a reference image), or ``video`` (a video to dub, with an InfiniteTalk model: its
        frames are read at 25 fps by their timestamps; its own soundtrack is replaced by ``audio``).
        ``options.model`` chooses the model (``multitalk``, ``infinitetalk``, ...); ``options.keep_background``
        keeps the source outside the speaker regions (``boxes``, or ``mask``: an image of the source's size, white
        where the video is regenerated). ``audio``: one entry per speaker (a path, the file's bytes, a 16 kHz float
        array, or ``None`` for a silent speaker). ``boxes``: two person boxes in source pixels (two speakers;
        default: left/right halves; one box for one speaker with ``keep_background``).
        ``callback`` receives a ``Progress`` after every stage and sampling step; raising ``GenerationCancelled`` in
        it stops the job between steps (the partial MP4 is removed). ``names``: how the caller names its inputs, so
        that an input found unusable here is named as the caller sent it (e.g. ``video_url``, ``cond_video``).

        Long jobs (``segments.py``): with ``job_dir`` every finished window is written there as a playable segment
        (given to ``on_segment`` at once) and the loop's state is saved after it; a later call with the same inputs
        and ``job_dir`` (and the same ``fingerprint``: the caller's description of the request, if any) continues
        after the last saved window and gives the same video. ``on_plan`` receives the job's ``JobPlan`` before any
        sampling (raise in it to refuse the job).
        """
        started = time.perf_counter()
        for path, name in ((output, "output"), (thumbnail, "thumbnail"), (mask_preview_path, "mask_preview_path")):
            if path is not None:  # before any work: a missing folder must not cost a finished video
                check_output_path(path, name)
        job = self.prepare(
            image, audio, prompt, video=video, mask=mask, boxes=boxes, options=options, callback=callback, names=names
        )
        try:
            folder = None
            if job_dir is not None:
                fallback = Path(output).with_name(Path(output).stem + "-segments")
                folder = JobFolder(
                    Path(job_dir), fallback, fingerprint_of(job, fingerprint), len(job.clips), job.options.crf
                )
            return self._generate(
                job, started, output, callback, thumbnail, mask_preview_path, folder, on_segment, on_plan
            )
        finally:
            job.source.close()

    def _generate(
        self, job, started, output, callback, thumbnail, mask_preview_path, folder, on_segment, on_plan
    ) -> GenerationResult:
        opts, timings, notify = job.options, job.timings, callback or _ignore
        preview = None
        if mask_preview_path is not None:
            preview = Path(mask_preview_path)
            mask_preview(job.reference, job.bucket_masks, job.speakers).save(preview)
        height, width = job.reference.shape[1:]
        resume = folder.load() if folder is not None else None
        if resume is not None:
            opts.seed = folder.seed  # the seed the earlier run drew (or was given)
            job.notes.append(f"resumed after window {resume.clip} of {len(job.clips)} (saved by an earlier run)")
        if on_plan is not None:
            on_plan(self._plan(job, resume.clip if resume else 0))
        if folder is not None:
            for segment in folder.segments:  # an earlier run's windows, announced again
                if on_segment is not None:
                    on_segment(segment)
            written, first_frame = self._write_segments(job, folder, resume, callback, on_segment, output)
        else:
            written, first_frame = self._write_mp4(job, callback, output)
        if folder is not None:
            job.notes.extend(folder.notes)
        thumb = save_thumbnail(first_frame, thumbnail) if thumbnail is not None else None
        timings["total"] = time.perf_counter() - started
        cache = job.step_cache
        forwards = {"computed": cache.computed, "reused": cache.skipped} if cache else {}
        if cache is not None:
            job.notes.append(cache.summary)
        notify(Progress("done", len(job.clips), len(job.clips), opts.steps, opts.steps))
        return GenerationResult(
            video_path=Path(output),
            frames=written,
            seconds=written / FPS,
            width=width,
            height=height,
            seed=opts.seed,
            speakers=job.speakers,
            clips=len(job.clips),
            options=asdict(opts),
            timings={k: round(v, 4) for k, v in timings.items()},
            thumbnail_path=thumb,
            mask_preview_path=preview,
            notes=job.notes,
            forwards=forwards,
            model=job.adapter,
            segments=len(folder.segments) if folder is not None else 0,
            resumed_from=resume.clip if resume is not None else 0,
            drift=job.drift.summary() if len(job.clips) > 1 else {},
        )

    def _write_mp4(self, job: PreparedJob, callback, output) -> tuple[int, np.ndarray | None]:
        """The frames into one MP4 as they come; returns (frames written, the first frame)."""
        opts, timings, notify = job.options, job.timings, callback or _ignore
        height, width = job.reference.shape[1:]
        writer = Mp4Writer(output, width, height, crf=opts.crf)
        written, first_frame = 0, None
        try:
            for chunk in self.frames(job, callback):
                t = time.perf_counter()
                pixels = frames_to_uint8(chunk)
                writer.write(pixels)
                first_frame = pixels[0] if first_frame is None else first_frame
                written += len(pixels)
                timings["encode_mux"] += time.perf_counter() - t
            notify(Progress("muxing", len(job.clips), len(job.clips), opts.steps, opts.steps))
            t = time.perf_counter()
            writer.close(job.soundtrack, AUDIO_RATE)
            timings["encode_mux"] += time.perf_counter() - t
        except BaseException:
            writer.abort()
            raise
        return written, first_frame

    def _write_segments(
        self, job: PreparedJob, folder: JobFolder, resume, callback, on_segment, output
    ) -> tuple[int, np.ndarray | None]:
        """Each window as a segment in the job folder, the state saved after it; then the MP4 from the segments."""
        opts, timings, notify = job.options, job.timings, callback or _ignore
        sound = peak_limited(job.soundtrack, job.total_frames)
        first_frame = None
        window_start = time.perf_counter()
        for chunk in self.frames(job, callback, resume):
            t = time.perf_counter()
            pixels = frames_to_uint8(chunk)
            first_frame = pixels[0] if first_frame is None and not folder.segments else first_frame
            state = job.state
            segment = folder.add(pixels, state.written - len(pixels), sound, 0.0)
            folder.save(state, opts.seed)
            timings["encode_mux"] += time.perf_counter() - t
            segment.seconds = round(time.perf_counter() - window_start, 4)
            if on_segment is not None:
                on_segment(segment)
            window_start = time.perf_counter()
        notify(Progress("muxing", len(job.clips), len(job.clips), opts.steps, opts.steps))
        t = time.perf_counter()
        written = assemble(folder.segments, Path(output), sound)
        timings["encode_mux"] += time.perf_counter() - t
        if first_frame is None:
            first_frame = _first_frame(folder.segments[0].path)
        return written, first_frame

    def _plan(self, job: PreparedJob, resume_from: int) -> JobPlan:
        opts = job.options
        guidance = Guidance(opts.text_scale, opts.audio_scale, opts.use_apg, opts.apg_momentum, opts.apg_norm_threshold)
        return JobPlan(
            windows=len(job.clips),
            frames=job.total_frames,
            height=int(job.reference.shape[1]),
            width=int(job.reference.shape[2]),
            steps=opts.steps,
            passes=len(guidance.passes()) if job.loop.guided else 1,
            frames_per_clip=opts.frames_per_clip,
            model=job.adapter,
            speakers=job.speakers,
            resume_from=resume_from,
            speed_lora=bool(opts.speed_lora),
            cache_threshold=opts.cache_threshold,
        )

    def _window_audio(self, job: PreparedJob, clip: ClipPlan) -> torch.Tensor:
        """A clip's audio windows ``[P, frames, 5, layers, C]``: from the whole track's features, the last clip's
        continued by their mirror image; FlashTalk: computed from the clip's own audio cache (``variants.py``)."""
        opts, loop = job.options, job.loop
        if loop.cached_audio_s:
            parts = [
                cached_window_features(self.audio_encoder, track, clip.end, opts.frames_per_clip, loop.cached_audio_s)
                for track in job.tracks
            ]
            return torch.cat(parts)
        mirrored = clip.end + 3 if clip.mirror_audio else None  # the last clip: audio continued by its mirror
        return window_features(job.features, clip.start, opts.frames_per_clip, length=mirrored)

    def _condition(self, job: PreparedJob, cond: torch.Tensor, encoding) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP features of the last condition frame and ``y`` (4 mask channels + the VAE latent of the condition
        frames followed by zeros). An image source gives the same pair every clip: made once per job."""
        opts = job.options
        frames, n_cond = opts.frames_per_clip, cond.shape[1]
        height, width = cond.shape[2], cond.shape[3]
        lat_h, lat_w, lat_t = height // VAE_STRIDE[1], width // VAE_STRIDE[2], (frames - 1) // VAE_STRIDE[0] + 1
        fixed = job.loop.source_condition and isinstance(job.source, ImageSource)
        if fixed and job.condition is not None:
            return job.condition
        clip_features = self.image_encoder(cond[:, -1])  # CLIP of the last condition frame
        video = torch.cat([cond, torch.zeros(3, frames - n_cond, height, width, device=cond.device)], dim=1)
        y_latent = self.vae.encode(video, progress=encoding)  # [16, T, h, w]
        # 4 mask channels: 1 on the condition frames; frame 0 counts 4 times so the frames fold into latent frames.
        mask = torch.ones(1, frames, lat_h, lat_w, device=self.device)
        mask[:, n_cond:] = 0
        mask = torch.cat([mask[:, :1].repeat(1, VAE_STRIDE[0], 1, 1), mask[:, 1:]], dim=1)
        mask = mask.view(1, lat_t, VAE_STRIDE[0], lat_h, lat_w).transpose(1, 2)[0]  # [4, T, h, w]
        y = torch.cat([mask, y_latent.to(self.device)]).to(self.dtype)
        if fixed:
            job.condition = (clip_features, y)
        return clip_features, y

    def _sample_clip(self, job, clip, cond, motion, windows, guidance, grid, generator, notify) -> torch.Tensor:
        """Denoise one clip conditioned on ``cond`` (frames ``[3, n, H, W]``), continuing from ``motion`` (the
        previous clip's last frames; the reference frame for the first clip); returns its latents ``[16, T, h, w]``."""
        opts, timings, loop = job.options, job.timings, job.loop
        t = time.perf_counter()
        frames, n_cond = opts.frames_per_clip, cond.shape[1]
        height, width = cond.shape[2], cond.shape[3]
        lat_h, lat_w, lat_t = height // VAE_STRIDE[1], width // VAE_STRIDE[2], (frames - 1) // VAE_STRIDE[0] + 1
        clip_no, clips, steps = clip.index + 1, len(job.clips), opts.steps

        def encoding(done: int, total: int) -> None:
            notify(Progress("encoding", clip_no, clips, 0, steps, done=done, total=total))

        encoding(0, lat_t)
        clip_features, y = self._condition(job, cond, encoding)
        encoding(lat_t, lat_t)  # encoded (again if the VAE said so already: the clock reads the first)
        if loop.clean_motion:  # InfiniteTalk: the motion frames (first clip: the reference frame) encoded alone
            motion_latents = self.vae.encode(motion).to(self.device, torch.float32)
        else:  # MultiTalk: the condition is the motion frames; their latents are y's first frames
            motion_latents = y[4 : 4 + 16, : 1 + (n_cond - 1) // VAE_STRIDE[0]].float() if clip.index else None
        timings["image_encoders"] += time.perf_counter() - t

        t = time.perf_counter()
        null_audio = torch.zeros_like(windows[-1:])
        passes = {
            "cond": (job.context, windows),
            "drop_text": (job.context_null, windows),
            "uncond": (job.context_null, null_audio),
            "drop_audio": (job.context, null_audio),
        }
        latent = torch.randn(16, lat_t, lat_h, lat_w, generator=generator, device=self.device, dtype=torch.float32)
        n_motion = motion_latents.shape[1] if motion_latents is not None else 0

        def inject(timestep: torch.Tensor) -> None:
            """Motion latents into the latent: MultiTalk re-noises them to ``timestep``; InfiniteTalk writes them
            clean. InfiniteTalk's official loop still draws MultiTalk's re-noising noise after the first clip (and
            then overwrites its result): the draw is kept, so that a seed gives the official noise."""
            if motion_latents is None:
                return
            draw = not loop.clean_motion or (clip.index and loop.motion_noise_draw)
            noise = self._randn_like(motion_latents, generator) if draw else None
            latent[:, :n_motion] = motion_latents if loop.clean_motion else add_noise(motion_latents, noise, timestep)

        inject(grid[0])
        buffers = guidance.new_buffers()
        cache = job.step_cache
        for i in range(opts.steps):
            if not loop.guided:  # FlashTalk: one pass, the clean prediction re-noised to the next timestep
                velocity = self._predict(latent, grid[i], y, clip_features, *passes["cond"], job.masks, cache, job)
                noise = self._randn_like(latent, generator)
                latent = x0_renoise_step(latent, velocity, grid[i], grid[i + 1], noise)
                inject(grid[i + 1])
                notify(Progress("sampling", clip.index + 1, len(job.clips), i + 1, opts.steps))
                continue
            preds = {}
            for name in guidance.passes():
                if cache is not None:
                    cache.select(name, i)
                preds[name] = self._predict(latent, grid[i], y, clip_features, *passes[name], job.masks, cache, job)
            latent = euler_step(latent, guidance.combine(preds, buffers), grid[i], grid[i + 1])
            inject(grid[i + 1])
            notify(Progress("sampling", clip.index + 1, len(job.clips), i + 1, opts.steps))
        timings["sampling"] += time.perf_counter() - t
        return latent

    @staticmethod
    def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)

    def _predict(self, latent, t, y, clip_features, context, audio, masks, cache=None, job=None) -> torch.Tensor:
        """One transformer pass -> velocity ``[16, T, h, w]`` float32. If a fast attention kernel fails, the pass is
        retried with PyTorch SDPA, which then serves every later pass (noted in ``job.notes``)."""
        dtype = self.dtype
        hidden = torch.cat([latent.to(dtype), y.to(dtype)])[None]
        args = (
            hidden,
            t.reshape(1).float(),
            context[None].to(dtype),
            clip_features.to(dtype),
            audio.to(dtype),
            masks if audio.shape[0] == MAX_SPEAKERS else None,
        )
        kwargs = {"step_cache": cache} if cache is not None else {}
        saved = cache.save() if cache is not None else None
        with torch.inference_mode():
            try:
                out = self.transformer(*args, **kwargs)
            except Exception as exc:
                parallel = getattr(self.transformer, "_parallel_config", None) is not None  # a retry on one rank
                if self.attention_backend == NATIVE or parallel or not is_kernel_failure(exc):  # would desync
                    raise
                failed = self.attention_backend
                choose_attention_backend(self.transformer, self.device, dtype, NATIVE)
                if cache is not None:
                    cache.restore(saved)
                try:
                    out = self.transformer(*args, **kwargs)
                except Exception:  # SDPA fails too: not the kernel's fault, keep the fast kernel
                    self.attention_backend, _ = choose_attention_backend(self.transformer, self.device, dtype, failed)
                    raise
                self.attention_backend = NATIVE
                note = f"attention backend {failed} failed ({exc}); switched to PyTorch SDPA"
                logger.warning(note)
                if job is not None:
                    job.notes.append(note)
        return (out.sample if hasattr(out, "sample") else out)[0].float()


def _adapter_files(paths, adapters: list[str] | None) -> dict[str, Path | None]:
    """{adapter: its weights file} for the adapters to hold, in order (``None``: the first the folder has, FlashTalk
    when its transformer is the folder's only one). A MultiTalk file ``None`` means the transformer's own files hold
    MultiTalk's audio weights. FlashTalk: {"flashtalk": its folder}; an adapter when the folder's only transformer is
    FlashTalk's: ``ConfigError`` (adapters need the Wan base)."""
    from ..errors import ConfigError
    from ..loading.adapters import adapter_spec

    found = paths.adapters()
    flashtalk = getattr(paths, "flashtalk", None)
    only_flashtalk = flashtalk is not None and paths.transformer == flashtalk
    if adapters is None:
        if only_flashtalk:
            return {"flashtalk": flashtalk}
        return dict([next(iter(found.items()))]) if found else {}
    held: dict[str, Path | None] = {}
    for requested in adapters:
        name = adapter_spec(requested).name
        if adapter_spec(name).full_transformer:
            if flashtalk is None:
                raise ConfigError(f"model {name} is not in the model folder (expected {adapter_spec(name).folder}/)")
            held[name] = flashtalk
        elif only_flashtalk:
            raise ConfigError(
                f"model {name} needs the Wan2.1-I2V-14B base transformer; this model folder has only FlashTalk's "
                f"({flashtalk}), a different model"
            )
        elif name in found:
            held[name] = found[name]
        elif name == "multitalk" and not held:
            held[name] = None  # in the transformer's own files (diffusers or single-file layouts)
        else:
            raise ConfigError(f"model {name} is not in the model folder (found: {', '.join(found) or 'none'})")
    if not held:
        raise ConfigError("adapters: name at least one model")
    return held


def _resolve_plan(
    plan: MemoryPlan | str | None, device: torch.device, transformer: Path, resolution: str = "480p"
) -> MemoryPlan | None:
    """``None``: everything resident in the loading dtype. ``"auto"``: the planner, from the GPU's total memory (on
    a CPU: nothing to plan). A name: parsed (``memory.parse_plan``)."""
    if plan is None or isinstance(plan, MemoryPlan):
        return plan
    gguf = transformer.suffix == ".gguf"
    gguf_bytes = transformer.stat().st_size if gguf else None
    if plan != "auto":
        if plan.split("+")[0].strip().lower().startswith("gguf") != gguf:
            raise EngineError(f"memory plan {plan!r} does not match the transformer file {transformer.name}")
        return parse_plan(plan, resolution, gguf_bytes=gguf_bytes)
    if device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    return plan_memory(total, resolution, "gguf" if gguf else None, gguf_bytes)


def _first_frame(path: Path) -> np.ndarray:
    """The first frame of a segment (the thumbnail of a resumed job), ``[H, W, 3]`` uint8."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            return frame.to_ndarray(format="rgb24")
    raise EngineError(f"segment {path} has no frame")


def _default_negative() -> str:
    from ..models.encoders import NEGATIVE_PROMPT

    return NEGATIVE_PROMPT
