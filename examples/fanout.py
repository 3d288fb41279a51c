"""Fan-out: one long video made by several workers at once (``examples/client.py --parallel N`` or
``--segment-seconds S``).

The audio is split at natural pauses (``split_at_pauses``: energy in 10 ms frames against each track's own speech
level; a cut only in the middle of a pause where every speaker is silent, never inside speech); every part is sent as
its own job to the same endpoint, all at once, so that RunPod's queue spreads them over the workers (``FanOut``:
each job with a stable ``job_key``, so a retried part continues where its last run stopped; a failed or lost job is
sent again a bounded number of times; one progress bar over all parts); the parts' MP4s are joined into one
(``join``: the video packets copied with their timestamps moved, not encoded again, when the parts agree in codec,
size, pixel format and codec parameters; the input audio encoded once as the soundtrack).

Needs numpy and PyAV (``pip install numpy av``) besides ``requests``; ``client.py`` imports this module only when a
fan-out is asked for. Never imports the worker or the engine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import requests

SAMPLE_RATE = 16000  # what the worker computes audio features at: each part's audio is sent at this rate
FPS = 25  # the worker's video rate
AUDIO_RATE = 48000  # the soundtrack's rate in the joined MP4 (as the worker's)
FRAME_SAMPLES = SAMPLE_RATE // FPS  # 640: cuts fall on video-frame boundaries
ENERGY_MS = 10  # silence detection frame
# a job failing with one of these fails the same way when sent again: the fan-out stops at once
FINAL_ERRORS = ("E_INPUT", "E_IMAGE", "E_AUDIO", "E_VIDEO", "E_MODEL", "E_TOO_LONG", "E_OUTPUT_TOO_LARGE")


class FanOutError(RuntimeError):
    """A part could not be made (a final error, or its retries used up); the other parts were cancelled."""


# --- audio ---------------------------------------------------------------------------------------------------------
def decode_audio(source: str | Path | bytes, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of a file (or its bytes) as mono float32 at ``rate`` Hz."""
    import av

    chunks = []
    with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
        if not container.streams.audio:
            raise ValueError(f"{source if not isinstance(source, bytes) else 'audio'}: no audio track")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(container.streams.audio[0]):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def arrange(waves: list[np.ndarray | None], audio_type: str = "add") -> list[np.ndarray]:
    """One or two speakers' tracks as the worker arranges them: ``add`` = speaker 1 talks, then speaker 2 (each
    silent while the other talks), ``para`` = at the same time (the shorter padded). Equal lengths; ``None`` =
    silent. The parts are sent as ``para`` with these arranged tracks, which is the same thing."""
    if len(waves) == 1:
        if waves[0] is None:
            raise ValueError("every speaker is silent")
        return [waves[0]]
    a, b = (np.zeros(0, np.float32) if w is None else w for w in waves)
    if audio_type == "add":
        return [np.concatenate([a, np.zeros(len(b), np.float32)]), np.concatenate([np.zeros(len(a), np.float32), b])]
    n = max(len(a), len(b))
    return [np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))]


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Mono 16-bit PCM WAV (32 KB a second at 16 kHz)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes())
    return buffer.getvalue()


# --- where to cut --------------------------------------------------------------------------------------------------
@dataclass
class Split:
    """Where the audio is cut, in video frames: part ``i`` is frames ``cuts[i] .. cuts[i + 1]``."""

    cuts: list[int]  # [0, c1, ..., total]
    pauses: list[tuple[int, int]]  # the pauses found (frames, start/end of each silent stretch), for the record
    notes: list[str] = field(default_factory=list)  # targets that had no pause near them

    @property
    def total(self) -> int:
        return self.cuts[-1]

    @property
    def parts(self) -> list[tuple[int, int]]:
        return list(zip(self.cuts[:-1], self.cuts[1:], strict=True))


