"""Deterministic stand-ins for T5, CLIP, the VAE and the transformer, used to compare *pipelines*.

The official ``MultiTalkPipeline.generate`` and ours are run with the same stand-ins (only numpy and torch here, so
the fixture maker can import this from the official implementation's environment). Everything else is real on
both sides: audio arrangement, loudness normalisation, wav2vec2 (a tiny checkpoint), windows, buckets, resize and
crop, person masks, the timestep grid, guidance, Euler steps, motion-frame re-noising, the random draws, the clip
schedule, mirror padding and colour correction. The stand-in model's output depends on all of its inputs (audio
per latent frame, masks, text, image, timestep), so a difference anywhere upstream shows in the frames.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import torch
import torch.nn.functional as F

TEXT_DIM = 8
CLIP_DIM = 8
_PROJ = torch.from_numpy(np.random.RandomState(12).standard_normal((16, 3)).astype(np.float32)) * 0.5
_UNPROJ = torch.linalg.pinv(_PROJ)
_CLIP_BASE = torch.from_numpy(np.random.RandomState(11).standard_normal((257, CLIP_DIM)).astype(np.float32))


def text_features(prompt: str) -> torch.Tensor:
    """[tokens, 8] for a prompt (length and values depend on the string)."""
    n = 4 + len(prompt) % 5
    rng = np.random.RandomState(zlib.crc32(prompt.encode()))
    return torch.from_numpy(rng.standard_normal((n, TEXT_DIM)).astype(np.float32))


def clip_features(frame: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [-1, 1] -> [1, 257, 8]."""
    frame = frame.float()
    return (_CLIP_BASE * frame.std() + frame.mean())[None]


def vae_encode(video: torch.Tensor, progress=None) -> torch.Tensor:
    """[3, F, H, W] -> [16, T, H/8, W/8]: 8x8 average pooling, frame 0 alone then groups of 4, a fixed 3->16 map."""
    pooled = F.avg_pool2d(video.float().transpose(0, 1), 8).transpose(0, 1)  # [3, F, h, w]
    folded = torch.cat([pooled[:, :1], pooled[:, 1:].unflatten(1, (-1, 4)).mean(2)], dim=1)
    return torch.einsum("oc,cthw->othw", _PROJ, folded)


def vae_decode(latent: torch.Tensor, progress=None) -> torch.Tensor:
    """[16, T, h, w] -> [3, 4(T-1)+1, 8h, 8w] in [-1, 1]."""
    rgb = torch.einsum("co,othw->cthw", _UNPROJ, latent.float())
    frames = torch.cat([rgb[:, :1], rgb[:, 1:].repeat_interleave(4, dim=1)], dim=1)
    up = F.interpolate(frames.transpose(0, 1), scale_factor=8, mode="nearest").transpose(0, 1)
    return torch.tanh(up).clamp(-1, 1)


def velocity(latent, y, t, context, clip, audio, masks) -> torch.Tensor:
    """The stand-in transformer: [16, T, h, w] from every conditioning input."""
    a = audio.float().mean(dim=(0, 2, 3, 4))  # per video frame
    per_latent = torch.cat([a[:1], a[1:].unflatten(0, (-1, 4)).mean(1)])  # per latent frame
    v = (
        0.3 * latent.float()
        - 0.2 * y[4:].float()
        + 0.1 * y[:4].float().mean(0)
        + 0.05 * (t.float().reshape(()) / 1000)
        + 0.02 * context.float().mean()
        + 0.02 * clip.float().mean()
        + 0.5 * per_latent[None, :, None, None]
    )
    if audio.shape[0] == 2:
        v = v + 0.1 * (masks[0].float() - masks[1].float())[None, None]
    return v


class CallLog:
    """What the stand-in transformer was called with: per call the timestep, the audio's speakers and checksum,
    and per clip (first call) the window means ``[P, F, window]`` and the masks."""

    def __init__(self):
        self.calls: list[dict] = []

    def record(self, t, audio, masks, latent) -> None:
        self.calls.append(
            {
                "t": float(t.float().reshape(())),
                "speakers": int(audio.shape[0]),
                "audio_sum": float(audio.double().sum()),
                "latent_sum": float(latent.double().sum()),
                "window_means": audio.float().mean(dim=(3, 4)),
                "masks": None if masks is None else masks.float(),
            }
        )


