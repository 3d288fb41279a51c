"""Segments delivered while a job runs (worker/delivery.py): to S3 (a real S3-compatible server on loopback), to the
volume and inline; the HLS playlist; an upload failing mid-stream (the job goes on, the item says why); resumed
segments announced again without a second upload; nothing secret in the log."""

from __future__ import annotations

import base64
import fractions
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import requests

from multitalk_serve.worker import delivery
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.delivery import KEPT, SegmentPublisher, SegmentsSummary, playlist_text
from multitalk_serve.worker.errors import WorkerError
from multitalk_serve.worker.schema import OutputOptions

FPS, RATE, FRAMES = 25, 16000, 10  # 3 segments of 10 frames: 0.4 s each


@dataclass
class Segment:
    """The engine's Segment as the contract describes it (engine/pipeline/segments.py)."""

    index: int
    total: int
    path: Path
    start_frame: int
    frames: int
    seconds: float = 0.1
    resumed: bool = False

    @property
    def start_s(self) -> float:
        return self.start_frame / FPS

    @property
    def duration_s(self) -> float:
        return self.frames / FPS


def write_segment(path: Path, start_frame: int, frames: int) -> None:
    """A standalone MPEG-TS file (64x64 H.264 + AAC) whose timestamps continue the previous segment's."""
    with av.open(str(path), "w", format="mpegts", container_options={"avoid_negative_ts": "disabled"}) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = out.add_stream("aac", rate=RATE)
        audio.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), (start_frame + i) * 8 % 256, np.uint8), "rgb24")
            frame.pts = start_frame + i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        first, count = start_frame * RATE // FPS, frames * RATE // FPS
        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(first, first + count) / RATE)).astype(np.float32)[None]
        for offset in range(0, count, 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, offset : offset + 1024]), "flt", "mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = RATE, first + offset, fractions.Fraction(1, RATE)
            out.mux(audio.encode(chunk))
        out.mux(audio.encode())


@pytest.fixture(scope="module")
def segment_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("job")
    paths = []
    for index in range(3):
        path = folder / f"seg_{index:05d}.ts"
        write_segment(path, index * FRAMES, FRAMES)
        paths.append(path)
    return paths


def segments(paths: list[Path], resumed: int = 0) -> list[Segment]:
    return [Segment(i, len(paths), p, i * FRAMES, FRAMES, resumed=i < resumed) for i, p in enumerate(paths)]


def config(tmp_path: Path, s3=None, volume=True, **kw) -> WorkerConfig:
    vol = tmp_path / "volume"
    if volume:
        vol.mkdir(exist_ok=True)
    defaults = {"model_path": tmp_path, "volume_path": vol, "s3": s3, "upload_retries": 2, "output_prefix": "mt"}
    defaults["speed_lora_scale"] = 1.0  # (its default imports the engine: torch, seconds)
    return WorkerConfig(**{**defaults, **kw})


