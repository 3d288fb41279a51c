"""The condition source (engine/pipeline/source.py): an image or a video read on the output's 25 fps clock.

Videos are made on the spot with PyAV, 64x48, a few dozen frames; each frame carries its number as 12 black/white
blocks of 16x16 px (robust to the codec), so a test reads back which source frame it got."""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from media import write_audio, write_video
from multitalk_serve.engine import (
    ImageSource,
    InputError,
    VideoInputError,
    VideoSource,
    open_source,
    sniff_media,
)
from multitalk_serve.engine.pipeline import source as source_module
from multitalk_serve.engine.pipeline.conditioning import resize_and_center_crop

W, H = 64, 48


def numbered(k: int, width: int = W, height: int = H) -> np.ndarray:
    """Frame ``k``: bit b of k is the block (row b // 4, column b % 4) of 16x16 px, white for 1."""
    img = np.zeros((height, width, 3), np.uint8)
    for b in range(12):
        row, col = divmod(b, 4)
        if (k >> b) & 1:
            img[row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] = 255
    return img


def number(image: Image.Image | np.ndarray) -> int:
    a = np.asarray(image).astype(int)
    return sum(1 << b for b in range(12) if a[(b // 4) * 16 + 8, (b % 4) * 16 + 8].mean() > 128)


def write_frames(
    path: Path,
    pts: list[int],
    time_base: Fraction = Fraction(1, 25),
    *,
    size: tuple[int, int] = (W, H),
    codec: str = "libx264",
    rotation: int | None = None,
    hflip: bool = False,
    images: list[np.ndarray] | None = None,
    options: dict | None = None,
) -> Path:
    """A video whose frame k (in presentation order) is ``numbered(k)`` at time ``pts[k] * time_base``."""
    width, height = size
    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=round(1 / time_base) if time_base < 1 else 25, options=options or {})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.time_base = time_base
        if rotation is not None or hflip:
            v.set_display_rotation(rotation or 0, hflip=hflip)
        # each packet lasts until the next frame (the last one: a 25 fps frame), as a real recording's
        ends = [*pts[1:], pts[-1] + max(1, round(Fraction(1, 25) / time_base))]
        durations = {p: end - p for p, end in zip(pts, ends, strict=True)}
        for k, p in enumerate(pts):
            img = images[k] if images is not None else numbered(k, width, height)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = p, time_base
            for packet in v.encode(frame):
                packet.duration = durations.get(packet.pts, packet.duration)
                c.mux(packet)
        for packet in v.encode():
            packet.duration = durations.get(packet.pts, packet.duration)
            c.mux(packet)
    return path


def cfr(path: Path, count: int, fps: int = 25, **kw) -> Path:
    return write_frames(path, list(range(count)), Fraction(1, fps), **kw)


# ---- timing -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".mkv", "libx264"), (".webm", "libvpx-vp9")])
def test_25_fps_source_frame_i_is_output_frame_i(tmp_path, suffix, codec):
    """The official indexing (frame index = output index) for a 25 fps source, B-frames included."""
    path = cfr(tmp_path / f"v{suffix}", 40, codec=codec)
    with VideoSource(path) as src:
        assert (src.kind, src.width, src.height, src.frames) == ("video", W, H, 40)
        assert [number(src.image_at(i)) for i in range(40)] == list(range(40))
        assert [src.source_ordinal(i) for i in range(40)] == list(range(40))
        assert src.decoded == 40  # read forward once, no seek per frame


def test_frame_is_the_resized_crop_of_image_at(tmp_path):
    with VideoSource(cfr(tmp_path / "v.mp4", 12)) as src:
        for i, size in ((0, (32, 40)), (7, (48, 48)), (11, (24, 64))):
            assert torch.equal(src.frame(i, size), resize_and_center_crop(src.image_at(i), size))
        out = src.frame(3, (32, 40))
        assert out.shape == (3, 32, 40) and out.dtype == torch.float32
        assert out.min() >= -1 and out.max() <= 1
        clip = src.clip(9, 5, (H, W))  # past the end (12 frames): held
        assert clip.shape == (3, 5, H, W)
        assert [number(((clip[:, j] + 1) * 127.5).round().byte().permute(1, 2, 0)) for j in range(5)] == [
            9,
            10,
            11,
            11,
            11,
        ]


@pytest.mark.parametrize("fps", [30, 50])
def test_other_frame_rates_follow_the_timestamps(tmp_path, fps):
    """Output frame i shows the source frame displayed at t = i / 25, not source frame i (the official quirk)."""
    count = 2 * fps  # 2 s
    with VideoSource(cfr(tmp_path / f"v{fps}.mp4", count, fps)) as src:
        assert src.frames == 50
        got = [number(src.image_at(i)) for i in range(50)]
        assert got == [i * fps // 25 for i in range(50)]
        assert src.source_time(49) == pytest.approx((49 * fps // 25) / fps)


def test_variable_frame_rate_is_resampled_by_timestamps(tmp_path):
    times_ms = [0, 10, 50, 55, 120, 200, 210, 330, 331, 400, 470, 600, 640]
    path = write_frames(tmp_path / "vfr.mkv", times_ms, Fraction(1, 1000))
    with VideoSource(path) as src:
        expected = []
        for i in range(src.frames):
            t = i * 40  # ms
            expected.append(max(k for k, ms in enumerate(times_ms) if ms <= t + 1))
        assert [number(src.image_at(i)) for i in range(src.frames)] == expected
        # shown from 0 to 640 ms + the last frame's duration (its packet's, 40 ms): 17 frames
        assert src.frames == math.ceil((640 + 40 - 1) / 40)


def test_timestamp_rounding_within_the_tolerance(tmp_path):
    """A 25 fps video stored in milliseconds (0, 40, 80, ... but one frame rounded 1 ms late) still maps 1 to 1."""
    times_ms = [0, 40, 81, 120, 160]
    with VideoSource(write_frames(tmp_path / "ms.mkv", times_ms, Fraction(1, 1000))) as src:
        assert [number(src.image_at(i)) for i in range(5)] == [0, 1, 2, 3, 4]


# ---- past the end -------------------------------------------------------------------------------------------------


def test_hold_shows_the_last_frame_past_the_end(tmp_path):
    with VideoSource(cfr(tmp_path / "v.mp4", 10)) as src:
        assert [number(src.image_at(i)) for i in (9, 10, 11, 500)] == [9, 9, 9, 9]
        assert torch.equal(src.frame(10_000, (48, 64)), src.frame(9, (48, 64)))


def test_pingpong_plays_back_and_forth(tmp_path):
    with VideoSource(cfr(tmp_path / "v.mp4", 5), source_end="pingpong") as src:
        assert [src.output_index(i) for i in range(14)] == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3]
        assert [number(src.image_at(i)) for i in range(14)] == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3]
    one = cfr(tmp_path / "one.mp4", 1)
    with VideoSource(one, source_end="pingpong") as src:
        assert src.frames == 1 and [src.output_index(i) for i in range(4)] == [0, 0, 0, 0]


def test_negative_index_and_bad_source_end(tmp_path):
    path = cfr(tmp_path / "v.mp4", 3)
    with VideoSource(path) as src, pytest.raises(IndexError):
        src.image_at(-1)
    with pytest.raises(InputError, match="source_end must be one of hold, pingpong"):
        VideoSource(path, source_end="loop")


# ---- sources ------------------------------------------------------------------------------------------------------


def test_bytes_and_path_sources_agree(tmp_path):
    path = cfr(tmp_path / "v.mp4", 8)
    with VideoSource(path) as a, VideoSource(path.read_bytes()) as b, VideoSource(str(path)) as c:
        for i in (0, 5, 7, 9):
            assert torch.equal(a.frame(i, (32, 32)), b.frame(i, (32, 32)))
            assert torch.equal(a.frame(i, (32, 32)), c.frame(i, (32, 32)))


def test_a_video_with_sound_uses_its_video_stream(tmp_path):
    path = write_video(tmp_path / "talk.mp4", 1.0, wave=np.zeros(48000, np.float32))
    with VideoSource(path) as src:
        assert (src.frames, src.width, src.height) == (25, 64, 48)


def test_image_source_and_open_source(tmp_path):
    picture = Image.fromarray(numbered(5))
    with open_source(image=picture) as src:
        assert isinstance(src, ImageSource)
        assert (src.kind, src.width, src.height, src.frames) == ("image", W, H, None)
        assert number(src.image_at(0)) == number(src.image_at(123)) == 5
        assert torch.equal(src.frame(80, (32, 40)), resize_and_center_crop(picture, (32, 40)))
        src.frame(0, (32, 40)).zero_()  # a caller's change does not reach the cache
        assert torch.equal(src.frame(1, (32, 40)), resize_and_center_crop(picture, (32, 40)))
        clip = src.clip(5, 3, (32, 40))
        assert clip.shape == (3, 3, 32, 40) and all(torch.equal(clip[:, j], src.frame(0, (32, 40))) for j in range(3))
    with open_source(video=cfr(tmp_path / "v.mp4", 4), source_end="pingpong") as src:
        assert isinstance(src, VideoSource) and src.source_end == "pingpong"
    with pytest.raises(InputError, match="exactly one of image and video"):
        open_source()
    with pytest.raises(InputError, match="exactly one of photo and clip"):
        open_source(image=picture, video=b"x", image_name="photo", video_name="clip")


# ---- bad inputs ---------------------------------------------------------------------------------------------------


def _png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(numbered(1)).save(out, "PNG")
    return out.getvalue()


def test_an_image_sent_as_video_says_to_send_it_as_image(tmp_path):
    with pytest.raises(VideoInputError, match=r"^video: this is a PNG image, not a video: send it as `image`$"):
        VideoSource(_png())
    jpeg = tmp_path / "photo.mp4"  # the suffix does not matter: the bytes do
    Image.fromarray(numbered(1)).save(jpeg, "JPEG")
    with pytest.raises(VideoInputError, match=r"^clip: this is a JPEG image"):
        VideoSource(jpeg, name="clip")


def test_sniff_media(tmp_path):
    assert sniff_media(_png()) == "image"
    assert sniff_media(cfr(tmp_path / "v.mp4", 2)) == "video"
    assert sniff_media(cfr(tmp_path / "v.mkv", 2).read_bytes()) == "video"
    assert sniff_media(b"hello world") is None
    assert sniff_media(write_audio(tmp_path / "a.wav", 0.1)) is None
    assert sniff_media(tmp_path / "missing.mp4") is None


def test_no_video_stream(tmp_path):
    audio = write_audio(tmp_path / "a.m4a", 0.2)  # MP4 family, audio only
    with pytest.raises(VideoInputError, match=r"^video: no video stream"):
        VideoSource(audio)
    mp4 = tmp_path / "sound.mp4"  # an .mp4 holding only an AAC track
    with av.open(str(mp4), "w") as c:
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, i * 1024, Fraction(1, 16000)
            for packet in a.encode(frame):
                c.mux(packet)
        for packet in a.encode():
            c.mux(packet)
    assert sniff_media(mp4) == "video"  # by its bytes an MP4 (the caller's hint); opening it tells the truth
    with pytest.raises(VideoInputError, match=r"^video: no video stream \(an audio-only file\?\)$"):
        VideoSource(mp4.read_bytes())


def test_zero_frames(tmp_path):
    """A Matroska file that declares a video stream but holds only audio packets."""
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        c.start_encoding()
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, i * 1024, Fraction(1, 16000)
            for packet in a.encode(frame):
                c.mux(packet)
        for packet in a.encode():
            c.mux(packet)
    with pytest.raises(VideoInputError, match=r"^video: the video has no frames$"):
        VideoSource(path)


def test_frames_too_large(tmp_path):
    wide = write_frames(
        tmp_path / "wide.mp4",
        [0],
        size=(4160, 32),
        images=[np.zeros((32, 4160, 3), np.uint8)],
        options={"preset": "ultrafast"},
    )
    with pytest.raises(
        VideoInputError, match=r"^video: 4160x32 frames are too large \(at most 4096 px a side and 9 MP\)"
    ):
        VideoSource(wide)


def test_frame_pixel_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(source_module, "MAX_VIDEO_PIXELS", 3000)
    with pytest.raises(VideoInputError, match=r"64x48 frames are too large"):
        VideoSource(cfr(tmp_path / "v.mp4", 2))


def test_too_long(tmp_path):
    path = cfr(tmp_path / "v.mp4", 50)  # 2 s
    with pytest.raises(VideoInputError, match=r"^video: 2.0 s long, over the 1 s limit$"):
        VideoSource(path, max_seconds=1)
    # three frames 400 s apart: refused from the header, nothing decoded
    sparse = write_frames(tmp_path / "sparse.mp4", [0, 400, 800], Fraction(1, 1))
    with pytest.raises(VideoInputError, match=r"over the 600 s limit"):
        VideoSource(sparse)
    sparse_mkv = write_frames(tmp_path / "sparse.mkv", [0, 400, 800], Fraction(1, 1))  # no duration in the header
    with pytest.raises(VideoInputError, match=r"over the 600 s limit"):
        VideoSource(sparse_mkv)


def test_too_many_frames_per_second(tmp_path):
    path = write_frames(
        tmp_path / "fast.mp4", list(range(300)), Fraction(1, 1000), size=(32, 32), options={"preset": "ultrafast"}
    )
    with pytest.raises(VideoInputError, match=r"^video: 300 frames in 0.30 s, over 240 frames per second$"):
        VideoSource(path)


def test_not_media_and_refused_containers(tmp_path):
    with pytest.raises(VideoInputError, match=r"^video: not a readable video \(Invalid data found"):
        VideoSource(b"hello world\n" * 50)
    with pytest.raises(VideoInputError, match=r"^video: the file is empty$"):
        VideoSource(b"")
    with pytest.raises(VideoInputError, match=r"^video: not a readable video"):
        VideoSource(tmp_path / "missing.mp4")
    with pytest.raises(
        VideoInputError, match=r"^video: not in an accepted video container \(mov, mp4, matroska, webm\)$"
    ):
        VideoSource(write_audio(tmp_path / "a.wav", 0.1))
    avi = tmp_path / "v.avi"
    with av.open(str(avi), "w") as c:
        v = c.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(numbered(i), format="rgb24")
            frame.pts = i
            for packet in v.encode(frame):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
    assert sniff_media(avi) == "video"
    with pytest.raises(VideoInputError, match=r"^video: not in an accepted video container"):
        VideoSource(avi)


# ---- rotation -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rotation", "hflip"), [(90, False), (-90, False), (180, False), (0, True), (-90, True)])
def test_rotation_metadata_gives_upright_frames(tmp_path, rotation, hflip):
    """A display matrix (phones' portrait videos): frames come out as displayed, the size is the displayed one.
    PyAV's ``set_display_rotation``: counter-clockwise degrees, then the mirror."""
    coded = numbered(0b101100100111)
    coded[:16, :16] = (255, 0, 0)  # a red corner: top left as coded
    path = write_frames(tmp_path / "rot.mp4", [0, 1, 2], rotation=rotation, hflip=hflip, images=[coded] * 3)
    expected = np.rot90(coded, k=rotation // 90)
    if hflip:
        expected = expected[:, ::-1]
    with VideoSource(path) as src:
        assert (src.height, src.width) == expected.shape[:2]
        shown = np.asarray(src.image_at(1)).astype(int)
        assert shown.shape == expected.shape
        assert np.abs(shown - expected).mean() < 8
        assert src.frame(0, (src.height, src.width)).shape == (3, *expected.shape[:2])


def test_clockwise_portrait_video(tmp_path):
    """The common phone case (rotate=90 clockwise, display matrix -90): coded landscape, shown portrait with the
    coded top-left corner at the top right."""
    coded = np.zeros((H, W, 3), np.uint8)
    coded[:16, :16] = 255
    with VideoSource(write_frames(tmp_path / "p.mkv", [0, 1], rotation=-90, images=[coded] * 2)) as src:
        assert (src.width, src.height) == (H, W)
        shown = np.asarray(src.image_at(0)).astype(int)
        assert shown[:16, -16:].mean() > 200 and shown[-16:, :16].mean() < 50


# ---- decoding order, seeking, memory ------------------------------------------------------------------------------


def test_random_access_with_keyframes(tmp_path):
    path = cfr(tmp_path / "g.mp4", 60, options={"g": "10"})
    order = [37, 5, 59, 58, 0, 21, 22, 11, 10, 9, 40, 3, 33]
    with VideoSource(path) as src:
        assert src._keys == [0, 10, 20, 30, 40, 50]
        assert [number(src.image_at(i)) for i in order] == order
        assert [number(src.frame(i, (H, W)).add(1).mul(127.5).round().byte().permute(1, 2, 0)) for i in order] == order


def test_the_pipelines_access_pattern_decodes_each_frame_about_once(tmp_path):
    """Window starts (72 k) then, with keep-the-rest, each window's output frames (up to 81 back): one pass."""
    path = cfr(tmp_path / "long.mp4", 300, options={"preset": "ultrafast", "g": "50"})
    size = (H, W)
    with VideoSource(path) as src:
        decoded_before = src.decoded
        for start in range(0, 300, 72):
            assert number(src.image_at(start)) == start
            src.frame(start, size)
            for i in range(max(0, start - 9), min(start + 72, 300)):
                assert torch.equal(src.frame(i, size), src.frame(i, size))
            assert src.cached <= source_module.CACHE_FRAMES
        assert src.decoded - decoded_before <= 300 + 10


def test_memory_stays_bounded_and_pingpong_runs_backwards_cheaply(tmp_path):
    """A long video read end to end and back (pingpong): the cache never exceeds CACHE_FRAMES, and backward runs
    decode chunks (no seek and re-decode per frame)."""
    n = 400
    path = cfr(tmp_path / "long.mkv", n, options={"preset": "ultrafast", "g": "50"})
    size = (24, 32)
    with VideoSource(path, source_end="pingpong") as src:
        peak = 0
        for i in range(2 * n - 1):  # 0 .. n-1, then back to 0
            out = src.frame(i, size)
            assert out.shape == (3, 24, 32)
            peak = max(peak, src.cached)
        assert peak == source_module.CACHE_FRAMES
        assert src.decoded < 4 * n  # one seek per chunk of ~84 frames going back, not one per frame
        assert src.seeks < 2 * n // source_module.CHUNK_FRAMES + 4
        back = [src.source_ordinal(i) for i in range(n, 2 * n - 1)]
        assert back == list(range(n - 2, -1, -1))
        assert number(src.image_at(n + 50)) == n - 52


def test_browser_like_webm_without_duration_or_cues(tmp_path):
    """What MediaRecorder uploads: WebM/VP9 written live (no duration in the header, no cues), millisecond
    timestamps at ~30 fps. Timing and random access (seeks without an index) still hold."""
    times = [int(k * 33.4) for k in range(60)]
    path = tmp_path / "live.webm"
    with av.open(str(path), "w", options={"live": "1"}) as c:
        v = c.add_stream("libvpx-vp9", rate=1000, options={"g": "20", "deadline": "realtime", "cpu-used": "8"})
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.time_base = Fraction(1, 1000)
        for k, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(numbered(k), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in v.encode(frame):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
    with av.open(str(path)) as c:
        assert c.streams.video[0].duration is None
    with VideoSource(path.read_bytes()) as src:
        assert src.source_frames == 60 and src.frames == 51  # shown until 1970 + 33 ms (the median interval)
        order = [45, 10, 30, 3, 45, 20, 0, 40, 39, 38]
        expected = [max(k for k, t in enumerate(times) if t <= i * 40 + 1) for i in order]
        assert [number(src.image_at(i)) for i in order] == expected