# --- scenarios replayed by the official pipeline (fixture maker) and ours (tests/test_pipeline_parity.py) --------
# Bucket table patched into the official code so the frames stay small: {ratio: ([height, width], 1)}.
SMALL_BUCKETS = {"0.50": ([48, 96], 1), "0.67": ([64, 96], 1), "1.00": ([64, 64], 1), "1.50": ([96, 64], 1)}
IMAGE_SIZE = (300, 500)  # source image height, width -> ratio 0.6 -> the 64 x 96 bucket
FRAME_NUM, MOTION_FRAMES = 21, 5  # shorter clips than the real 81 / 25, same algorithm

SCENARIOS = {
    # one speaker, clip mode, 3-pass guidance
    "one_speaker_clip": {
        "speakers": [1.2],
        "audio_type": None,
        "bbox": None,
        "mode": "clip",
        "steps": 3,
        "text_scale": 5.0,
        "audio_scale": 4.0,
        "apg": False,
        "color": 1.0,
        "seed": 42,
    },
    # two speakers one after the other, person boxes, streaming over 4 clips with mirror padding at the end
    "two_add_boxes_streaming": {
        "speakers": [1.0, 1.3],
        "audio_type": "add",
        "bbox": {"person1": [20, 30, 280, 240], "person2": [40, 260, 290, 480]},
        "mode": "streaming",
        "steps": 2,
        "text_scale": 5.0,
        "audio_scale": 4.0,
        "apg": False,
        "color": 0.7,
        "seed": 7,
    },
    # two speakers at once, default masks, 2-pass guidance (text scale 1) with APG, streaming over 2 clips
    "two_para_default_masks_apg": {
        "speakers": [1.5, 1.5],
        "audio_type": "para",
        "bbox": None,
        "mode": "streaming",
        "steps": 3,
        "text_scale": 1.0,
        "audio_scale": 3.0,
        "apg": True,
        "color": 1.0,
        "seed": 3,
    },
}


def speech_like(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    """A voiced, syllable-modulated signal (harmonics of a wandering pitch under a 4 Hz envelope) plus noise."""
    rng = np.random.RandomState(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 0.7
    return (0.2 * voice * envelope + 0.01 * rng.standard_normal(n)).astype(np.float32)


def scenario_image() -> np.ndarray:
    """The source image, [H, W, 3] uint8: smooth gradients with two bright 'faces'."""
    h, w = IMAGE_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200 + 30, yy / h * 180 + 40, (xx + yy) / (h + w) * 150 + 60], axis=-1)
    for cy, cx in ((140, 130), (160, 370)):
        img += 60 * np.exp(-(((yy - cy) / 50) ** 2 + ((xx - cx) / 40) ** 2))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


# --- InfiniteTalk scenarios: the official ``generate_infinitetalk`` (make_infinitetalk_pipeline_fixtures.py) and ours
# (tests/test_infinitetalk_pipeline_parity.py). Real window sizes: 81 frames, 9 motion frames, windows every 72 frames;
# ~7 s of audio (175 frames) gives three windows starting at frames 0, 72 and 144.
ITK_FRAME_NUM, ITK_MOTION_FRAMES = 81, 9
ITK_BUCKETS = {"0.67": ([32, 48], 1), "1.00": ([32, 32], 1), "1.50": ([48, 32], 1)}  # smaller still: 243 frames a run
SOURCE_VIDEO_SIZE = (150, 250)  # height, width: ratio 0.6 -> the 32 x 48 bucket, as IMAGE_SIZE
SOURCE_VIDEO_FRAMES = 130  # 5.2 s at 25 fps: shorter than the audio, so window 3 (frame 144) holds the last frame

ITK_SCENARIOS = {
    # one speaker, image source, 3-pass guidance, colour correction towards the image
    "image_one_speaker": {
        "source": "image",
        "adapter": "infinitetalk-single",
        "speakers": [7.0],
        "audio_type": None,
        "steps": 4,
        "text_scale": 5.0,
        "audio_scale": 4.0,
        "color": 1.0,
        "seed": 42,
    },
    # two speakers one after the other, video source (the reference frame changes per window), 2-pass guidance
    # (text scale 1), no colour correction (ours matches each window to its own reference frame, the official
    # code to frame 0: colour is compared in image mode only)
    "video_two_speakers": {
        "source": "video",
        "adapter": "infinitetalk-multi",
        "speakers": [3.4, 3.6],
        "audio_type": "add",
        "steps": 3,
        "text_scale": 1.0,
        "audio_scale": 3.0,
        "color": 0.0,
        "seed": 5,
    },
}