class Failing:
    """An S3 client whose put_object fails for keys holding ``failing`` (every key when None), counting calls."""

    def __init__(self, client, failing: str | None = "seg_00001"):
        self.client, self.failing, self.puts = client, failing, []

    def put_object(self, **kw):
        self.puts.append(kw["Key"].rsplit("/", 1)[-1])
        if self.failing is None or self.failing in kw["Key"]:
            raise ConnectionError("connection reset by peer")
        return self.client.put_object(**kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def spy(publisher: SegmentPublisher, failing: str | None = "-none-") -> Failing:
    publisher._client = Failing(publisher.client, failing)
    return publisher._client


def test_volume_segments_and_a_playlist_that_plays_as_one_video(tmp_path, segment_files):
    cfg = config(tmp_path)
    publisher = SegmentPublisher(cfg, None, "job/1", OutputOptions(prefix="team"))
    events = [publisher.publish(s) for s in segments(segment_files)]
    folder = cfg.volume_path / "outputs" / "mt" / "team" / "job-1" / "segments"
    for i, event in enumerate(events):
        assert {k: event[k] for k in ("type", "index", "total", "start_s", "duration_s", "frames", "format")} == {
            "type": "segment",
            "index": i,
            "total": 3,
            "start_s": i * 0.4,
            "duration_s": 0.4,
            "frames": FRAMES,
            "format": "mpegts",
        }
        assert event["path"] == str(folder / f"seg_{i:05d}.ts") and "url" not in event and "base64" not in event
        assert Path(event["path"]).read_bytes() == segment_files[i].read_bytes()
        assert event["playlist_path"] == str(folder / "index.m3u8") and "note" not in event and event["publish_s"] >= 0
    live = (folder / "index.m3u8").read_text()
    assert live == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXTINF:0.400,\nseg_00000.ts\n#EXTINF:0.400,\nseg_00001.ts\n#EXTINF:0.400,\nseg_00002.ts\n"
    )
    summary = publisher.finish()
    assert (folder / "index.m3u8").read_text() == live + "#EXT-X-ENDLIST\n"
    assert summary == {
        "published": 3,
        "resumed": 0,
        "failed": 0,
        "too_large": 0,
        "playlist_failed": 0,
        "bytes": sum(p.stat().st_size for p in segment_files),
        "seconds": summary["seconds"],
        "storage": "volume",
        "playlist_path": str(folder / "index.m3u8"),
    }
    assert publisher.warnings() == [] and not list(folder.glob("*.part"))
    from multitalk_serve.worker.response import JobOutput  # (imports the engine: torch)

    assert JobOutput.model_fields["segments"].annotation == SegmentsSummary | None  # the result's "segments"
    assert SegmentsSummary.model_validate(summary).model_dump(exclude_none=True) == summary
    with av.open(str(folder / "index.m3u8")) as played:  # FFmpeg's HLS reader: the three files as one video
        pts = [frame.pts for frame in played.decode(video=0)]
    assert len(pts) == 3 * FRAMES and pts == sorted(pts) and len(set(np.diff(pts))) == 1


def test_s3_presigned_segments_and_a_playlist_of_presigned_urls(tmp_path, segment_files, bucket, caplog):
    caplog.set_level(logging.DEBUG, logger="multitalk_serve")
    publisher = SegmentPublisher(config(tmp_path, s3=bucket), None, "job-2", OutputOptions(prefix="a/b"))
    events = [publisher.publish(s) for s in segments(segment_files)]
    for i, event in enumerate(events):
        got = requests.get(event["url"], timeout=10)
        assert got.status_code == 200 and got.content == segment_files[i].read_bytes()
        assert got.headers["Content-Type"] == "video/mp2t" and "path" not in event and "note" not in event
        assert "/mt/a/b/job-2/segments/" in event["url"].split("?")[0]
    assert len({e["playlist_url"] for e in events}) == 1
    listed = requests.get(events[-1]["playlist_url"], timeout=10)
    assert listed.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert listed.text == playlist_text({i: delivery._Entry(0.4, e["url"]) for i, e in enumerate(events)}, False)
    assert "#EXT-X-ENDLIST" not in listed.text and "#EXT-X-PLAYLIST-TYPE:EVENT" in listed.text
    summary = publisher.finish()
    assert requests.get(summary["playlist_url"], timeout=10).text.endswith("#EXT-X-ENDLIST\n")
    with av.open(summary["playlist_url"], format="hls") as played:  # a player needs nothing but the playlist URL
        assert len(list(played.decode(video=0))) == 3 * FRAMES
    assert (summary["published"], summary["failed"], summary["storage"]) == (3, 0, "s3")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("multitalk_serve"))
    assert "job-2: segment 2 of 3 delivered (s3" in logged
    assert "Signature" not in logged and "X-Amz" not in logged and "http" not in logged


def test_an_upload_failing_mid_stream_is_noted_and_the_stream_goes_on(tmp_path, segment_files, bucket, caplog):
    publisher = SegmentPublisher(config(tmp_path, s3=bucket), None, "job-3", OutputOptions(), backoff_s=0.01)
    client = spy(publisher, failing="seg_00001")
    events = [publisher.publish(s) for s in segments(segment_files)]
    assert "url" in events[0] and "url" in events[2]
    failed = events[1]
    assert not {"url", "path", "base64"} & failed.keys()
    assert failed["note"] == (
        f"segment 1 not delivered: upload to s3://{bucket.bucket}/mt/job-3/segments/seg_00001.ts failed after 2 tries "
        f"(ConnectionError); {KEPT}"
    )
    assert failed["playlist_url"] == events[0]["playlist_url"]  # the playlist of what was delivered so far
    assert client.puts.count("seg_00001.ts") == 2  # 2 tries, then the stream goes on
    listed = requests.get(events[2]["playlist_url"], timeout=10).text
    assert events[0]["url"] in listed and events[2]["url"] in listed and "seg_00001" not in listed
    assert "#EXT-X-DISCONTINUITY\n#EXTINF:0.400,\n" + events[2]["url"] in listed
    summary = publisher.finish()
    assert (summary["published"], summary["failed"], summary["playlist_failed"]) == (2, 1, 0)
    assert publisher.warnings() == [
        f"streaming: 1 of 3 segments were not delivered while the job ran (upload to s3://{bucket.bucket}/mt/job-3/"
        "segments/seg_00001.ts failed after 2 tries (ConnectionError)); the final video has every segment"
    ]
    assert set(publisher.published_events()) == {0, 2}
    assert "job-3: segment 1 not delivered" in caplog.text


