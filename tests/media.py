"""Test media made on the spot with PyAV: audio in many containers/codecs, videos with and without sound."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FORMATS = {  # suffix: (container format, codec, sample format)
    ".wav": ("wav", "pcm_s16le", "s16"),
    ".mp3": ("mp3", "libmp3lame", "fltp"),
    ".m4a": ("ipod", "aac", "fltp"),
    ".flac": ("flac", "flac", "s16"),
    ".ogg": ("ogg", "libopus", "flt"),
    ".opus": ("opus", "libopus", "flt"),
}


def write_audio(path: Path, seconds: float, rate: int = 44100, stereo: bool = True) -> Path:
    """A tone of ``seconds`` in the container/codec of ``path``'s suffix (opus always runs at 48 kHz)."""
    fmt, codec, sample_fmt = FORMATS[path.suffix]
    if codec == "libopus":
        rate = 48000
    wave = tone(seconds, rate)
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "stereo" if stereo else "mono"
        _encode_audio(c, s, wave, rate, sample_fmt, stereo)
    return path


def _encode_audio(container, stream, wave, rate, sample_fmt, stereo) -> None:
    channels = 2 if stereo else 1
    data = np.repeat(wave[None], channels, 0).astype(np.float32)
    size = stream.codec_context.frame_size or 1024
    for start in range(0, data.shape[1], size):
        part = data[:, start : start + size]
        if sample_fmt == "s16":
            arr = (np.clip(part, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
        elif sample_fmt == "flt":
            arr = part.T.reshape(1, -1).copy()
        else:
            arr = part.copy()
        frame = av.AudioFrame.from_ndarray(arr, format=sample_fmt, layout="stereo" if stereo else "mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_video(path: Path, seconds: float, wave: np.ndarray | None = None, rate: int = 48000) -> Path:
    """A small video (mp4/mov: h264 + aac; webm: vp9 + opus), with the audio track only if ``wave`` is given."""
    webm = path.suffix == ".webm"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libvpx-vp9" if webm else "libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = None
        if wave is not None:
            a = c.add_stream("libopus" if webm else "aac", rate=rate)
            a.layout = "mono"
        for i in range(int(seconds * 25)):
            img = np.full((48, 64, 3), (i * 9) % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in v.encode(frame):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
        if a is not None:
            _encode_audio(c, a, wave, rate, "flt" if webm else "fltp", stereo=False)
    return path


def tone(seconds: float, rate: int, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