def speech_frames(track: np.ndarray, rate: int = SAMPLE_RATE, below_db: float = 35.0) -> np.ndarray:
    """Per 10 ms frame: is there sound? Energy (dB) against the track's speech level (the 95th percentile of its
    frames' energy): a frame more than ``below_db`` under that level is silent. A track of digital silence has no
    sound anywhere."""
    size = rate * ENERGY_MS // 1000
    n = len(track) // size
    if n == 0:
        return np.zeros(0, bool)
    power = (track[: n * size].astype(np.float64).reshape(n, size) ** 2).mean(axis=1)
    level = 10 * np.log10(np.maximum(power, 1e-12))
    if not (level > -110).any():
        return np.zeros(n, bool)
    speech_level = np.percentile(level[level > -110], 95)
    return level > max(speech_level - below_db, -80.0)


def split_at_pauses(
    tracks: list[np.ndarray],
    parts: int | None = None,
    segment_seconds: float | None = None,
    rate: int = SAMPLE_RATE,
    min_pause_s: float = 0.3,
    tolerance: float = 0.25,
) -> Split:
    """Cut the (arranged, equal-length) tracks into about ``parts`` equal parts, or parts of about
    ``segment_seconds``, at pauses: stretches of at least ``min_pause_s`` where every track is silent; each cut is the
    pause's middle (on a video-frame boundary). A target (``k * total / parts``) takes the nearest pause within
    ``tolerance`` of a part's length; with none there the part is extended to the next pause (``notes`` says so),
    never cut inside speech; with no pause left the part runs to the end."""
    if (parts is None) == (segment_seconds is None):
        raise ValueError("give parts or segment_seconds (one)")
    length = min(len(t) for t in tracks)
    total = int(length / rate * FPS)  # the worker's frame count for this audio
    if total < 1:
        raise ValueError("the audio is shorter than one video frame")
    if parts is None:
        parts = max(1, round(total / (segment_seconds * FPS)))
    if parts < 1:
        raise ValueError("parts must be at least 1")
    sound = np.zeros(length * 1000 // (rate * ENERGY_MS), bool)
    for track in tracks:
        mask = speech_frames(track[:length], rate)
        sound[: len(mask)] |= mask
    pauses, candidates = [], []
    per_frame = 1000 // (ENERGY_MS * FPS)  # 10 ms frames per video frame (4)
    edges = np.flatnonzero(np.diff(np.concatenate([[1], sound.astype(np.int8), [1]])))
    for start, end in zip(edges[::2], edges[1::2], strict=True):  # silent stretches [start, end) in 10 ms frames
        if (end - start) * ENERGY_MS >= min_pause_s * 1000:
            first, last = -(-start // per_frame), end // per_frame  # whole video frames inside the pause
            pauses.append((first, last))
            middle = round((start + end) / 2 / per_frame)
            if 0 < middle < total:
                candidates.append(middle)
    step = total / parts
    cuts, notes = [0], []
    for k in range(1, parts):
        target = k * step
        if target <= cuts[-1] + step / 2:
            continue  # an extended part already went past this target
        near = [c for c in candidates if abs(c - target) <= tolerance * step and c > cuts[-1]]
        if near:
            cuts.append(min(near, key=lambda c: abs(c - target)))
            continue
        later = [c for c in candidates if c > target]
        if not later:
            notes.append(f"no pause after {target / FPS:.1f} s: the last part runs to the end ({total / FPS:.1f} s)")
            break
        notes.append(f"no pause near {target / FPS:.1f} s: part extended to the next pause ({later[0] / FPS:.2f} s)")
        cuts.append(later[0])
    if total - cuts[-1] < 1:
        cuts.pop()
    cuts.append(total)
    return Split(cuts, pauses, notes)


# --- a video source (InfiniteTalk dubbing) -------------------------------------------------------------------------
def _upright(frame) -> np.ndarray:
    """The decoded frame as upright RGB, its display matrix applied (as the worker does: phones' portrait videos)."""
    import struct

    picture = frame.to_ndarray(format="rgb24")
    for side in frame.side_data:
        if "DISPLAYMATRIX" in str(side.type):
            a, b, _, c, d = (float(v) for v in struct.unpack("=9i", bytes(side))[:5])
            if abs(a) + abs(d) >= abs(b) + abs(c):
                flip_rows, flip_cols = d < 0, a < 0
            else:  # a quarter turn: transposed, then mirrored where the sign is negative
                picture, flip_rows, flip_cols = picture.transpose(1, 0, 2), b < 0, c < 0
            picture = picture[::-1] if flip_rows else picture
            picture = picture[:, ::-1] if flip_cols else picture
            break
    return np.ascontiguousarray(picture)


def shown_frames(source: str | Path, count: int, source_end: str = "hold") -> list[int]:
    """For output frames ``0 .. count``: the source frame (ordinal in presentation order) the worker shows, by its
    rule (``engine/pipeline/source.py``): the last frame whose time from the first is at most ``n / 25`` (1 ms
    tolerance); the source lasts to its last frame's time plus that frame's duration; past that, ``hold`` shows the
    frame of the source's last output frame."""
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base or Fraction(1, 90000)
        stamps, durations = set(), {}
        for packet in container.demux(stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if packet.size and ts is not None:
                stamps.add(ts)
                if packet.duration:
                    durations[ts] = packet.duration
    if not stamps:
        raise ValueError(f"{source}: no video frames")
    pts = np.array(sorted(stamps), np.int64)
    relative = pts - pts[0]
    step = int(np.median(np.diff(pts))) if len(pts) > 1 else max(1, round(1 / (FPS * tb)))
    last = durations.get(int(pts[-1]), 0)
    last = last if step / 2 <= last <= 4 * step else step
    tolerance = Fraction(1, 1000)
    within = max(1, math.ceil((Fraction(int(relative[-1]) + last) * tb - tolerance) * FPS))
    limits = [math.floor((Fraction(i, FPS) + tolerance) / tb) for i in range(min(count, within))]
    shown = (np.searchsorted(relative, np.array(limits, np.int64), side="right") - 1).tolist()
    if count > within and source_end != "hold":
        raise ValueError(f"source_end {source_end} with a source shorter than the audio: not with a fan-out (hold is)")
    return shown + [shown[-1]] * (count - len(shown))


def cut_video(source: str | Path, cuts: list[int], folder: str | Path, crf: int = 10,
              source_end: str = "hold") -> list[Path]:  # fmt: skip
    """The source video cut at the same frames as the audio: part ``i`` gets the source frames the worker would show
    at output frames ``cuts[i] .. cuts[i + 1]`` (``shown_frames``), one per output frame at 25 fps, encoded with
    H.264 at ``crf`` (10: visually lossless; a cut cannot copy packets, its boundaries are not keyframes). A part's
    video then shows what the whole job's would at the same times, so each dubbed part starts from the source at its
    own time."""
    import av

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shown = shown_frames(source, cuts[-1], source_end)
    paths: list[Path] = []
    out = stream = None
    with av.open(str(source)) as container:
        decoded = container.decode(container.streams.video[0])
        ordinal, frame = 0, next(decoded)
        part = -1
        try:
            for n, wanted in enumerate(shown):
                while ordinal < wanted:
                    ordinal, frame = ordinal + 1, next(decoded)
                picture = _upright(frame)
                if n == cuts[part + 1]:
                    if out is not None:
                        for packet in stream.encode():
                            out.mux(packet)
                        out.close()
                    part += 1
                    paths.append(folder / f"source_{part:03d}.mp4")
                    out = av.open(str(paths[-1]), mode="w")
                    stream = out.add_stream("libx264", rate=FPS)
                    stream.height, stream.width = picture.shape[:2]
                    even = picture.shape[0] % 2 == 0 and picture.shape[1] % 2 == 0
                    stream.pix_fmt, stream.options = ("yuv420p" if even else "yuv444p"), {"crf": str(crf)}
                picture = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format=stream.pix_fmt)
                picture.pts, picture.time_base = n - cuts[part], Fraction(1, FPS)
                for packet in stream.encode(picture):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        finally:
            if out is not None:
                out.close()
    return paths


# --- many jobs at once ---------------------------------------------------------------------------------------------
def fan_key(job: dict, tracks: list[np.ndarray], split: Split) -> str:
    """A key of the whole request (its fields, the audio, the cuts): the same command sent again resumes its parts."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in job.items() if k != "job_key"}, sort_keys=True).encode())
    for track in tracks:
        digest.update(np.ascontiguousarray(track).tobytes())
    digest.update(json.dumps(split.cuts).encode())
    return "fan-" + digest.hexdigest()[:20]


@dataclass
class Part:
    index: int
    start: int  # frames
    end: int
    job: dict  # the part's input
    job_id: str | None = None
    state: str = "waiting"  # waiting, IN_QUEUE, IN_PROGRESS, done, failed
    pct: float = 0.0
    runs: int = 0  # jobs sent for this part
    last_body: str = ""
    changed_at: float = 0.0
    path: Path | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.end - self.start


def part_jobs(job: dict, tracks: list[np.ndarray], split: Split, key: str) -> list[dict]:
    """Each part's input: the request's fields, its slice of every track (16 kHz WAV; two speakers as ``para``),
    its exact length (``num_frames``) and its own ``job_key``."""
    for name in ("duration", "num_frames"):
        if name in job:
            raise ValueError(f"{name}: a fan-out sets each part's length itself (cut the audio instead)")
    if job.get("mode", "streaming") != "streaming":
        raise ValueError("mode: a fan-out makes streaming jobs (mode clip is one clip)")
    n = len(split.parts)
    jobs = []
    for i, (start, end) in enumerate(split.parts):
        slices = [wav_bytes(t[start * FRAME_SAMPLES : end * FRAME_SAMPLES]) for t in tracks]
        audio = ["data:audio/wav;base64," + base64.b64encode(data).decode() for data in slices]
        part = {**job, "audio": audio, "num_frames": end - start, "job_key": f"{key}.{i + 1:03d}-of-{n:03d}"}
        if len(tracks) == 2:
            part["audio_type"] = "para"
        jobs.append(part)
    return jobs


class FanOut:
    """Runs the parts' jobs at once on one endpoint (``client``: a ``MultiTalkClient``) and saves each part's MP4.

    A part whose job fails (other than with a final error such as ``E_INPUT``) or is lost (``IN_PROGRESS`` with
    nothing new on ``/status`` for ``lost_after_s``: its worker died) is cancelled and sent again with the same
    ``job_key``, so it continues after its last finished window; at most ``retries`` times a part.
    ``on_progress`` gets ``{"pct", "done", "running", "queued", "parts", "retries"}`` on every change."""

    def __init__(self, client, jobs: list[dict], split: Split, folder: str | Path, retries: int = 2,
                 lost_after_s: float = 600.0, poll_s: float = 2.0, timeout_s: float = 24 * 3600,
                 on_progress: Callable[[dict], None] | None = None,
                 log: Callable[[str], None] | None = None):  # fmt: skip
        self.client = client
        self.parts = [Part(i, s, e, j) for i, ((s, e), j) in enumerate(zip(split.parts, jobs, strict=True))]
        self.total = split.total
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.retries, self.lost_after_s, self.poll_s, self.timeout_s = retries, lost_after_s, poll_s, timeout_s
        self.on_progress = on_progress
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._last_report: dict | None = None

    def run(self) -> list[Path]:
        """Every part's MP4, in order."""
        deadline = time.monotonic() + self.timeout_s
        try:
            for part in self.parts:
                self._send(part)
            while any(p.state != "done" for p in self.parts):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the parts were not all done after {self.timeout_s:.0f} s")
                for part in self.parts:
                    if part.state != "done":
                        self._poll(part)
                self._report()
                if any(p.state != "done" for p in self.parts):
                    time.sleep(self.poll_s)
        except BaseException:
            self.cancel()
            raise
        return [p.path for p in self.parts]

    def cancel(self) -> None:
        for part in self.parts:
            if part.job_id and part.state in ("IN_QUEUE", "IN_PROGRESS"):
                self._cancel(part)

    @property
    def retried(self) -> int:
        return sum(max(0, p.runs - 1) for p in self.parts)

    def _send(self, part: Part) -> None:
        part.runs += 1
        part.job_id = self.client.submit(part.job)
        part.state, part.last_body, part.changed_at = "IN_QUEUE", "", time.monotonic()

    def _cancel(self, part: Part) -> None:
        with contextlib.suppress(requests.RequestException, ValueError):  # gone already: nothing to stop
            self.client.cancel(part.job_id)

    def _retry(self, part: Part, why: str) -> None:
        part.errors.append(why)
        if part.runs > self.retries:
            part.state = "failed"
            raise FanOutError(f"part {part.index + 1}/{len(self.parts)}: {why}; no retries left ({part.runs} runs)")
        self.log(f"part {part.index + 1}/{len(self.parts)}: {why}; sent again (run {part.runs + 1}, same job_key)")
        self._send(part)

    def _poll(self, part: Part) -> None:
        try:
            reply = self.client.status(part.job_id)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:  # the platform forgot the job
                return self._retry(part, f"job {part.job_id} is unknown to the endpoint")
            return None  # a hiccup: asked again next time
        except requests.RequestException:
            return None
        status = reply.get("status")
        now = time.monotonic()
        if status == "COMPLETED":
            try:  # (the client's JobFailed is a RuntimeError: a streaming worker's list without a result)
                part.path = self.client.save_video(reply.get("output"), self.folder / f"part_{part.index:03d}.mp4")
            except (RuntimeError, ValueError, OSError, requests.RequestException) as exc:
                return self._retry(part, f"job {part.job_id} ended without a usable video ({exc})")
            part.state, part.pct = "done", 100.0
            return None
        if status in ("FAILED", "CANCELLED", "TIMED_OUT"):
            error = str(reply.get("error", ""))
            if error.startswith(FINAL_ERRORS):
                part.state = "failed"
                raise FanOutError(f"part {part.index + 1}/{len(self.parts)}: {status}: {error}")
            return self._retry(part, f"job {part.job_id} {status}: {error or 'no error given'}")
        body = json.dumps(reply.get("output"), sort_keys=True, default=str)
        if status != part.state or body != part.last_body:
            part.state, part.last_body, part.changed_at = status or part.state, body, now
            progress = reply.get("output")
            if isinstance(progress, list):  # a streaming worker's items so far
                progress = next((i for i in reversed(progress) if isinstance(i, dict) and "pct" in i), None)
            if isinstance(progress, dict) and isinstance(progress.get("pct"), int | float):
                part.pct = float(progress["pct"])
        elif status == "IN_PROGRESS" and now - part.changed_at > self.lost_after_s:
            self._cancel(part)
            self._retry(part, f"job {part.job_id} lost (no progress for {now - part.changed_at:.0f} s)")
        return None

    def _report(self) -> None:
        done = sum(p.state == "done" for p in self.parts)
        report = {
            "pct": round(sum(p.pct * p.frames for p in self.parts) / self.total, 1),
            "done": done,
            "running": sum(p.state == "IN_PROGRESS" for p in self.parts),
            "queued": sum(p.state == "IN_QUEUE" for p in self.parts),
            "parts": len(self.parts),
            "retries": self.retried,
        }
        if report != self._last_report and self.on_progress:
            self.on_progress(report)
        self._last_report = report


def print_bar(report: dict, width: int = 30) -> None:
    """A one-line progress bar over all parts (to stderr)."""
    filled = int(report["pct"] / 100 * width)
    retries = f", {report['retries']} retried" if report["retries"] else ""
    print(f"  [{'#' * filled}{'-' * (width - filled)}] {report['pct']:5.1f}%  parts: {report['done']}/{report['parts']}"
          f" done, {report['running']} running, {report['queued']} queued{retries}", file=sys.stderr)  # fmt: skip


# --- joining -------------------------------------------------------------------------------------------------------
def _stream_signature(path: Path) -> tuple:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        return (ctx.name, ctx.width, ctx.height, ctx.pix_fmt, stream.time_base, bytes(ctx.extradata or b""))


def limit_peak(wave_: np.ndarray) -> np.ndarray:
    peak = float(np.abs(wave_).max()) if len(wave_) else 0.0
    return wave_ * (0.99 / peak) if peak > 0.99 else wave_


def write_soundtrack(container, stream, samples: np.ndarray) -> None:
    """Encode mono float ``samples`` at 48 kHz into ``stream``, from time 0."""
    import av

    for start in range(0, len(samples), AUDIO_RATE):
        part = np.ascontiguousarray(samples[start : start + AUDIO_RATE], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(part[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def join(paths: list[Path], cuts: list[int], soundtrack: np.ndarray, output: str | Path, crf: int = 17) -> dict:
    """Join the parts' MP4s (part ``i`` is frames ``cuts[i] .. cuts[i + 1]``, checked) into ``output`` with
    ``soundtrack`` (mono, 48 kHz, the whole input audio) encoded once as its AAC track, cut or padded to the video.

    When the parts agree (codec, size, pixel format, time base, codec parameters) their video packets are copied,
    re-timed to one clock; otherwise the frames are decoded and encoded again once (``crf``). Returns ``{"frames",
    "copied", "note"}``."""
    import av

    output = Path(output)
    signatures = [_stream_signature(p) for p in paths]
    copied = all(s == signatures[0] for s in signatures)
    note = "" if copied else "the parts' video streams differ (codec, size or parameters): encoded again once"
    frames = 0
    out = av.open(str(output), mode="w", options={"movflags": "+faststart"})
    try:
        if copied:
            with av.open(str(paths[0])) as first:
                stream = out.add_stream_from_template(first.streams.video[0])
        else:
            stream = out.add_stream("libx264", rate=FPS)
            stream.width, stream.height = signatures[0][1], signatures[0][2]
            stream.pix_fmt, stream.options = "yuv420p", {"crf": str(crf)}
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        last_dts = None
        for path, start, end in zip(paths, cuts[:-1], cuts[1:], strict=True):
            with av.open(str(path)) as source:
                src = source.streams.video[0]
                if copied:
                    packets = [p for p in source.demux(src) if p.dts is not None and p.size]
                    per_frame = round(1 / (FPS * src.time_base))
                    shift = start * per_frame - min(p.pts for p in packets)
                    if last_dts is not None and packets[0].dts + shift <= last_dts:
                        raise ValueError(f"{path}: its decode times overlap the previous part's")
                    for packet in packets:
                        packet.pts += shift
                        packet.dts += shift
                        packet.time_base = src.time_base
                        packet.stream = stream
                        out.mux(packet)
                    last_dts = packets[-1].dts
                    frames = start + len(packets)
                else:
                    for n, frame in enumerate(source.decode(src)):
                        picture = frame.reformat(format="yuv420p", width=stream.width, height=stream.height)
                        picture.pts, picture.time_base = start + n, Fraction(1, FPS)
                        for packet in stream.encode(picture):
                            out.mux(packet)
                        frames = start + n + 1
            if frames != end:
                raise ValueError(f"{path}: {frames - start} frames, the part has {end - start}")
        if not copied:
            for packet in stream.encode():
                out.mux(packet)
        n = round(frames / FPS * AUDIO_RATE)
        sound = np.zeros(n, np.float32)
        sound[: min(n, len(soundtrack))] = soundtrack[:n]
        write_soundtrack(out, audio, limit_peak(sound))
    except BaseException:
        out.close()
        output.unlink(missing_ok=True)
        raise
    out.close()
    return {"frames": frames, "copied": copied, "note": note}


# --- all of it -----------------------------------------------------------------------------------------------------
def fan_out(client, job: dict, audio: list[str | Path | None], output: str | Path, parts: int | None = None,
            segment_seconds: float | None = None, audio_type: str = "add", key: str | None = None,
            folder: str | Path | None = None, retries: int = 2, lost_after_s: float = 600.0, poll_s: float = 2.0,
            on_progress: Callable[[dict], None] | None = None,
            log: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """Split local audio files at pauses, make the parts on the endpoint at once, join them into ``output``.
    ``job``: the request's other fields (image or a local ``video`` file, prompt, options; not its audio); a video
    source is cut at the same times (``cut_video``) and each part sent with its piece. Returns ``{"frames", "seconds",
    "parts", "cuts", "copied", "retries", "notes"}``."""
    log = log or (lambda message: print(message, file=sys.stderr))
    video = job.get("video")
    if video is not None and not (isinstance(video, str | Path) and Path(video).is_file()):
        raise ValueError("video: a fan-out cuts the source video here, so it must be a local file")
    for source in audio:
        if source is not None and not Path(source).is_file():
            raise ValueError(f"{source}: a fan-out splits the audio here, so it must be a local file")
    tracks = arrange([None if a is None else decode_audio(a) for a in audio], audio_type)
    split = split_at_pauses(tracks, parts=parts, segment_seconds=segment_seconds)
    for note in split.notes:
        log(f"split: {note}")
    if not key:
        keyed = {**job, "video": hashlib.sha256(Path(video).read_bytes()).hexdigest()} if video is not None else job
        key = fan_key(keyed, tracks, split)
    jobs = part_jobs({k: v for k, v in job.items() if k != "video"}, tracks, split, key)
    output = Path(output)
    folder = Path(folder) if folder else output.with_name(output.stem + ".parts")
    if video is not None:  # each part dubs the source's frames at its own times
        cut = cut_video(video, split.cuts, folder, source_end=job.get("source_end", "hold"))
        for part, path in zip(jobs, cut, strict=True):
            part["video"] = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    for i, part in enumerate(jobs):
        size = len(json.dumps(part))
        if size > 9_000_000:
            log(f"part {i + 1}: its request is {size / 1e6:.1f} MB, near RunPod's limit of about 10 MB a request: "
                "use more, shorter parts")  # fmt: skip
    lengths = ", ".join(f"{(e - s) / FPS:.1f}" for s, e in split.parts)
    log(f"{split.total / FPS:.2f} s of audio in {len(jobs)} parts ({lengths} s), cut at pauses; job_key {key}.NNN")
    runner = FanOut(client, jobs, split, folder, retries=retries, lost_after_s=lost_after_s, poll_s=poll_s,
                    on_progress=on_progress, log=log)  # fmt: skip
    paths = runner.run()
    high = arrange([None if a is None else decode_audio(a, AUDIO_RATE) for a in audio], audio_type)
    soundtrack = high[0] if len(high) == 1 else high[0] + high[1]
    joined = join(paths, split.cuts, soundtrack, output)
    if joined["frames"] != split.total:
        raise FanOutError(f"the joined video has {joined['frames']} frames, the audio {split.total}")
    notes = split.notes + ([joined["note"]] if joined["note"] else [])
    return {"frames": joined["frames"], "seconds": joined["frames"] / FPS, "parts": len(jobs), "cuts": split.cuts,
            "copied": joined["copied"], "retries": runner.retried, "notes": notes, "folder": str(folder)}  # fmt: skip
