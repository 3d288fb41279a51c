"""Long jobs: the video written window by window as standalone segments, the loop's state kept after each, the
final MP4 assembled from the segments.

With a job folder (``generate(..., job_dir=...)``) every finished window becomes one MPEG-TS file (H.264 + AAC of
exactly that window's new frames and their sound, timestamps continuing the previous one): it can be delivered at
once (played alone, or listed in an HLS playlist), and after it the loop's state (``LoopState``: the windows done,
the motion frames the next window continues from, the random generator) is saved beside it. A run of the same job
that finds the folder continues from the last saved window and gives the same frames as an uninterrupted run. The
final MP4 copies the segments' video packets (nothing is encoded twice) and encodes the soundtrack once.

Each segment starts with a keyframe; B-frames are kept: every segment's decode times run one frame apart from its
first to its last packet with the same encoder delay, so the segments join with one shift each and decode times stay
in order. Measured (``bench/bench_segments.py``): the joined file is the size of one continuous encode (0.995x).

What can go wrong on the way is never fatal for a job that could finish: a full or failing disk while saving a
segment or the state moves the rest of the job to the local fallback folder (the job can no longer be resumed,
which the job's notes say).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .video import AUDIO_RATE, FPS, limit_peak, write_audio

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
STATE_VERSION = 1
SEGMENT_FORMAT = "mpegts"
SEGMENT_NAME = "seg_{:05d}.ts"
# Segment timestamps start this late (frames): the AAC encoder's priming samples would otherwise fall before zero
# and the muxer would shift the first segment's pictures, overlapping the second in a player.
TS_OFFSET_FRAMES = 25


@dataclass
class Segment:
    """One finished window of a job, as a playable file."""

    index: int  # 0-based window
    total: int  # windows in the job
    path: Path  # standalone MPEG-TS: H.264 + AAC of this window's new frames
    start_frame: int
    frames: int
    seconds: float = 0.0  # wall time the window took (encode, sampling, decode, writing)
    resumed: bool = False  # made by an earlier run of the same job, found on resume

    @property
    def start_s(self) -> float:
        return self.start_frame / FPS

    @property
    def duration_s(self) -> float:
        return self.frames / FPS


@dataclass
class JobPlan:
    """What a job will cost, known after every input is prepared and before any sampling (``on_plan``)."""

    windows: int
    frames: int
    height: int
    width: int
    steps: int
    passes: int  # transformer forwards per step
    frames_per_clip: int
    model: str
    speakers: int
    resume_from: int = 0  # windows done by an earlier run of the same job
    speed_lora: bool = False
    cache_threshold: float = 0.0


@dataclass
class LoopState:
    """Where the window loop stands between two windows: enough to continue it exactly."""

    clip: int = 0  # windows finished
    written: int = 0  # frames given out so far
    motion: torch.Tensor | None = None  # [3, n, H, W] the frames the next window continues from (CPU, float32)
    rng: torch.Tensor | None = None  # the sampling generator's state
    forwards: tuple[int, int] = (0, 0)  # step cache: forwards computed, reused
    drift: dict | None = None  # the drift check so far (DriftMonitor.state())


def fingerprint(job, caller: str | None = None) -> str:
    """What a saved state must match to be continued: the caller's description of the request (``caller``, e.g.
    a hash of the request and its media), the job's options except the seed (the state holds the seed it used), its
    shape and a sample of its encoded inputs. A state of another request is never continued."""
    options = {k: v for k, v in asdict(job.options).items() if k != "seed"}
    digest = hashlib.sha256()
    digest.update((caller or "").encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    digest.update(json.dumps([job.total_frames, len(job.clips), list(job.reference.shape), job.adapter]).encode())
    audio = job.features if job.features is not None else torch.from_numpy(np.concatenate(job.tracks))
    for tensor in (audio.flatten()[::997], job.reference.flatten()[::97], job.context.flatten()[::97]):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def write_segment(
    path: Path,
    pixels: np.ndarray,
    start_frame: int,
    soundtrack: np.ndarray | None,
    crf: int = 19,
    preset: str = "medium",
) -> Path:
    """Write ``pixels`` (``[F, H, W, 3]`` uint8, the frames ``start_frame ..``) and the matching slice of
    ``soundtrack`` (48 kHz mono, already peak-limited) as a standalone MPEG-TS file, atomically."""
    import av

    tmp = path.with_name(path.name + ".part")
    height, width = pixels.shape[1:3]
    container = av.open(str(tmp), mode="w", format="mpegts")
    try:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": str(crf), "preset": preset}
        audio = None
        if soundtrack is not None:  # every stream is added before the first packet is written
            audio = container.add_stream("aac", rate=AUDIO_RATE)
            audio.layout = "mono"
        for i, rgb in enumerate(pixels):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = TS_OFFSET_FRAMES + start_frame + i, Fraction(1, FPS)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            first = round(start_frame / FPS * AUDIO_RATE)
            wave = _slice(soundtrack, first, round(len(pixels) / FPS * AUDIO_RATE))
            write_audio(container, audio, wave, first + round(TS_OFFSET_FRAMES / FPS * AUDIO_RATE))
    except BaseException:
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    container.close()
    os.replace(tmp, path)
    return path


def _slice(wave: np.ndarray, start: int, count: int) -> np.ndarray:
    out = np.zeros(count, np.float32)
    part = wave[start : start + count]
    out[: len(part)] = part
    return out


def assemble(segments: list[Segment], output: Path, soundtrack: np.ndarray | None) -> int:
    """Join the segments' video into one MP4 (packets copied, re-timed to one clock) and encode the soundtrack once
    (cut or padded to the video, peak-limited). Returns the number of frames."""
    import av

    frames = sum(s.frames for s in segments)
    if not segments:
        raise ValueError("no segments to assemble")
    out = av.open(str(output), mode="w", options={"movflags": "+faststart"})
    try:
        with av.open(str(segments[0].path)) as first:
            stream = out.add_stream_from_template(first.streams.video[0])
        audio = None
        if soundtrack is not None:
            audio = out.add_stream("aac", rate=AUDIO_RATE)
            audio.layout = "mono"
        for segment in segments:
            with av.open(str(segment.path)) as source:
                src = source.streams.video[0]
                packets = [p for p in source.demux(src) if p.dts is not None]
                per_frame = round(1 / (FPS * src.time_base))
                shift = segment.start_frame * per_frame - min(p.pts for p in packets)
                for packet in packets:
                    packet.pts += shift
                    packet.dts += shift
                    packet.time_base = src.time_base
                    packet.stream = stream
                    out.mux(packet)
        if audio is not None:
            write_audio(out, audio, _slice(soundtrack, 0, round(frames / FPS * AUDIO_RATE)), 0)
    except BaseException:
        out.close()
        output.unlink(missing_ok=True)
        raise
    out.close()
    return frames


def peak_limited(soundtrack: np.ndarray, frames: int) -> np.ndarray:
    """The soundtrack as every segment and the final file carry it: cut to ``frames`` and peak-limited once for
    the whole job (so that segments and the final file sound the same)."""
    return limit_peak(_slice(soundtrack, 0, round(frames / FPS * AUDIO_RATE)))


class JobFolder:
    """A job's segments and saved state. ``directory``: where they are kept so that a later run can continue (the
    network volume); ``fallback``: a local folder that takes over when ``directory`` cannot be written (disk full),
    from then on without saving state. ``load`` returns the state to continue from (``None``: start afresh)."""

    def __init__(self, directory: Path, fallback: Path, fingerprint: str, total: int, crf: int):
        self.directory, self.fallback = Path(directory), Path(fallback)
        self.fingerprint, self.total, self.crf = fingerprint, total, crf
        self.segments: list[Segment] = []
        self.seed: int | None = None
        self.saving = True  # state is saved after every window (until the folder cannot be written)
        self.notes: list[str] = []
        self._target = self.directory
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._give_up(exc)

    # --- resume -------------------------------------------------------------------------------------------------
    def load(self) -> LoopState | None:
        """The saved state of this same job with every segment it lists still present, else ``None`` (a state of
        another request, of another version, or unreadable is ignored and replaced)."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start afresh
            logger.warning("job state %s unreadable (%s): starting afresh", path, type(exc).__name__)
            return None
        if saved.get("version") != STATE_VERSION or saved.get("fingerprint") != self.fingerprint:
            self.notes.append("a saved state under this job key belongs to another request: started afresh")
            return None
        segments = [
            Segment(
                s["index"], self.total, self.directory / s["name"], s["start_frame"], s["frames"], s["seconds"], True
            )
            for s in saved["segments"]
        ]
        if len(segments) != saved["clip"] or not all(s.path.is_file() for s in segments):
            logger.warning("job state %s lists missing segments: starting afresh", path)
            return None
        self.segments, self.seed = segments, int(saved["seed"])
        return LoopState(
            clip=int(saved["clip"]),
            written=int(saved["written"]),
            motion=saved["motion"],
            rng=saved["rng"],
            forwards=tuple(saved.get("forwards", (0, 0))),
            drift=saved.get("drift"),
        )

    # --- one window ---------------------------------------------------------------------------------------------
    def add(self, pixels: np.ndarray, start_frame: int, soundtrack: np.ndarray | None, seconds: float) -> Segment:
        """Write the window's segment (to the fallback folder if the job folder fails)."""
        index = len(self.segments)
        name = SEGMENT_NAME.format(index)
        try:
            path = write_segment(self._target / name, pixels, start_frame, soundtrack, self.crf)
        except OSError as exc:
            if self._target == self.fallback:
                raise
            self._give_up(exc)
            path = write_segment(self._target / name, pixels, start_frame, soundtrack, self.crf)
        segment = Segment(index, self.total, path, start_frame, len(pixels), seconds)
        self.segments.append(segment)
        return segment

    def save(self, state: LoopState, seed: int) -> None:
        """Keep ``state`` (after the window's segment): written whole or not at all, never failing the job."""
        if not self.saving:
            return
        body = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "seed": int(seed),
            "clip": state.clip,
            "written": state.written,
            "motion": state.motion,
            "rng": state.rng,
            "forwards": list(state.forwards),
            "drift": state.drift,
            "segments": [
                {
                    "index": s.index,
                    "name": s.path.name,
                    "start_frame": s.start_frame,
                    "frames": s.frames,
                    "seconds": s.seconds,
                }
                for s in self.segments
            ],
        }
        tmp = self.directory / (STATE_FILE + ".part")
        try:
            with open(tmp, "wb") as handle:
                torch.save(body, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / STATE_FILE)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        """The job folder cannot be written: the rest of the job runs in the fallback folder, without state."""
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        why = "the disk is full" if full else f"it cannot be written ({exc.strerror or exc})"
        note = f"the job folder {self.directory} stopped being written ({why}): this job can no longer be resumed"
        logger.warning(note)
        if self.saving:
            self.notes.append(note)
        self.saving = False
        self._target = self.fallback
        self.fallback.mkdir(parents=True, exist_ok=True)
