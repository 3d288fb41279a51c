"""A catalogue of bad (and awkward but valid) job inputs, each with the outcome a caller must get.

``catalogue(env)`` returns ``Case``s; ``env`` holds what the inputs refer to: a volume with prepared files, a
loopback HTTP server that stands for the public internet (only 127.0.0.1 is treated as public: every other
private, loopback or link-local address stays refused), and small valid media. Shared by the per-case test, the
fuzzing and the load test (``tests/test_reliability.py``).
"""

from __future__ import annotations

import base64
import io
import math
import struct
import wave as wavemod
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import pipeline_stubs as stubs
from media import write_audio, write_video

SMALL = {"width": 64, "height": 64, "sampling_steps": 1, "seed": 3, "mode": "clip"}


@dataclass
class Case:
    name: str
    job: dict  # the whole job (input, and s3Config when the case needs one)
    code: str | None  # expected error code; None: the job must succeed
    says: tuple[str, ...] = ()  # substrings the message must contain (the field, the cause)


@dataclass
class Env:
    volume: Path
    base_url: str  # loopback server standing in for a public host
    files: dict = field(default_factory=dict)  # what the server serves under /files/
    mp3: bytes = b""

    def b64(self, data: bytes) -> str:
        return base64.b64encode(data).decode()


def png(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def face() -> bytes:
    return png(Image.fromarray(stubs.scenario_image()))


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` (what a decompression bomb looks like up front)."""
    data = bytearray(png(Image.new("L", (1, 1))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def wav_bytes(samples: np.ndarray, rate: int = 16000, float32: bool = False) -> bytes:
    buf = io.BytesIO()
    if float32:  # IEEE float WAV (format 3), which the wave module cannot write
        data = samples.astype("<f4").tobytes()
        fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
        buf.write(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE")
        buf.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
        return buf.getvalue()
    with wavemod.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def speech(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    return wav_bytes(0.3 * np.sin(2 * math.pi * 160 * t) * (1 + np.sin(2 * math.pi * 3 * t)))


def unknown_codec_wav() -> bytes:
    """A RIFF/WAVE file whose format tag (0x7A7A) no decoder knows."""
    data = b"\x01\x02" * 8000
    fmt = struct.pack("<HHIIHH", 0x7A7A, 1, 16000, 32000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def prepare_volume(volume: Path, tmp: Path) -> None:
    """Files the volume cases use: a long recording, a silent video, a symlink out of the volume."""
    (volume / "in").mkdir(parents=True, exist_ok=True)
    (volume / "in" / "face.png").write_bytes(face())
    (volume / "in" / "voice.wav").write_bytes(speech(0.5))
    # two hours at 8 kHz, 8-bit: 57.6 MB, decoded only up to the duration cap
    with wavemod.open(str(volume / "in" / "two_hours.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        block = (128 + 40 * np.sin(np.arange(8000) / 8000 * 2 * math.pi * 200)).astype(np.uint8).tobytes()
        for _ in range(2 * 3600):
            w.writeframesraw(block)
    write_video(volume / "in" / "silent.mp4", 0.5)
    (tmp / "outside.wav").write_bytes(speech(0.5))
    link = volume / "in" / "link.wav"
    if not link.exists():
        link.symlink_to(tmp / "outside.wav")
    write_audio(tmp / "talk.m4a", 0.6)
    write_audio(tmp / "talk.mp3", 0.6)


SDP = (  # an RTP session on loopback: FFmpeg's sdp demuxer would listen on UDP port 45678
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 45678 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)
HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.ts\n#EXT-X-ENDLIST\n"
CONCAT = b"ffconcat version 1.0\nfile '/etc/passwd'\n"


def valid(env: Env, **extra) -> dict:
    return {"input": {"image": env.b64(face()), "audio": env.b64(speech(0.4)), **SMALL, **extra}}


def catalogue(env: Env) -> list[Case]:
    img, aud = env.b64(face()), env.b64(speech(0.4))
    base = {"image": img, "audio": aud, **SMALL}
    url = env.base_url
    env.files["face.png"] = face()
    cmyk = png(Image.fromarray(stubs.scenario_image()).convert("CMYK"), format="JPEG")
    frames = [Image.fromarray(stubs.scenario_image()), Image.fromarray(255 - stubs.scenario_image())]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    deep = Image.fromarray(stubs.scenario_image()[..., 0].astype(np.uint16) * 257)  # 16-bit greyscale (I;16)
    silence = wav_bytes(np.zeros(8000))
    nan = wav_bytes(np.full(8000, np.nan, dtype=np.float32), float32=True)

    def job(**changes) -> dict:
        merged = {**base, **changes}
        return {"input": {k: v for k, v in merged.items() if v is not DROP}}

    return [
        # -- request shape ------------------------------------------------------------------------------------
        Case("input is a list", {"input": [1, 2]}, "E_INPUT", ("input must be a JSON object",)),
        Case("input is a string", {"input": "make a video"}, "E_INPUT", ("input must be a JSON object",)),
        Case("no input at all", {}, "E_INPUT", ("input must be a JSON object",)),
        Case("unknown field", job(colour="blue"), "E_INPUT", ("colour",)),
        Case("missing image", job(image=DROP), "E_INPUT", ("image is required",)),
        Case("missing audio", job(audio=DROP), "E_INPUT", ("audio",)),
        Case("steps as text", job(sampling_steps="ten"), "E_INPUT", ("sampling_steps",)),
        Case("seed as a float", job(seed=1.5), "E_INPUT", ("seed",)),
        Case("audio as a number", job(audio=7), "E_INPUT", ("audio",)),
        Case("boxes as a string", job(boxes="left,right"), "E_INPUT", ("boxes",)),
        # strict JSON types: nothing is converted (before, true ran one step and "40" forty)
        Case("steps as true", job(sampling_steps=True), "E_INPUT", ("sampling_steps", "valid integer")),
        Case("steps as a numeric string", job(sampling_steps="40"), "E_INPUT", ("sampling_steps", "valid integer")),
        Case("steps as 4.0", job(sampling_steps=4.0), "E_INPUT", ("sampling_steps", "valid integer")),
        Case("guidance as a numeric string", job(text_guide_scale="5"), "E_INPUT", ("text_guide_scale",)),
        Case("a boolean as 1", job(use_apg=1), "E_INPUT", ("use_apg", "valid boolean")),
        Case("a boolean as text", job(output={"thumbnail": "true"}), "E_INPUT", ("output.thumbnail",)),
        Case(
            "boxes as strings",
            job(audio=[aud, aud], boxes=["0,0,200,300", "250,0,480,300"]),
            "E_INPUT",
            ("boxes.0", "valid list"),
        ),
        Case(
            "box numbers as strings",
            job(audio=[aud, aud], boxes=[["0", 0, 200, 300], [250, 0, 480, 300]]),
            "E_INPUT",
            ("boxes.0.0", "valid number"),
        ),
        Case("nested junk media", job(image={"url": 5}), "E_INPUT", ("image",)),
        Case("two names for the steps", job(sample_steps=4), "E_INPUT", ("sample_steps",)),
        Case("resolution 1080p", job(resolution="1080p"), "E_INPUT", ("resolution",)),
        Case("width not a multiple of 16", job(width=100), "E_INPUT", ("width",)),
        Case("steps over the cap", job(sampling_steps=101), "E_INPUT", ("sampling_steps",)),
        Case("negative guidance", job(text_guide_scale=-1), "E_INPUT", ("text_guide_scale",)),
        Case("prompt of 100 kB", job(prompt="talk " * 20_000), "E_INPUT", ("prompt",)),
        Case("output format", job(output={"format": "ftp"}), "E_INPUT", ("output.format",)),
        Case("output prefix escapes", job(output={"prefix": "../../etc"}), "E_INPUT", ("output.prefix",)),
        Case("output file name with a slash", job(output={"filename": "a/b.mp4"}), "E_INPUT", ("output.filename",)),
        Case(
            "incomplete s3Config",
            {**job(), "s3Config": {"endpointUrl": "https://s3.example.com", "accessId": "AKIA"}},
            "E_INPUT",
            ("s3Config", "accessSecret"),
        ),
        Case("three speakers", job(audio=[aud, aud, aud]), "E_INPUT", ("audio",)),
        Case("duration over the cap", job(duration=3000), "E_INPUT", ("duration: 3000 s", "600 s limit")),
        Case("duration of an hour", job(duration=3600), "E_INPUT", ("duration: 3600 s", "600 s limit")),
        Case("num_frames over the cap", job(num_frames=15001), "E_INPUT", ("num_frames: 15001 frames", "600 s limit")),
        Case(
            "s3Config as a string",
            {**job(), "s3Config": "https://s3.example.com AKIAEXAMPLEKEY1234 secret"},
            "E_INPUT",
            ("s3Config must be an object",),
        ),
        Case("s3Config as a list", {**job(), "s3Config": ["a", "b"]}, "E_INPUT", ("s3Config must be an object",)),
        # -- images -----------------------------------------------------------------------------------------------
        Case("image is text", job(image=env.b64(b"hello, I am not a picture")), "E_IMAGE", ("image", "not a readable")),
        Case("truncated PNG", job(image=env.b64(face()[:300])), "E_IMAGE", ("image",)),
        Case("1x1 image", job(image=env.b64(png(Image.new("RGB", (1, 1))))), "E_IMAGE", ("image", "too small")),
        Case("20000x20000 image", job(image=env.b64(png_with_size(20000, 20000))), "E_IMAGE", ("image", "40 MP limit")),
        Case("decompression bomb", job(image=env.b64(png_with_size(60000, 60000))), "E_IMAGE", ("image",)),
        Case("animated GIF (first frame used)", job(image=env.b64(gif.getvalue())), None),
        Case("CMYK JPEG", job(image=env.b64(cmyk)), None),
        Case("16-bit PNG", job(image=env.b64(png(deep))), None),
        Case(
            "TGA image",
            job(image=env.b64(png(Image.fromarray(stubs.scenario_image()), format="TGA"))),
            "E_IMAGE",
            ("image", "accepted format"),
        ),
        Case(
            "EPS image",
            job(image=env.b64(png(Image.new("RGB", (64, 64)), format="EPS"))),
            "E_IMAGE",
            ("image", "accepted format"),
        ),
        # -- audio ------------------------------------------------------------------------------------------------
        Case("empty audio payload", job(audio=""), "E_INPUT", ("audio",)),
        Case("WAV with no samples", job(audio=env.b64(wav_bytes(np.zeros(0)))), "E_AUDIO", ("empty",)),
        Case("all silence", job(audio=env.b64(silence)), None),
        Case("NaN samples", job(audio=env.b64(nan)), "E_AUDIO", ("NaN",)),
        Case("0.1 s of audio", job(audio=env.b64(speech(0.1))), None),
        Case("two hours of audio", job(audio=str(env.volume / "in/two_hours.wav")), "E_AUDIO", ("limit",)),
        Case("video without sound", job(audio=str(env.volume / "in/silent.mp4")), "E_AUDIO", ("no audio track",)),
        Case("text file named .wav", job(audio=env.b64(b"just some words\n" * 20)), "E_AUDIO", ("audio of speaker 1",)),
        Case("unknown codec", job(audio=env.b64(unknown_codec_wav())), "E_AUDIO", ("audio of speaker 1",)),
        # containers whose demuxers reach the network or the disk: refused before they run (no socket, no file)
        Case("SDP description as audio", job(audio=env.b64(SDP)), "E_AUDIO", ("speaker 1", "accepted audio container")),
        Case("HLS playlist as audio", job(audio=env.b64(HLS)), "E_AUDIO", ("audio of speaker 1",)),
        Case("concat list as audio", job(audio=env.b64(CONCAT)), "E_AUDIO", ("accepted audio container",)),
        # -- media sources ----------------------------------------------------------------------------------------
        Case("base64 that is not base64", job(image="%%% not base64 %%%"), "E_INPUT", ("image", "base64")),
        Case(
            "data URI of the wrong type",
            job(audio="data:image/png;base64," + img),
            "E_INPUT",
            ("audio:", "image/png"),
        ),
        Case("URL 404", job(image=f"{url}/files/missing.png"), "E_DOWNLOAD", ("image", "404")),
        Case("URL that times out", job(image=f"{url}/slow"), "E_DOWNLOAD", ("image",)),
        Case("redirect loop", job(image=f"{url}/redirect-loop"), "E_DOWNLOAD", ("image", "redirect")),
        Case(
            "redirect to the metadata service",
            job(image=f"{url}/redirect-to?url=http://169.254.169.254/latest/meta-data/"),
            "E_DOWNLOAD",
            ("image", "refused"),
        ),
        Case("loopback address", job(image="http://127.0.0.2:8080/a.png"), "E_DOWNLOAD", ("image", "refused")),
        Case("metadata address", job(image="http://169.254.169.254/latest/"), "E_DOWNLOAD", ("image", "refused")),
        Case("private address", job(image="http://10.1.2.3/a.png"), "E_DOWNLOAD", ("image", "refused")),
        Case("file:// URL", job(image="file:///etc/passwd"), "E_DOWNLOAD", ("image", "file://")),
        Case("endless body", job(image=f"{url}/huge"), "E_DOWNLOAD", ("image", "limit")),
        Case(
            "volume path with ..",
            job(audio=str(env.volume / "in" / ".." / ".." / "outside.wav")),
            "E_DOWNLOAD",
            ("audio:", "outside the network volume"),
        ),
        Case(
            "symlink out of the volume",
            job(audio=str(env.volume / "in" / "link.wav")),
            "E_DOWNLOAD",
            ("audio:", "outside the network volume"),
        ),
        Case("a URL that works", job(image=f"{url}/files/face.png"), None),
        Case("a volume path that works", job(audio=str(env.volume / "in/voice.wav")), None),
        # -- two people ---------------------------------------------------------------------------------------------
        Case(
            "box out of the image",
            job(audio=[aud, aud], boxes=[[0, 0, 200, 300], [250, 0, 9000, 300]]),
            "E_IMAGE",
            ("box of person 2",),
        ),
        Case(
            "inverted box",
            job(audio=[aud, aud], boxes=[[200, 0, 10, 300], [250, 0, 480, 300]]),
            "E_IMAGE",
            ("box of person 1",),
        ),
        Case(
            "boxes covering one person",
            job(audio=[aud, aud], boxes=[[0, 0, 250, 300], [10, 10, 260, 300]]),
            "E_IMAGE",
            ("overlap",),
        ),
        Case("boxes for one speaker", job(boxes=[[0, 0, 200, 300], [250, 0, 480, 300]]), "E_INPUT", ("two speakers",)),
        Case("boxes that work", job(audio=[aud, None], boxes=[[0, 0, 200, 300], [250, 0, 480, 300]]), None),
    ]


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()