@functools.lru_cache(maxsize=1)
def _video_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = SOURCE_VIDEO_SIZE
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    base = np.stack(
        [
            np.broadcast_to(xx / w * 200 + 30, (h, w)),
            np.broadcast_to(yy / h * 180 + 40, (h, w)),
            (xx + yy) / (h + w) * 150 + 60,
        ],
        axis=-1,
    )
    return yy, xx, base


def source_video_frame(index: int) -> np.ndarray:
    """Frame ``index`` of the source video, [H, W, 3] uint8: a drifting gradient and a bright blob moving right."""
    yy, xx, base = _video_grid()
    t = index / SOURCE_VIDEO_FRAMES
    drift = np.array([20 * np.sin(6 * t), 0, -40 * t], dtype=np.float32)
    blob = 70 * np.exp(-(((yy - 70) / 25) ** 2)) * np.exp(-(((xx - 60 - 130 * t) / 20) ** 2))
    return np.clip(base + drift + blob[..., None], 0, 255).astype(np.uint8)


def write_source_video(path) -> None:
    """The source video: MP4, H.264 in RGB, lossless (libx264rgb, qp 0), 25 fps; every decoder returns exactly
    ``source_video_frame``."""
    import av

    h, w = SOURCE_VIDEO_SIZE
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "rgb24"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for i in range(SOURCE_VIDEO_FRAMES):
            frame = av.VideoFrame.from_ndarray(source_video_frame(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# --- FlashTalk scenarios: the official ``FlashTalkPipeline`` driven by ``generate_video.py --audio_encode_mode stream``
# (make_flashtalk_pipeline_fixtures.py) and ours (tests/test_flashtalk_pipeline_parity.py). Real window sizes: 33
# frames, 5 motion frames, 28 new frames (1.12 s, 17920 samples) a window; one speaker; the image of
# ``scenario_image()``; the realtime preset's shift 5 and colour correction 1.0. ``FT_SIZE`` replaces the official
# 768 x 448 (height x width; portrait, as the official, so the 300 x 500 image is cropped at the sides).
FT_FRAME_NUM, FT_MOTION_FRAMES = 33, 5
FT_SIZE = (96, 64)
FT_SHIFT = 5.0
FT_PROMPT = "A person is talking. Only the foreground characters are moving, the background remains static."
FT_SCENARIOS = {
    # the realtime preset: 4 steps; 4 whole windows plus 0.32 s (8 frames) that the official loop drops
    "four_steps": {"seconds": 4.8, "steps": 4, "seed": 42},
    # 2 steps, 9 whole windows (10.08 s): from window 7 on (ending at 8.96 s) the 8 s audio buffer holds no zeros
    "two_steps_rolling": {"seconds": 10.08, "steps": 2, "seed": 7},
}
FT_COLOR_INPUT_SEED = 21  # the random clip and reference given to the colour correction alone


def ft_color_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """A clip ``[1, 3, 6, 16, 24]`` and a reference ``[1, 3, 1, 16, 24]`` in [-1, 1] for the colour correction on
    its own. Frames: random, saturated (tanh), bright and low in contrast, dark and low in contrast, the corners of
    the RGB cube, random; the reference's blue is all or nothing. The low-contrast frames are stretched to the
    reference's spread, out of the sRGB gamut, where Lab recipes that agree on ordinary frames part (FlashTalk's torch
    constants against scikit-image's differ by up to 4e-4 here, by 8e-6 on uniform noise)."""
    rng = np.random.RandomState(FT_COLOR_INPUT_SEED)
    clip = rng.uniform(-1, 1, (1, 3, 6, 16, 24)).astype(np.float32)
    clip[:, :, 1] = np.tanh(3 * clip[:, :, 1])
    clip[:, :, 2] = 0.15 * clip[:, :, 2] + 0.3
    clip[:, :, 3] = 0.1 * clip[:, :, 3] - 0.7
    clip[:, :, 4] = np.sign(clip[:, :, 4])
    reference = rng.uniform(-1, 1, (1, 3, 1, 16, 24)).astype(np.float32)
    reference[:, 2] = np.where(rng.uniform(0, 1, (1, 16, 24)) > 0.5, 1.0, -1.0)
    return torch.from_numpy(clip), torch.from_numpy(reference)
