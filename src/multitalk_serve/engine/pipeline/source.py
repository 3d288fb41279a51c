"""The condition source of a job: a still image or a video, read frame by frame on the output's 25 fps clock.

InfiniteTalk re-reads its reference frame from the source at every window start (output frame ``72 k``) and, with
"keep the rest of the frame", composites every output frame onto the source frame shown at the same time. Both go
through one interface: ``image_at(index)`` (the RGB frame shown at ``t = index / 25``) and ``frame(index, size)``
(that frame resized and centre-cropped to the bucket, ``[3, H, W]`` in [-1, 1], cached).

Video timing. The official code indexes the source's frames as if every video ran at 25 fps (a 30 fps source
drifts behind the audio, a 50 fps one plays at half speed). Here output frame ``i`` is the source frame *displayed*
at ``t = i / 25``: the last frame whose presentation time, measured from the first frame's, is at most ``t``
(``TIME_TOLERANCE`` absorbs timestamp rounding). For a constant 25 fps source that is exactly source frame ``i``
(the official result); variable frame rate sources follow their timestamps.

Past the source's end (a video shorter than the audio): ``source_end="hold"`` shows its last frame (official),
``"pingpong"`` plays it backwards, then forwards again (period ``2 n - 2`` output frames for ``n`` frames).

Rotation metadata (the display matrix of phones' portrait videos, flips included) is applied: frames come out
upright, and ``width`` / ``height`` are the displayed size.

Safety and cost. The video is opened only through ``media.open_container`` (a file object, whitelisted demuxers,
no protocol), and checked before any frame is decoded: a video stream, its size (``MAX_VIDEO_SIDE``,
``MAX_VIDEO_PIXELS``), its duration (``max_seconds``) and its number of frames (``MAX_SOURCE_FPS`` per second).
The packets' timestamps are indexed once by demuxing without decoding (cheap: no pixels), which gives the exact frame
times (sorted: B-frames arrive out of order) and the keyframes to seek to. Decoding then runs forward; an earlier
frame seeks to the keyframe before it. Memory is bounded whatever the length: at most ``CACHE_FRAMES`` resized frames
are kept (about two windows), never a list of all frames.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections import OrderedDict
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, VideoInputError
from .conditioning import _crop_offsets, _scaled_size
from .media import VIDEO_CONTAINERS, MediaRefused, open_container
from .video import FPS

SOURCE_ENDS = ("hold", "pingpong")  # what a video shorter than the audio shows past its end
MAX_VIDEO_SECONDS = 600.0  # default duration limit of a video source (the caller may pass its own)


def video_limit(max_duration_s: float) -> float:
    """The longest source video a job accepts: a source longer than the audio is fine (its start is dubbed), so the
    cap is the job's duration limit or ``MAX_VIDEO_SECONDS``, whichever is larger (it bounds the cost of indexing)."""
    return max(float(max_duration_s), MAX_VIDEO_SECONDS)


MAX_VIDEO_SIDE = 4096  # pixels a side (4K DCI), checked before decoding
MAX_VIDEO_PIXELS = 9_000_000  # pixels a frame (4096 x 2160 = 8.8 MP passes)
MIN_VIDEO_SIDE = 32  # as an image input
MAX_SOURCE_FPS = 240  # source frames per second of video: a 1000 fps file cannot make a job decode for hours
TIME_TOLERANCE = Fraction(1, 1000)  # seconds: timestamp rounding (1/40 of an output frame)
CACHE_FRAMES = 170  # resized frames kept: about two 81-frame windows
FORWARD_FRAMES = 8  # a frame this close ahead is decoded forward even past a keyframe (no seek)
CHUNK_FRAMES = 84  # output frames before a requested one that are cached on the way (backward reads, pingpong)
SNIFF_BYTES = 64


def sniff_media(source: str | Path | bytes | bytearray) -> str | None:
    """``"image"``, ``"video"`` or ``None`` (unknown, audio, text, ...) from the first bytes' signature only: nothing
    is decoded, nothing is opened through FFmpeg. For telling a user who sent a video as ``image`` (or the reverse)
    what to do; the file's real use still goes through the validated openers."""
    return _sniff(source)[0]