def test_a_bucket_that_is_down_is_not_tried_for_every_segment(tmp_path, segment_files, bucket, monkeypatch):
    monkeypatch.setattr(delivery, "MAX_FAILURES_IN_A_ROW", 2)
    publisher = SegmentPublisher(config(tmp_path, s3=bucket), None, "job-4", OutputOptions(), backoff_s=0.01)
    client = spy(publisher, failing=None)
    events = [publisher.publish(s) for s in segments(segment_files)]
    assert client.puts == ["seg_00000.ts"] * 2 + ["seg_00001.ts"] * 2  # the third is not tried
    assert events[2]["note"] == f"segment 2 not delivered: the last 2 deliveries failed; {KEPT}"
    assert all("url" not in e and "playlist_url" not in e for e in events)
    summary = publisher.finish()
    assert (summary["published"], summary["failed"]) == (0, 3) and "playlist_url" not in summary
    assert publisher.warnings()[0].startswith("streaming: 3 of 3 segments were not delivered")
    monkeypatch.setattr(delivery, "PAUSE_AFTER_FAILURES_S", 0.0)  # the pause is over: one try, and it succeeds
    client.failing = "-none-"
    assert "url" in publisher.publish(segments(segment_files)[2]) and client.puts[-2:] == ["seg_00002.ts", "index.m3u8"]


def test_publish_never_raises(tmp_path, segment_files):
    publisher = SegmentPublisher(config(tmp_path), None, "job-11", OutputOptions())
    gone = Segment(0, 3, tmp_path / "missing.ts", 0, FRAMES)
    event = publisher.publish(gone)
    assert event["note"] == f"segment 0 not delivered: FileNotFoundError; {KEPT}" and "path" not in event
    assert publisher.summary()["failed"] == 1 and "FileNotFoundError" in publisher.warnings()[0]
    assert "path" in publisher.publish(segments(segment_files)[1])  # the next one is delivered


def test_one_publish_is_bounded_in_time(tmp_path, segment_files, bucket):
    cfg = config(tmp_path, s3=bucket)
    publisher = SegmentPublisher(cfg, None, "job-5", OutputOptions(), tries=5, deadline_s=0.5, backoff_s=0.1)
    client = spy(publisher, failing=None)
    event = publisher.publish(segments(segment_files)[0])
    # waits of 0.2 and 0.4 s: the second would end past the 0.5 s deadline, so no third try starts
    assert client.puts == ["seg_00000.ts"] * 2 and "failed after 2 tries" in event["note"]
    assert 0.2 <= event["publish_s"] < 0.5 and publisher.summary()["seconds"] == event["publish_s"]


def test_resumed_segments_are_announced_again_without_a_second_upload(tmp_path, segment_files, bucket):
    cfg = config(tmp_path, s3=bucket)
    first = SegmentPublisher(cfg, None, "job-6", OutputOptions(), backoff_s=0.01)
    spy(first, failing="seg_00001")  # the upload of window 2 fails, then the worker dies
    before = [first.publish(s) for s in segments(segment_files[:2])]
    assert "url" in before[0] and "note" in before[1]
    kept = json.loads(json.dumps(first.published_events()))  # as the job's state keeps it
    assert set(kept) == {"0"} and "url" not in kept["0"] and kept["0"]["key"] == "mt/job-6/segments/seg_00000.ts"

    again = SegmentPublisher(cfg, None, "job-6", OutputOptions(), already=kept)
    client = spy(again)
    events = [again.publish(s) for s in segments(segment_files, resumed=2)]
    # window 1 (delivered before) is announced again; window 2 (its upload failed) and window 3 are uploaded now
    assert client.puts == ["seg_00001.ts", "index.m3u8", "seg_00002.ts", "index.m3u8"]
    assert events[0]["resumed"] is True and events[0]["url"].split("?")[0] == before[0]["url"].split("?")[0]
    assert events[0]["playlist_url"] == events[2]["playlist_url"]  # the earlier run's playlist, rewritten since
    assert "resumed" not in events[1] and "resumed" not in events[2]
    for i, event in enumerate(events):
        assert requests.get(event["url"], timeout=10).content == segment_files[i].read_bytes()
    summary = again.finish()
    listed = requests.get(summary["playlist_url"], timeout=10).text
    assert all(e["url"] in listed for e in events) and "DISCONTINUITY" not in listed
    assert listed.endswith("#EXT-X-ENDLIST\n") and again.warnings() == []
    assert (summary["published"], summary["resumed"], summary["failed"]) == (3, 1, 0)
    assert set(again.published_events()) == {0, 1, 2}


