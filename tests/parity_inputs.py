"""Inputs of the official-parity fixtures. Depends only on numpy and torch, so the fixture maker can import it
from the official implementation's environment too. NumPy's legacy RandomState keeps its stream stable."""

from __future__ import annotations

import numpy as np
import torch

LATENT = (3, 8, 12)  # latent frames, height, width: 9 video frames, a non-square 4 x 6 token grid
VIDEO_FRAMES = 9
AUDIO_FRAMES = 10  # one more than the clip: windows at the end are clamped to the last frame
WINDOW = 5
CASES = {
    # name: (speakers in the audio batch, timestep, text: "prompt" | "negative", audio: "real" | "zeros")
    "two_speakers": (2, 873.25, "prompt", "real"),
    "one_speaker": (1, 500.5, "prompt", "real"),
    "null_audio_negative_text": (1, 999.0, "negative", "zeros"),
}


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(shape).astype(np.float32))


def audio_windows(features: torch.Tensor, start: int, frames: int, window: int = WINDOW) -> torch.Tensor:
    """Per-frame features [P, L, layers, C] -> [P, frames, window, layers, C]: for each video frame f of the clip,
    the features of frames f - window//2 ... f + window//2, clamped to the audio's range (the official pipeline)."""
    half = window // 2
    centre = torch.arange(start, start + frames)[:, None] + torch.arange(-half, half + 1)[None, :]
    return features[:, centre.clamp(0, features.shape[1] - 1)]


def region_masks() -> torch.Tensor:
    """[3, h, w] latent-resolution masks: person 1 (left box), person 2 (right box), background (outside both)."""
    _, h, w = LATENT
    masks = torch.zeros(3, h, w)
    masks[0, 1:7, 1:5] = 1
    masks[1, 2:8, 7:11] = 1
    masks[2] = (masks[0] + masks[1] == 0).float()
    return masks


def make_inputs(image_dim: int, text_dim: int, audio_channels: int) -> dict[str, torch.Tensor]:
    frames, h, w = LATENT
    y_mask = torch.zeros(4, frames, h, w)
    y_mask[:, 0] = 1
    return {
        "x": _randn(101, 16, frames, h, w),
        "y": torch.cat([y_mask, _randn(102, 16, frames, h, w)]),
        "clip_fea": _randn(103, 1, 257, image_dim),
        "prompt": _randn(104, 20, text_dim),
        "negative": _randn(105, 15, text_dim),
        "features": _randn(106, 2, AUDIO_FRAMES, 12, audio_channels),
        "masks": region_masks(),
    }


def case_inputs(name: str, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """(audio windows [P, 9, 5, 12, C], timestep, text context [L, text_dim], masks [3, h, w]) of one case."""
    speakers, t, text, audio_kind = CASES[name]
    windows = audio_windows(inputs["features"][:speakers], 0, VIDEO_FRAMES)
    if audio_kind == "zeros":
        windows = torch.zeros_like(windows)
    masks = inputs["masks"] if speakers == 2 else torch.ones_like(inputs["masks"])
    return windows, t, inputs[text], masks