def _sniff(source: str | Path | bytes | bytearray) -> tuple[str | None, str]:
    if isinstance(source, bytes | bytearray):
        head = bytes(source[:SNIFF_BYTES])
    else:
        try:
            with open(source, "rb") as handle:
                head = handle.read(SNIFF_BYTES)
        except OSError:
            return None, ""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "TIFF"
    if head[:2] == b"BM" and len(head) >= 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "image", "BMP"
    if head[4:8] == b"ftyp":  # ISO base media: MP4 / MOV / M4A, and the HEIF images (AVIF, HEIC)
        brand = head[8:12]
        if brand in (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"):
            return "image", "AVIF" if brand.startswith(b"avi") else "HEIF"
        if brand in (b"M4A ", b"M4B ", b"M4P ", b"F4A "):
            return None, "M4A"
        return "video", "MP4/MOV"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime without ftyp
        return "video", "MOV"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "Matroska/WebM"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "AVI"
    if head.startswith(b"FLV"):
        return "video", "FLV"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video", "ASF/WMV"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "video", "MPEG-PS"
    if head.startswith(b"\x47") and _looks_like_ts(source):
        return "video", "MPEG-TS"
    return None, ""


def _looks_like_ts(source: str | Path | bytes | bytearray) -> bool:
    """MPEG-TS: a sync byte 0x47 every 188 bytes."""
    if isinstance(source, bytes | bytearray):
        head = bytes(source[: 188 * 2 + 1])
    else:
        with open(source, "rb") as handle:
            head = handle.read(188 * 2 + 1)
    return len(head) > 188 * 2 and all(head[i] == 0x47 for i in (0, 188, 376))


def _check_source_end(source_end: str) -> None:
    if source_end not in SOURCE_ENDS:
        raise InputError(f"source_end must be one of {', '.join(SOURCE_ENDS)}, got {source_end!r}")


def _crop_uint8(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``conditioning.resize_and_center_crop`` before its conversion to float: ``[H, W, 3]`` uint8."""
    final_h, final_w = _scaled_size(image.height, image.width, size)
    resized = np.asarray(image.convert("RGB").resize((final_w, final_h), resample=Image.BILINEAR))
    top, left = _crop_offsets((final_h, final_w), size)
    return np.array(resized[top : top + size[0], left : left + size[1]])


def _to_tensor(crop: np.ndarray) -> torch.Tensor:
    """The same conversion as ``conditioning.resize_and_center_crop`` (so the results are equal, bit for bit)."""
    return (torch.from_numpy(crop).permute(2, 0, 1).float() / 255 - 0.5) * 2


def _size_key(size: tuple[int, int]) -> tuple[int, int]:
    height, width = size
    return int(height), int(width)


class ImageSource:
    """A still image as a condition source: the same picture at every index."""

    kind = "image"
    frames: int | None = None

    def __init__(self, image: Image.Image) -> None:
        self._image = image.convert("RGB")
        self.width, self.height = self._image.width, self._image.height
        self._frames: dict[tuple[int, int], torch.Tensor] = {}

    def image_at(self, index: int) -> Image.Image:
        if index < 0:
            raise IndexError(f"frame index must be >= 0, got {index}")
        return self._image

    def frame(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        """The image resized and centre-cropped to ``size`` = (height, width): ``[3, H, W]`` in [-1, 1]."""
        if index < 0:
            raise IndexError(f"frame index must be >= 0, got {index}")
        key = _size_key(size)
        if key not in self._frames:
            self._frames[key] = _to_tensor(_crop_uint8(self._image, key))
        return self._frames[key].clone()

    def clip(self, start: int, count: int, size: tuple[int, int]) -> torch.Tensor:
        """``count`` frames from ``start``: ``[3, count, H, W]`` (the same picture each time)."""
        return self.frame(start, size)[:, None].expand(-1, count, -1, -1).clone()

    def close(self) -> None:
        self._frames.clear()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoSource:
    """A video as a condition source, resampled by timestamps to 25 fps (see the module's docstring).

    ``source``: the file's bytes or a path. ``name``: the field as the user wrote it (in every message).
    ``source_end``: ``"hold"`` or ``"pingpong"`` past the end. ``max_seconds``: the longest video accepted.
    Raises ``VideoInputError`` for anything that cannot be used, before decoding more than the first frame.
    One job's object: not for use from several threads at once."""

    kind = "video"

    def __init__(
        self,
        source: str | Path | bytes | bytearray,
        *,
        name: str = "video",
        source_end: str = "hold",
        max_seconds: float = MAX_VIDEO_SECONDS,
    ) -> None:
        _check_source_end(source_end)
        if not (max_seconds > 0):
            raise InputError(f"max_seconds must be > 0, got {max_seconds}")
        self.name = name
        self.source_end = source_end
        self.max_seconds = float(max_seconds)
        self._stack = ExitStack()
        self._crops: OrderedDict[tuple[int, tuple[int, int]], np.ndarray] = OrderedDict()
        self._last: tuple[int, Image.Image] | None = None  # the last source frame converted (ordinal, picture)
        self._iter: Any = None  # the decoder's frame iterator
        self._pos = -1  # ordinal of the last frame decoded (-1: none since the last seek)
        self._floor = 0  # frames decoded before this ordinal (after a seek: leading B-frames) are not trusted
        self.decoded = 0  # source frames decoded so far (a cost figure; tests read it)
        self.seeks = 0
        try:
            self._open(source)
        except BaseException:
            self._stack.close()
            raise

    # ---- opening and the cheap probe ---------------------------------------------------------------------------

    def _open(self, source: str | Path | bytes | bytearray) -> None:
        import av

        name = self.name
        if isinstance(source, bytes | bytearray) and not source:
            raise VideoInputError(f"{name}: the file is empty")
        kind, label = _sniff(source)
        if kind == "image":
            article = "an" if label[0] in "AEIOU" else "a"
            raise VideoInputError(f"{name}: this is {article} {label} image, not a video: send it as `image`")
        try:
            self._container = self._stack.enter_context(open_container(source, VIDEO_CONTAINERS, "video"))
        except MediaRefused as exc:
            raise VideoInputError(f"{name}: {exc}") from exc
        except av.error.EOFError as exc:
            raise VideoInputError(f"{name}: the file ends before its first frame (empty or cut short)") from exc
        except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise VideoInputError(f"{name}: not a readable video ({_first_line(exc)})") from exc
        container = self._container
        streams = [
            s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)
        ]  # cover art is not a video
        if not streams:
            raise VideoInputError(f"{name}: no video stream (an audio-only file?)")
        self._stream = stream = streams[0]
        for other in container.streams:
            if other is not stream:
                other.discard = av.stream.Discard.all  # demux only the video's packets
        ctx = stream.codec_context
        self._check_size(ctx.width, ctx.height)
        # the decoder itself refuses larger pictures (a stream may change its size midway)
        ctx.options = {**ctx.options, "max_pixels": str(MAX_VIDEO_PIXELS)}
        self._time_base = stream.time_base or Fraction(1, 90000)
        header = float(stream.duration * self._time_base) if stream.duration else None  # what the header claims
        if header is not None and header > self.max_seconds + float(TIME_TOLERANCE):
            raise VideoInputError(f"{name}: {header:.1f} s long, over the {self.max_seconds:g} s limit")
        self._index()
        self._first_frame()

    def _check_size(self, width: int, height: int) -> None:
        name = self.name
        if not width or not height:
            raise VideoInputError(f"{name}: the video stream has no frame size (not a readable video)")
        if max(width, height) > MAX_VIDEO_SIDE or width * height > MAX_VIDEO_PIXELS:
            raise VideoInputError(
                f"{name}: {width}x{height} frames are too large (at most {MAX_VIDEO_SIDE} px a side and "
                f"{MAX_VIDEO_PIXELS / 1e6:g} MP)"
            )
        if min(width, height) < MIN_VIDEO_SIDE:
            raise VideoInputError(
                f"{name}: {width}x{height} frames are too small ({MIN_VIDEO_SIDE} px a side at least)"
            )

    def _index(self) -> None:
        """Demux (no decoding) once: every frame's presentation timestamp and the keyframes, with the limits."""
        import av

        name, tb = self.name, self._time_base
        limit_ticks = math.floor((Fraction(self.max_seconds) + TIME_TOLERANCE) / tb)
        max_count = int(MAX_SOURCE_FPS * max(self.max_seconds, 1.0)) + 1
        stamps: list[int] = []
        keys: list[int] = []
        durations: dict[int, int] = {}
        low = high = None
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    continue
                stamps.append(ts)
                if packet.is_keyframe:
                    keys.append(ts)
                if packet.duration:
                    durations[ts] = packet.duration
                low = ts if low is None else min(low, ts)
                high = ts if high is None else max(high, ts)
                if high - low > limit_ticks:
                    raise VideoInputError(f"{name}: longer than the {self.max_seconds:g} s limit")
                if len(stamps) > max_count:
                    raise VideoInputError(
                        f"{name}: over {max_count} frames (at most {MAX_SOURCE_FPS} frames per second of video)"
                    )
        except av.error.FFmpegError as exc:
            if not stamps:
                raise VideoInputError(f"{name}: not a readable video ({_first_line(exc)})") from exc
            # a damaged tail: the frames indexed so far are used
        if not stamps:
            raise VideoInputError(f"{name}: the video has no frames")
        pts = np.unique(np.asarray(stamps, dtype=np.int64))  # sorted: B-frames arrive out of order
        key_ordinals = sorted({int(np.searchsorted(pts, k)) for k in keys}) if keys else [0]
        if key_ordinals[0] != 0:
            key_ordinals.insert(0, 0)
        step = int(np.median(np.diff(pts))) if len(pts) > 1 else max(1, round(1 / (FPS * tb)))
        last = durations.get(int(pts[-1]), 0)  # how long the last frame is shown: its packet's duration, if sane
        last = last if step / 2 <= last <= 4 * step else step
        relative = pts - pts[0]
        end = Fraction(int(relative[-1]) + last) * tb  # seconds the source is displayed
        if end > Fraction(self.max_seconds) + TIME_TOLERANCE:
            raise VideoInputError(f"{name}: {float(end):.1f} s long, over the {self.max_seconds:g} s limit")
        if len(pts) > MAX_SOURCE_FPS * max(end, Fraction(1)):
            raise VideoInputError(
                f"{name}: {len(pts)} frames in {float(end):.2f} s, over {MAX_SOURCE_FPS} frames per second"
            )
        self._pts = pts
        self._keys = key_ordinals
        self._ordinal_of = {int(p): k for k, p in enumerate(pts)}
        self.source_frames = len(pts)
        self.duration = float(end)
        self.frames = max(1, math.ceil((end - TIME_TOLERANCE) * FPS))
        # output frame i -> ordinal of the source frame displayed at t = i / 25 (ints: frames <= 25 * max_seconds)
        # in ticks: floor((i / 25 + tolerance) / time_base), exact integer arithmetic
        tn, td = TIME_TOLERANCE.numerator, TIME_TOLERANCE.denominator
        limits = [((i * td + FPS * tn) * tb.denominator) // (FPS * td * tb.numerator) for i in range(self.frames)]
        self._shown = np.searchsorted(relative, np.asarray(limits, dtype=np.int64), side="right") - 1

    def _first_frame(self) -> None:
        """Decode the first frame: the codec works, and its display matrix gives the orientation."""
        self._seek(0)
        frame = self._next()
        if frame is None:
            raise VideoInputError(f"{self.name}: no frame could be decoded")
        self._orientation = _orientation(frame)
        width, height = frame.width, frame.height
        self._check_size(width, height)
        if self._orientation[0]:  # transposed: a quarter turn
            width, height = height, width
        self.width, self.height = width, height
        self._last = (self._pos, self._picture(frame))

    # ---- the 25 fps clock ---------------------------------------------------------------------------------------

    def output_index(self, index: int) -> int:
        """The output frame within the source (``0 <= i < frames``) that ``index`` shows: ``hold`` past the end
        shows the last one, ``pingpong`` folds the index back and forth with period ``2 n - 2``."""
        if index < 0:
            raise IndexError(f"frame index must be >= 0, got {index}")
        n = self.frames
        if index < n:
            return index
        if self.source_end == "hold" or n == 1:
            return n - 1
        period = 2 * n - 2
        m = index % period
        return m if m < n else period - m

    def source_ordinal(self, index: int) -> int:
        """The source frame (0-based, in presentation order) shown at output frame ``index``."""
        return int(self._shown[self.output_index(index)])

    def source_time(self, index: int) -> float:
        """The presentation time (seconds from the first frame) of the source frame shown at ``index``."""
        ordinal = self.source_ordinal(index)
        return float((int(self._pts[ordinal]) - int(self._pts[0])) * self._time_base)

    # ---- frames --------------------------------------------------------------------------------------------------

    def image_at(self, index: int) -> Image.Image:
        """The upright RGB frame shown at ``t = index / 25`` (see ``output_index`` past the end)."""
        ordinal = self.source_ordinal(index)
        if self._last is not None and self._last[0] == ordinal:
            return self._last[1]
        return self._decode(ordinal, keep=(), size=None)

    def frame(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        """``resize_and_center_crop(image_at(index), size)``: ``[3, H, W]`` in [-1, 1], from a bounded cache."""
        key_size = _size_key(size)
        out = self.output_index(index)
        ordinal = int(self._shown[out])
        key = (ordinal, key_size)
        crop = self._crops.get(key)
        if crop is not None:
            self._crops.move_to_end(key)
            return _to_tensor(crop)
        if self._last is not None and self._last[0] == ordinal:
            self._store(key, _crop_uint8(self._last[1], key_size))
        else:
            # the frames shown just before this one are cached on the way (reads go back up to a window)
            keep = {int(k) for k in self._shown[max(0, out - CHUNK_FRAMES) : out]}
            self._decode(ordinal, keep=keep, size=key_size)
            self._store(key, _crop_uint8(self._last[1], key_size))  # type: ignore[index]
        return _to_tensor(self._crops[key])

    def clip(self, start: int, count: int, size: tuple[int, int]) -> torch.Tensor:
        """``count`` consecutive output frames from ``start`` (what a window composites onto): ``[3, count, H, W]``."""
        return torch.stack([self.frame(i, size) for i in range(start, start + count)], dim=1)

    @property
    def cached(self) -> int:
        """Resized frames held now (at most ``CACHE_FRAMES``)."""
        return len(self._crops)

    def _store(self, key: tuple[int, tuple[int, int]], crop: np.ndarray) -> None:
        self._crops[key] = crop
        self._crops.move_to_end(key)
        while len(self._crops) > CACHE_FRAMES:
            self._crops.popitem(last=False)

    def _decode(self, ordinal: int, keep: Any, size: tuple[int, int] | None) -> Image.Image:
        """Decode up to source frame ``ordinal`` (forward from where the decoder is, or from the keyframe before it)
        and return its picture; frames in ``keep`` met on the way are cached at ``size``."""
        index = bisect.bisect_right(self._keys, ordinal) - 1  # the keyframe at or before it
        ahead = ordinal - self._pos
        forward = self._iter is not None and ahead > 0 and (self._keys[index] <= self._pos or ahead <= FORWARD_FRAMES)
        if not forward:
            self._seek(self._keys[index])
        fresh = not forward  # no trusted frame since the seek yet
        found: tuple[int, Any] | None = None
        previous: tuple[int, Any] | None = None
        while True:
            frame = self._next()
            if frame is None:  # the stream ended early (undecodable tail): the last frame before it is shown
                found = previous
                break
            position = self._pos
            if position < self._floor:  # after a seek: frames of the previous group of pictures
                continue
            if fresh and position > ordinal and index > 0:  # the seek landed past the frame: one keyframe earlier
                index -= 1
                self._seek(self._keys[index])
                continue
            fresh = False
            if position == ordinal:
                found = (position, frame)
                break
            if position > ordinal:  # the frame itself did not come out of the decoder: the one before it is shown
                found = previous or (position, frame)
                break
            previous = (position, frame)
            if size is not None and position in keep:
                self._store((position, size), _crop_uint8(self._picture(frame), size))
        if found is None:
            if self._last is not None:
                return self._last[1]
            raise VideoInputError(f"{self.name}: the frame at {self._time(ordinal):.2f} s could not be decoded")
        picture = self._picture(found[1])
        self._last = (ordinal, picture)
        return picture

    def _seek(self, ordinal: int) -> None:
        """Position the decoder on the keyframe ``ordinal`` (frames before it that come out are not trusted)."""
        import av

        if self._iter is not None:
            self._iter.close()
        target = int(self._pts[ordinal]) if ordinal > 0 else int(self._pts[0])
        try:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        except av.error.FFmpegError as exc:
            raise VideoInputError(f"{self.name}: cannot seek in the video ({_first_line(exc)})") from exc
        self.seeks += 1
        self._iter = self._container.decode(self._stream)
        self._pos = ordinal - 1  # the next frame expected is the keyframe (frames without a timestamp count on)
        self._floor = ordinal

    def _next(self) -> Any:
        """The next decoded frame (``None`` at the end); sets ``_pos`` to its ordinal."""
        import av

        try:
            frame = next(self._iter)
        except StopIteration:
            self._iter = None
            return None
        except av.error.FFmpegError as exc:
            raise VideoInputError(f"{self.name}: cannot decode the video ({_first_line(exc)})") from exc
        self.decoded += 1
        ordinal = self._ordinal_of.get(frame.pts) if frame.pts is not None else None
        self._pos = ordinal if ordinal is not None else self._pos + 1
        return frame

    def _picture(self, frame: Any) -> Image.Image:
        array = frame.to_ndarray(format="rgb24")
        transpose, flip_rows, flip_cols = self._orientation
        if transpose:
            array = array.transpose(1, 0, 2)
        if flip_rows:
            array = array[::-1]
        if flip_cols:
            array = array[:, ::-1]
        return Image.fromarray(np.ascontiguousarray(array))

    def _time(self, ordinal: int) -> float:
        return float((int(self._pts[ordinal]) - int(self._pts[0])) * self._time_base)

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()
            self._iter = None
        self._crops.clear()
        self._last = None
        self._stack.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _orientation(frame: Any) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns), applied in that order, that turn a decoded frame upright from its
    display matrix (``libavutil/display.h``: ``x' = a x + c y``, ``y' = b x + d y`` in pixel coordinates, y down)."""
    matrix = None
    for side in frame.side_data:
        if "DISPLAYMATRIX" in str(side.type):
            matrix = struct.unpack("=9i", bytes(side))
            break
    if matrix is None:
        return False, False, False
    a, b, _, c, d = (float(v) for v in matrix[:5])
    if abs(a) + abs(d) >= abs(b) + abs(c):  # no quarter turn: x' = a x, y' = d y
        return False, d < 0, a < 0
    # quarter turn: x' = c y, y' = b x: the transposed picture, mirrored where the sign is negative
    return True, b < 0, c < 0


def open_source(
    image: Image.Image | None = None,
    video: str | Path | bytes | bytearray | None = None,
    *,
    image_name: str = "image",
    video_name: str = "video",
    source_end: str = "hold",
    max_seconds: float = MAX_VIDEO_SECONDS,
) -> ImageSource | VideoSource:
    """The condition source of a job: exactly one of ``image`` (already loaded and checked, e.g. by ``load_image``)
    and ``video`` (a path or the file's bytes). Use it as a context manager, or ``close()`` it."""
    _check_source_end(source_end)
    if (image is None) == (video is None):
        raise InputError(f"give exactly one of {image_name} and {video_name}")
    if image is not None:
        if not isinstance(image, Image.Image):
            raise TypeError(f"{image_name}: open_source takes a loaded PIL image (load_image), got {type(image)}")
        return ImageSource(image)
    return VideoSource(video, name=video_name, source_end=source_end, max_seconds=max_seconds)  # type: ignore[arg-type]


def _first_line(exc: BaseException) -> str:
    """FFmpeg's reason without its errno and file name (``Invalid data found when processing input``)."""
    reason = getattr(exc, "strerror", None) if not isinstance(exc, FileNotFoundError) else None
    if reason:
        return str(reason)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