def test_resumed_segments_on_the_volume_are_not_copied_again(tmp_path, segment_files, monkeypatch):
    cfg = config(tmp_path)
    first = SegmentPublisher(cfg, None, "job-7", OutputOptions())
    first.publish(segments(segment_files)[0])
    copies = []
    monkeypatch.setattr(delivery.shutil, "copyfile", lambda a, b: copies.append(Path(a).name) or Path(b).touch())
    again = SegmentPublisher(cfg, None, "job-7", OutputOptions(), already=first.published_events())
    events = [again.publish(s) for s in segments(segment_files[:2], resumed=1)]
    assert copies == ["seg_00001.ts"] and events[0]["resumed"] and events[0]["path"].endswith("seg_00000.ts")
    # a segment the earlier run did not deliver (or one not resumed) is delivered now
    third = SegmentPublisher(cfg, None, "job-7", OutputOptions(), already={})
    third.publish(segments(segment_files[:1], resumed=1)[0])
    assert copies == ["seg_00001.ts", "seg_00000.ts"]


def test_a_volume_that_is_full_is_noted(tmp_path, segment_files, monkeypatch):
    publisher = SegmentPublisher(config(tmp_path), None, "job-8", OutputOptions(format="volume"))

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(delivery.shutil, "copyfile", full)
    event = publisher.publish(segments(segment_files)[0])
    assert "path" not in event and "No space left on device" in event["note"] and event["note"].endswith(KEPT)
    assert publisher.summary()["failed"] == 1


def test_inline_segments_and_the_size_of_one_streamed_item(tmp_path, segment_files):
    cfg = config(tmp_path, volume=False)
    publisher = SegmentPublisher(cfg, None, "job-9", OutputOptions())
    event = publisher.publish(segments(segment_files)[0])
    assert base64.b64decode(event["base64"]) == segment_files[0].read_bytes()
    assert not {"url", "path", "playlist_url", "playlist_path", "note"} & event.keys()
    assert len(json.dumps(event)) < 1_000_000 and delivery.SEGMENT_INLINE_MAX_BYTES * 4 / 3 < 990_000

    small = SegmentPublisher(cfg, None, "job-9", OutputOptions(format="base64"), inline_max_bytes=1000)
    event = small.publish(segments(segment_files)[1])
    assert "base64" not in event and event["note"] == (
        f"segment 1 is {segment_files[1].stat().st_size / 1e3:.0f} KB, over the 1 KB a streamed item carries inline "
        f"(configure s3Config / BUCKET_* or a network volume); {KEPT}"
    )
    assert small.finish()["too_large"] == 1 and len(small.warnings()) == 1
    assert small.published_events() == {} and publisher.published_events() == {}  # no inline data in the state


def test_an_impossible_output_format_is_refused_before_any_work(tmp_path):
    with pytest.raises(WorkerError, match=r"output\.format is s3 but no bucket"):
        SegmentPublisher(config(tmp_path), None, "job-10", OutputOptions(format="s3"))
    with pytest.raises(WorkerError, match=r"output\.format is volume but no network volume"):
        SegmentPublisher(config(tmp_path / "bare", volume=False), None, "job-10", OutputOptions(format="volume"))


def test_playlist_target_duration_covers_every_segment():
    text = playlist_text({0: delivery._Entry(3.24, "a.ts"), 1: delivery._Entry(2.88, "b.ts")}, ended=True)
    assert "#EXT-X-TARGETDURATION:4\n" in text and text.endswith("#EXTINF:2.880,\nb.ts\n#EXT-X-ENDLIST\n")
