"""Inputs made on the spot for the demo: a two-person reference picture and speech-like voices (no downloads)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SAMPLE_RATE = 16000


def voice(seconds: float, pitch_hz: float = 120.0, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A vowel-like voice: a glottal pulse train shaped by three formants that move from syllable to syllable,
    under a ~4 syllables/s envelope. Not words, but it has speech's rhythm and spectrum."""
    rng = np.random.RandomState(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = pitch_hz * (1 + 0.08 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 6)))
    phase = np.cumsum(f0) / rate
    source = (phase % 1.0) - 0.5  # sawtooth ~ glottal pulses
    syllable = (t * 4.2 + rng.uniform(0, 1)).astype(int)
    vowels = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]])
    formants = vowels[rng.randint(0, len(vowels), syllable.max() + 1)][syllable]  # [n, 3]
    out = np.zeros(n)
    for k, bandwidth in enumerate((80, 100, 120)):
        # a resonator per formant, applied sample by sample over slowly varying frequencies
        r = np.exp(-np.pi * bandwidth / rate)
        theta = 2 * np.pi * formants[:, k] / rate
        a1, a2 = 2 * r * np.cos(theta), -(r**2)
        y1 = y2 = 0.0
        y = np.empty(n)
        for i in range(n):
            y0 = source[i] + a1[i] * y1 + a2 * y2
            y[i], y2, y1 = y0, y1, y0
        out += y / (k + 1)
    envelope = np.clip(np.sin(np.pi * ((t * 4.2 + 0.3) % 1.0)), 0, None) ** 0.8
    out = out * envelope
    return (0.3 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def portrait(height: int = 512, width: int = 768) -> Image.Image:
    """Two cartoon heads and shoulders side by side on a soft background."""
    yy, xx = np.mgrid[0:height, 0:width]
    bg = np.stack([60 + 80 * xx / width, 90 + 60 * yy / height, 140 + 40 * (1 - yy / height)], axis=-1)
    image = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for cx, skin, shirt in (
        (width * 0.27, (224, 186, 160), (60, 90, 160)),
        (width * 0.73, (198, 150, 120), (160, 60, 70)),
    ):
        s = height / 512
        draw.ellipse((cx - 150 * s, height - 170 * s, cx + 150 * s, height + 150 * s), fill=shirt)
        draw.ellipse((cx - 70 * s, 120 * s, cx + 70 * s, 300 * s), fill=skin)
        for dx in (-28, 28):
            draw.ellipse((cx + (dx - 9) * s, 190 * s, cx + (dx + 9) * s, 204 * s), fill=(40, 30, 30))
        draw.arc((cx - 30 * s, 230 * s, cx + 30 * s, 265 * s), 20, 160, fill=(120, 40, 40), width=max(1, int(4 * s)))
    return image
