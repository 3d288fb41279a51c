"""Audio front end: decode, normalise, arrange speakers, wav2vec2 features, per-frame windows.

- Decoded with FFmpeg (through PyAV) from the containers of ``media.AUDIO_CONTAINERS`` (wav, mp3, flac, ogg/opus,
  mp4/m4a/mov, matroska/webm, aac, aiff: also the sound of a video), any codec in them. Mono, 16 kHz, float32.
- Loudness normalised to -23 LUFS (ITU-R BS.1770 via pyloudnorm, as the official code), skipped when the loudness
  cannot be measured (silence, or shorter than one 0.4 s gating block).
- Two speakers: ``add`` (speaker 1 talks, then speaker 2) or ``para`` (simultaneous); a speaker may be silent.
- wav2vec2: transformers' ``Wav2Vec2Model``; the CNN features are linearly interpolated to 25 fps *before* the
  transformer encoder, and hidden states 1..N are stacked to ``[frames, layers, channels]`` (the official recipe).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AudioError
from ..limits import MAX_SPEAKERS
from .media import AUDIO_CONTAINERS, MediaRefused, open_container
from .video import FPS

SAMPLE_RATE = 16000
TARGET_LUFS = -23.0


def decode_audio(
    source: str | Path | bytes,
    name: str = "audio",
    rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    cut: bool = False,
) -> np.ndarray:
    """Decode the first audio stream of ``source`` (a path or the file's bytes) to mono float32 at ``rate`` Hz.

    Only the containers of ``AUDIO_CONTAINERS`` are opened, and nothing the data names (files, URLs) ever is
    (``media.py``). Decoding stops past ``max_seconds`` (give or take one video frame, as the frame count rounds
    down): an over-long input is an ``AudioError`` (or, with ``cut``, cut there), so hours of audio are never
    decoded to be refused afterwards."""
    import av

    chunks = []
    limit = None if max_seconds is None else int(max_seconds * rate) + rate // FPS
    try:
        with open_container(source, AUDIO_CONTAINERS, "audio") as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError(f"{name}: the file has no audio track")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            decoded = 0
            try:
                for frame in container.decode(streams[0]):
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        decoded += chunks[-1].size
                    if limit is not None and decoded > limit:
                        if not cut:
                            raise AudioError(f"{name}: longer than the {max_seconds:g} s limit")
                        break
                else:
                    for out in resampler.resample(None):
                        chunks.append(out.to_ndarray().reshape(-1))
            except (av.error.FFmpegError, ValueError) as exc:
                raise AudioError(f"{name}: cannot decode the audio ({_first_line(exc)})") from exc
    except MediaRefused as exc:
        raise AudioError(f"{name}: {exc}") from exc
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise AudioError(f"{name}: cannot open as audio ({_first_line(exc)})") from exc
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if limit is not None:
        wave = wave[:limit]
    if wave.size == 0:
        raise AudioError(f"{name}: the audio is empty")
    if not np.isfinite(wave).all():
        raise AudioError(f"{name}: the audio contains NaN or infinite samples")
    return wave


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def loudness_normalize(wave: np.ndarray, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """Scale to ``target_lufs`` integrated loudness; unchanged when loudness is unmeasurable (|L| > 100, too short)."""
    import pyloudnorm

    meter = pyloudnorm.Meter(SAMPLE_RATE)
    try:
        loudness = meter.integrated_loudness(wave.astype(np.float64))
    except ValueError:  # shorter than one gating block
        return wave
    if not math.isfinite(loudness) or abs(loudness) > 100:
        return wave
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible clipped samples": features take float input as is
        return pyloudnorm.normalize.loudness(wave.astype(np.float64), loudness, target_lufs).astype(np.float32)


@dataclass
class SpeakerAudio:
    """Per-speaker waveforms of equal length (16 kHz) and the soundtrack a listener hears (their sum)."""

    tracks: list[np.ndarray]
    soundtrack: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.soundtrack) / SAMPLE_RATE

    @property
    def frames(self) -> int:
        """Video frames at 25 fps covered by the audio (the official ``int(seconds * 25)``)."""
        return int(len(self.soundtrack) / SAMPLE_RATE * FPS)

    def fitted(self, frames: int, rate: int = SAMPLE_RATE) -> SpeakerAudio:
        """Cut, or pad with silence, to exactly ``frames`` video frames (tracks sampled at ``rate``)."""
        n = frames * rate // FPS

        def fit(x: np.ndarray) -> np.ndarray:
            return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))

        return SpeakerAudio([fit(t) for t in self.tracks], fit(self.soundtrack))


def arrange_speakers(waves: list[np.ndarray | None], mode: str = "add") -> SpeakerAudio:
    """One or two speakers' waveforms (``None`` = silent speaker) -> equal-length tracks and their mix.

    ``add``: speaker 1 speaks, then speaker 2 (each is silent while the other talks); ``para``: both at once,
    the shorter padded with silence (the official code fails on unequal lengths there).
    """
    if not 1 <= len(waves) <= MAX_SPEAKERS:
        raise AudioError(f"MultiTalk takes 1 or {MAX_SPEAKERS} speakers, got {len(waves)}")
    if all(w is None for w in waves):
        raise AudioError("every speaker is silent: at least one audio track is needed")
    if len(waves) == 1:
        track = waves[0]
        return SpeakerAudio([track], track.copy())
    if mode not in ("add", "para"):
        raise AudioError(f"audio_type must be 'add' or 'para', got {mode!r}")
    a, b = waves
    if mode == "add":
        a = np.zeros(0, np.float32) if a is None else a
        b = np.zeros(0, np.float32) if b is None else b
        first = np.concatenate([a, np.zeros(len(b), np.float32)])
        second = np.concatenate([np.zeros(len(a), np.float32), b])
    else:
        n = max(len(w) for w in waves if w is not None)
        first, second = (np.zeros(n, np.float32) if w is None else np.pad(w, (0, n - len(w))) for w in (a, b))
    return SpeakerAudio([first, second], first + second)


class Wav2Vec2Features:
    """wav2vec2 hidden states at 25 fps, ``[frames, layers, channels]`` per speaker (``chinese-wav2vec2-base``)."""

    def __init__(self, model, feature_extractor, device: str | torch.device = "cpu"):
        self.model = model.eval().requires_grad_(False)
        self.feature_extractor = feature_extractor
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", attn_implementation: str = "sdpa"
    ) -> Wav2Vec2Features:
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        from ..libraries import quiet_transformers
        from ..loading.weights import building

        with building(), quiet_transformers():  # the checkpoint's pre-training heads are expected leftovers
            model = Wav2Vec2Model.from_pretrained(path, attn_implementation=attn_implementation, local_files_only=True)
            extractor = Wav2Vec2FeatureExtractor.from_pretrained(path, local_files_only=True)
        return cls(model.to(device), extractor, device)

    @property
    def layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def channels(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def __call__(self, wave: np.ndarray, frames: int | None = None) -> torch.Tensor:
        """``wave`` (16 kHz) -> ``[frames, layers, channels]`` float32 on CPU; ``frames`` defaults to the
        official ``int(seconds * 25)``.

        Audio longer than ``WHOLE_TRACK_SECONDS`` runs the CNN front end in chunks (``cnn_features``): the whole
        track at once keeps several ``[512, 20 * samples / 320]`` activations alive (about 16 MB a second of audio:
        9.5 GB for ten minutes, on the GPU); in chunks it is about 1 MB a second (the CNN's output at 50 Hz and the
        encoder's states at 25 Hz). Shorter audio, every length the official code runs, takes the whole-track path
        unchanged."""
        frames = int(len(wave) / SAMPLE_RATE * FPS) if frames is None else frames
        if frames < 1:
            raise AudioError("the audio is shorter than one video frame (40 ms)")
        values = self.feature_extractor(wave, sampling_rate=SAMPLE_RATE).input_values[0]
        values = torch.as_tensor(np.asarray(values), dtype=torch.float32, device=self.device)[None]
        chunked = len(wave) > WHOLE_TRACK_SECONDS * SAMPLE_RATE and _chunkable(self.model)
        self.last_chunks = 0
        if chunked:
            cnn, self.last_chunks = cnn_features(self.model, values, CNN_CHUNK_FRAMES)  # [1, 512, T at 50 Hz]
            del values
            values = torch.zeros(1, 1, device=self.device)  # the encoder below is handed the CNN output instead
        extractor = self.model.feature_extractor

        def to_video_rate(module, args, cnn):  # [1, 512, T at 50 Hz] -> [1, 512, frames]
            return F.interpolate(cnn, size=frames, mode="linear", align_corners=True)

        hook = extractor.register_forward_hook(to_video_rate)
        if chunked:
            extractor.forward = lambda input_values: cnn  # an instance attribute: the module's own forward is skipped
        try:
            out = self.model(values, output_hidden_states=True, return_dict=True)
        finally:
            hook.remove()
            extractor.__dict__.pop("forward", None)
        # [frames, layers, channels], filled layer by layer on the host: no stacked copy on the device (553 MB for
        # ten minutes of audio)
        hidden = out.hidden_states[1:]
        features = torch.empty(frames, len(hidden), hidden[0].shape[-1], dtype=torch.float32)
        for i, state in enumerate(hidden):
            features[:, i] = state[0]
        return features


WHOLE_TRACK_SECONDS = 60.0  # longer audio runs the wav2vec2 CNN in chunks (same features within float rounding)
CNN_CHUNK_FRAMES = 500  # CNN output frames (50 Hz: 10 s of audio) a chunk computes


def _chunkable(model) -> bool:
    """The CNN front ends ``cnn_features`` computes exactly: convolutions without padding, each followed by a
    per-time-step layer norm, or (the first one only) a group norm of one channel a group (per-channel statistics
    over the whole track, which ``cnn_features`` gathers in a first pass)."""
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    if layers is None:
        return False
    for i, layer in enumerate(layers):
        conv, norm = getattr(layer, "conv", None), getattr(layer, "layer_norm", None)
        if not isinstance(conv, torch.nn.Conv1d) or conv.padding != (0,) or conv.dilation != (1,):
            return False
        if isinstance(norm, torch.nn.GroupNorm) and (i or norm.num_groups != norm.num_channels):
            return False
    return True


def _receptive_field(layers) -> tuple[int, int]:
    """(samples one output frame sees, samples between two output frames) of a stack of unpadded convolutions."""
    field, step = 1, 1
    for layer in layers:
        field += (layer.conv.kernel_size[0] - 1) * step
        step *= layer.conv.stride[0]
    return field, step


def _output_length(layers, samples: int) -> int:
    for layer in layers:
        samples = (samples - layer.conv.kernel_size[0]) // layer.conv.stride[0] + 1
    return samples


def cnn_features(model, values: torch.Tensor, chunk: int = CNN_CHUNK_FRAMES) -> tuple[torch.Tensor, int]:
    """wav2vec2's CNN front end (``model.feature_extractor``) over ``values`` ``[1, samples]`` in chunks of
    ``chunk`` output frames; returns (``[1, channels, T]`` as the whole-track forward gives it, the chunk count).

    Output frame ``j`` sees samples ``[j * step, j * step + field)`` (400 and 320 for wav2vec2), so a chunk of
    output frames ``[a, b)`` is computed from samples ``[a * step, (b - 1) * step + field)`` alone, and every layer's
    frames line up with the whole-track ones. The first layer's group norm (one channel a group: each channel
    normalised by its mean and variance over the whole track) takes its statistics from a first pass over the first
    convolution, accumulated in float64, so that no chunk sees only its own."""
    layers = model.feature_extractor.conv_layers
    field, step = _receptive_field(layers)
    total = _output_length(layers, values.shape[-1])
    if total < 1:
        raise AudioError("the audio is too short for wav2vec2")
    first = layers[0]
    norm = first.layer_norm if isinstance(getattr(first, "layer_norm", None), torch.nn.GroupNorm) else None
    bounds = [(a, min(a + chunk, total)) for a in range(0, total, chunk)]
    scale = shift = None
    if norm is not None:  # pass 1: per-channel sums of the first convolution's output over the whole track
        kernel, stride = first.conv.kernel_size[0], first.conv.stride[0]
        frames0 = _output_length(layers[:1], values.shape[-1])
        step0 = max(1, chunk * step // stride)  # first-layer frames a chunk
        sums = torch.zeros(2, first.conv.out_channels, dtype=torch.float64, device=values.device)
        pivot = None  # the first chunk's channel means: sums of (x - pivot) lose nothing when a mean is large
        for a in range(0, frames0, step0):
            b = min(a + step0, frames0)
            x = first.conv(values[:, None, a * stride : (b - 1) * stride + kernel])[0]
            pivot = x.mean(dim=1, keepdim=True) if pivot is None else pivot
            x -= pivot
            sums[0] += x.sum(dim=1, dtype=torch.float64)
            sums[1] += (x * x).sum(dim=1, dtype=torch.float64)
            del x
        centred = sums[0] / frames0
        mean = centred + pivot[:, 0].double()
        inv_std = ((sums[1] / frames0 - centred * centred).clamp_min(0) + norm.eps).rsqrt()
        scale = (inv_std * norm.weight.double()).to(values.dtype)[:, None]  # GroupNorm's affine folded in
        shift = (norm.bias.double() - mean * inv_std * norm.weight.double()).to(values.dtype)[:, None]
    parts = []
    for a, b in bounds:
        x = values[:, None, a * step : (b - 1) * step + field]
        for i, layer in enumerate(layers):
            x = first.activation(first.conv(x) * scale + shift) if i == 0 and norm is not None else layer(x)
        if x.shape[-1] != b - a:  # the frames do not line up: a layer this code does not know
            raise AudioError(f"wav2vec2 chunking: {x.shape[-1]} frames for chunk [{a}, {b})")
        parts.append(x)
    return torch.cat(parts, dim=-1), len(bounds)


def window_features(
    features: torch.Tensor, start: int, frames: int, window: int = 5, length: int | None = None
) -> torch.Tensor:
    """``[P, L, layers, C]`` -> ``[P, frames, window, layers, C]``: for each video frame ``f`` of the clip that
    starts at ``start``, the features of frames ``f - window//2 .. f + window//2`` clamped to ``[0, L-1]``.

    ``length``: read them from ``mirror_pad(features, length)`` (the last clip's audio) without building it: the
    same values, but only the clip's windows are gathered, not a copy of the whole track (553 MB a speaker for ten
    minutes)."""
    half = window // 2
    centre = torch.arange(start, start + frames)[:, None] + torch.arange(-half, half + 1)[None, :]
    if length is None:
        return features[:, centre.clamp(0, features.shape[1] - 1)]
    return features[:, torch.from_numpy(_mirror_index(centre.clamp(0, length - 1).numpy(), features.shape[1]))]


def _mirror_index(idx: np.ndarray, have: int) -> np.ndarray:
    """Where frame ``idx`` of a track continued by its mirror image (``a b c | c b a | a b c ...``) comes from."""
    idx = idx % (2 * have)
    return np.where(idx < have, idx, 2 * have - 1 - idx)


def mirror_pad(features: torch.Tensor, length: int) -> torch.Tensor:
    """``[P, L, ...]`` -> ``[P, length, ...]``, continuing the time axis with its mirror image (``a b c | c b a``).

    The official code pads the last clip with the reversed last frames; this is the same for any pad length."""
    have = features.shape[1]
    if length <= have:
        return features[:, :length]
    return features[:, torch.from_numpy(_mirror_index(np.arange(length), have))]


def cached_window_features(
    encoder: Wav2Vec2Features, wave: np.ndarray, end_frame: int, frames: int, cache_seconds: int = 8, window: int = 5
) -> torch.Tensor:
    """SoulX-FlashTalk's streaming audio (``generate_video.py``, ``--audio_encode_mode stream``): the features of the
    window of ``frames`` video frames that ends at video frame ``end_frame``, computed from the last
    ``cache_seconds`` of audio up to that frame (silence before the track's start and after its end),
    loudness-normalised as a whole, at ``cache_seconds * 25`` frames; then, for each of its last ``frames`` frames,
    the features of the frame and its ``window // 2`` neighbours on each side, clamped inside the cache. Returns
    ``[1, frames, window, layers, channels]``. A window never sees audio after its own end."""
    size = cache_seconds * SAMPLE_RATE
    cache_frames = cache_seconds * FPS
    if not 0 < frames <= cache_frames:
        raise AudioError(f"a window of {frames} frames does not fit FlashTalk's {cache_seconds} s audio cache")
    end = end_frame * SAMPLE_RATE // FPS
    buffer = np.zeros(size, np.float64)
    lo, hi = max(0, end - size), min(end, len(wave))
    if hi > lo:
        buffer[lo - (end - size) : hi - (end - size)] = wave[lo:hi]
    features = encoder(loudness_normalize(buffer), frames=cache_frames)  # [cache_frames, layers, C]
    half = window // 2
    centre = torch.arange(cache_frames - frames, cache_frames)[:, None] + torch.arange(-half, half + 1)[None, :]
    return features[centre.clamp(0, cache_frames - 1)][None]
