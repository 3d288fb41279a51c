"""examples/client.py against a RunPod-like REST API (polling with progress, failures, streamed segments) and against
the worker's real local API server on the tiny model."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import wave
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import pipeline_stubs as stubs
from fake_runpod import FakeRunPod
from media import write_audio
from multitalk_serve.engine.pipeline.video import probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from client import JobFailed, MultiTalkClient, SegmentSaver, _StreamPrinter, main, media


@pytest.fixture
def runpod_api():
    """/v2/ep/run, GET /status/{id} (IN_QUEUE, IN_PROGRESS with progress, then the final state)."""
    state = {
        "polls": 0,
        "final": {
            "status": "COMPLETED",
            "output": {"video_base64": base64.b64encode(b"mp4").decode(), "video": {}, "seed": 1},
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _json(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            state["request"] = json.loads(self.rfile.read(length) or b"null")
            state["auth"] = self.headers.get("Authorization")
            self._json({"id": "job-1", "status": "IN_QUEUE"})

        def do_GET(self):
            state["polls"] += 1
            if state["polls"] == 1:
                return self._json({"id": "job-1", "status": "IN_QUEUE"})
            if state["polls"] < 4:
                return self._json(
                    {
                        "id": "job-1",
                        "status": "IN_PROGRESS",
                        "output": {
                            "stage": "sampling",
                            "pct": 25.0 * state["polls"],
                            "step": state["polls"],
                            "total_steps": 4,
                            "clip": 1,
                            "total_clips": 1,
                        },
                    }
                )
            return self._json({"id": "job-1", **state["final"]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    yield base, state
    server.shutdown()


def test_client_polls_and_reports_progress(runpod_api, tmp_path):
    base, state = runpod_api
    client = MultiTalkClient(base, api_key="secret")
    client.local = False  # speak the production API (GET /status)
    seen = []
    job_id = client.submit({"image": "x", "audio": ["y"]}, s3_config={"bucketName": "b"}, execution_timeout_s=900)
    output = client.wait(job_id, on_progress=seen.append, poll_s=0.01)
    assert state["auth"] == "Bearer secret"
    assert (
        state["request"]["s3Config"] == {"bucketName": "b"} and state["request"]["policy"]["executionTimeout"] == 900000
    )
    assert state["request"]["input"]["execution_timeout_s"] == 900  # the worker sees it even without policy
    assert [p["pct"] for p in seen] == [50.0, 75.0]
    assert client.save_video(output, tmp_path / "v.mp4").read_bytes() == b"mp4"


def test_client_raises_coded_failures(runpod_api):
    base, state = runpod_api
    state["final"] = {"status": "FAILED", "error": "E_AUDIO: audio of speaker 1: the audio is empty"}
    client = MultiTalkClient(base)
    client.local = False
    with pytest.raises(JobFailed) as exc:
        client.wait(client.submit({}), poll_s=0.01)
    assert exc.value.code == "E_AUDIO" and exc.value.status == "FAILED"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_against_the_local_worker_api(tiny_root, tmp_path):
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(tiny_root), "VOLUME_PATH": str(tmp_path / "none"), "MULTITALK_DTYPE": "fp32"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "multitalk_serve.worker", "--rp_serve_api", "--rp_api_port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        image = tmp_path / "face.png"
        Image.fromarray(stubs.scenario_image()).save(image)
        audio = write_audio(tmp_path / "voice.wav", 1.0)
        code = main(
            [
                "--endpoint",
                f"http://127.0.0.1:{port}",
                "--image",
                str(image),
                "--audio",
                str(audio),
                "--width",
                "96",
                "--height",
                "64",
                "--steps",
                "2",
                "--seed",
                "9",
                "--out",
                str(tmp_path / "o.mp4"),
            ]
        )
        assert code == 0
        info = probe(tmp_path / "o.mp4")
        assert (info.frames, info.width, info.height, info.audio_codec) == (25, 96, 64, "aac")
        assert media(image).startswith("data:image/png;base64,")
        # text instead of audio: the worker loaded the tiny Kokoro at start; the speech is saved beside the video
        voice = tmp_path / "my voice.pt"
        voice.write_bytes((tiny_root / "Kokoro-82M/voices/am_adam.pt").read_bytes())  # a local voice file, inline
        common = ["--endpoint", f"http://127.0.0.1:{port}", "--image", str(image), "--width", "96", "--height", "64"]
        code = main(
            [*common, "--steps", "2", "--text", "Hello there.", "--voice", str(voice), "--out", str(tmp_path / "t.mp4")]
        )
        assert code == 0
        info = probe(tmp_path / "t.mp4")
        with wave.open(str(tmp_path / "t.wav")) as speech:
            seconds = speech.getnframes() / speech.getframerate()
        assert speech.getframerate() == 24000 and info.frames == int(seconds * 25) > 0
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


# --- streaming: /stream, segments, playlists ---------------------------------------------------------------------
FRAMES, RATE = 8, 16000  # a segment: 8 frames at 25 fps = 0.32 s = 5120 samples = 5 AAC frames


def make_segments(folder: Path, count: int = 3) -> list[bytes]:
    """``count`` standalone MPEG-TS files (H.264 + AAC, 64x64) whose timestamps continue from file to file, like the
    worker's segments (starting at 1 s: AAC's priming would otherwise shift the first file's timestamps)."""
    segments = []
    for k in range(count):
        path = folder / f"made_{k}.ts"
        with av.open(str(path), "w", format="mpegts") as out:
            video = out.add_stream("libx264", rate=25)
            video.width = video.height = 64
            video.pix_fmt = "yuv420p"
            video.options = {"preset": "ultrafast"}
            audio = out.add_stream("aac", rate=RATE)
            audio.layout = "mono"
            for i in range(FRAMES):
                n = 25 + k * FRAMES + i
                frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), n * 8 % 256, np.uint8), format="rgb24")
                frame.pts, frame.time_base = n, Fraction(1, 25)
                out.mux(video.encode(frame))
            for j in range(0, FRAMES * RATE // 25, 1024):
                start = RATE + k * FRAMES * RATE // 25 + j
                wave = 0.2 * np.sin(np.arange(start, start + 1024) * 2 * np.pi * 220 / RATE)
                frame = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
                out.mux(audio.encode(frame))
            out.mux(video.encode())
            out.mux(audio.encode())
        segments.append(path.read_bytes())
    return segments


def segment_item(index: int, total: int = 3, **where) -> dict:
    return {"type": "segment", "index": index, "total": total, "start_s": index * 0.32, "duration_s": 0.32,
            "frames": FRAMES, "format": "mpegts", **where}  # fmt: skip


RESULT = {"type": "result", "video_base64": base64.b64encode(b"mp4").decode(), "seed": 5,
          "video": {"duration_s": 0.96, "frames": 24, "width": 64, "height": 64, "bytes": 3}}  # fmt: skip


@pytest.fixture
def web():
    """A small HTTP server: files at ``/files/...`` (``state["files"]``, 404 if absent), and the local API server's
    shape (``--rp_serve_api``): ``POST /run`` -> an id, ``POST /stream/{id}`` -> every item at once."""
    state: dict = {"files": {}, "headers": [], "stream": [], "status": "COMPLETED"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code, data: bytes, kind="application/json"):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            state["headers"].append(dict(self.headers))
            data = state["files"].get(self.path)
            self._send(200, data, "video/mp2t") if data is not None else self._send(404, b"no such key")

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
            if self.path == "/run":
                state["request"] = body
                return self._send(200, json.dumps({"id": "test-1", "status": "IN_PROGRESS"}).encode())
            if self.path == "/stream/test-1":
                chunks = [{"output": item} for item in state["stream"]]
                return self._send(
                    200, json.dumps({"id": "test-1", "status": state["status"], "stream": chunks}).encode()
                )
            return self._send(404, b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", state
    server.shutdown()


PLAYLIST_HEAD = (
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
)


def test_stream_saves_segments_and_the_playlist_as_they_come(web, tmp_path, capsys):
    """RunPod's GET /stream: an empty poll, a segment by URL, one out of order (base64), a repeat and a resumed
    re-announcement, one by path, then the result; the playlist grows in order and plays as one video."""
    files, state = web
    ts = make_segments(tmp_path)
    state["files"]["/files/seg0.ts?X-Amz-Signature=abc"] = ts[0]
    (tmp_path / "volume.ts").write_bytes(ts[1])
    fake = FakeRunPod()
    try:
        client = MultiTalkClient(fake.base, api_key="secret")
        client.local = False  # RunPod's API: GET /stream
        job_id = client.submit({"image": "x", "audio": ["y"], "job_key": "k"})
        folder = tmp_path / "live"
        playlists = {}
        progress = {"type": "progress", "stage": "sampling", "pct": 40.0, "clip": 1, "total_clips": 3, "step": 2,
                    "total_steps": 2, "eta_s": 3.0}  # fmt: skip
        batches = {
            2: [progress, segment_item(0, url=f"{files}/files/seg0.ts?X-Amz-Signature=abc")],
            3: [segment_item(2, base64=base64.b64encode(ts[2]).decode()), {**progress, "pct": 80.0}],
            4: [
                segment_item(0, url=f"{files}/files/seg0.ts?X-Amz-Signature=abc"),
                segment_item(0, url=f"{files}/files/seg0.ts?X-Amz-Signature=abc", resumed=True),
                segment_item(1, path=str(tmp_path / "volume.ts")),
            ],
            5: [RESULT],
        }

        def on_poll(job, poll):  # the worker's posts between the client's polls
            playlists[poll] = (folder / "index.m3u8").read_text() if (folder / "index.m3u8").exists() else None
            for item in batches.get(poll, []):
                fake.record("stream", job, "", {"output": item})
            if poll == 5:
                fake.record("done", job, "isStream=true", {"output": [i for b in batches.values() for i in b]})

        fake.on_stream_poll = on_poll
        seen = []
        printer = _StreamPrinter(str(folder), client.downloads)
        result = client.stream(job_id, on_item=lambda item: (seen.append(item), printer(item)), poll_s=0.01)
    finally:
        fake.close()
    assert result == {k: v for k, v in RESULT.items() if k != "type"}
    assert fake.stream_polls[job_id] == 5
    assert [i["type"] for i in seen] == ["progress", "segment", "segment", "progress", "segment", "segment", "result"]
    assert [(folder / f"seg_0000{k}.ts").read_bytes() for k in range(3)] == ts
    assert all("Authorization" not in h for h in state["headers"])  # the API key never goes to the bucket
    assert playlists[1] is None and playlists[2] is None  # nothing before the first segment
    one = "#EXTINF:0.320,\nseg_00000.ts\n"
    assert playlists[3] == playlists[4] == PLAYLIST_HEAD + one  # segment 3 waits for segment 2
    final = (folder / "index.m3u8").read_text()
    assert final == PLAYLIST_HEAD + one + "#EXTINF:0.320,\nseg_00001.ts\n#EXTINF:0.320,\nseg_00002.ts\n#EXT-X-ENDLIST\n"
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"segment 1/3: 0.00-0.32 s, {folder / 'seg_00000.ts'}",
        f"playback can start: ffplay {folder / 'index.m3u8'}",
        f"segment 3/3: 0.64-0.96 s, {folder / 'seg_00002.ts'}",
        f"segment 1/3: 0.00-0.32 s, {folder / 'seg_00000.ts'} (made by an earlier run)",
        f"segment 2/3: 0.32-0.64 s, {folder / 'seg_00001.ts'}",
    ]
    with av.open(str(folder / "index.m3u8")) as hls:  # what a player sees: one video, timestamps continuous
        pts = [frame.pts for frame in hls.decode(video=0)]
    assert len(pts) == 3 * FRAMES and np.all(np.diff(pts) == pts[1] - pts[0])


def test_cli_streams_from_the_local_api_and_skips_a_missing_segment(web, tmp_path, capsys):
    """The local API server's POST /stream (every item in one answer); a segment URL answering 404 is reported and
    left out, the playlist marks the gap, and the job completes with the final video."""
    base, state = web
    ts = make_segments(tmp_path)
    state["files"] = {"/files/0.ts": ts[0], "/files/2.ts": ts[2]}
    state["stream"] = [segment_item(k, url=f"{base}/files/{k}.ts") for k in range(3)] + [RESULT]
    image, audio = tmp_path / "face.png", tmp_path / "voice.wav"
    image.write_bytes(b"png")
    audio.write_bytes(b"wav")
    folder, out = tmp_path / "segs", tmp_path / "o.mp4"
    code = main(["--endpoint", base, "--image", str(image), "--audio", str(audio), "--out", str(out),
                 "--segments", str(folder), "--job-key", "talk-42"])  # fmt: skip
    assert code == 0
    assert state["request"]["input"]["job_key"] == "talk-42"
    assert out.read_bytes() == b"mp4"
    captured = capsys.readouterr()
    assert captured.out.splitlines()[:4] == [
        f"segment 1/3: 0.00-0.32 s, {folder / 'seg_00000.ts'}",
        f"playback can start: ffplay {folder / 'index.m3u8'}",
        f"segment 2/3: 0.32-0.64 s, {base}/files/1.ts",
        f"segment 3/3: 0.64-0.96 s, {folder / 'seg_00002.ts'}",
    ]
    assert captured.out.splitlines()[4].startswith(f"saved {out}: 0.96 s, 24 frames, 64x64")
    assert "segment 2/3 not saved (404 Client Error" in captured.err and "the final video has it" in captured.err
    assert not (folder / "seg_00001.ts").exists()
    assert (folder / "index.m3u8").read_text() == (
        PLAYLIST_HEAD + "#EXTINF:0.320,\nseg_00000.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:0.320,\nseg_00002.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_a_streamed_output_list_through_status_and_stream_failures(tmp_path):
    """A streaming worker's final output is the list of its items (return_aggregate_stream): /status, save_video and
    a drained /stream read the result from it; an error item or a failed job raises JobFailed."""
    fake = FakeRunPod()
    try:
        client = MultiTalkClient(fake.base, api_key="k")
        client.local = False
        items = [{"type": "progress", "stage": "sampling", "pct": 50.0}, segment_item(0, base64="AA=="), RESULT]
        job_id = client.submit({})
        fake.record("done", job_id, "isStream=true", {"output": items})
        output = client.wait(job_id, poll_s=0.01)
        assert output["seed"] == 5 and "type" not in output
        assert client.save_video(items, tmp_path / "v.mp4").read_bytes() == b"mp4"
        assert client.stream(job_id, poll_s=0.01)["seed"] == 5  # nothing left on /stream: /status has the result

        job_id = client.submit({})  # the SDK: a generator that returns without yielding -> COMPLETED, output []
        fake.record("done", job_id, "isStream=true", {"output": []})
        with pytest.raises(JobFailed, match="E_NO_RESULT"):
            client.wait(job_id, poll_s=0.01)

        job_id = client.submit({})
        fake.record("stream", job_id, "", {"output": {"type": "progress", "stage": "loading", "pct": 1.0}})
        fake.record("done", job_id, "", {"error": "E_TIMEOUT: 190 windows need about 2 h, the timeout is 1 h"})
        seen = []
        with pytest.raises(JobFailed) as exc:
            client.stream(job_id, on_item=seen.append, poll_s=0.01)
        assert exc.value.code == "E_TIMEOUT" and exc.value.status == "FAILED" and len(seen) == 1
    finally:
        fake.close()
    with pytest.raises(JobFailed, match="E_AUDIO"):  # the local server reports an error item as COMPLETED
        client.save_video([{"type": "progress"}, {"error": "E_AUDIO: empty"}], tmp_path / "x.mp4")


def test_segment_saver_waits_for_gaps_and_ends_the_playlist(tmp_path):
    """Out of order: listed only once every earlier one is here (or known missing); at the result, the rest."""
    logged = []
    saver = SegmentSaver(tmp_path / "s", log=logged.append)
    data = base64.b64encode(b"ts").decode()
    saver(segment_item(1, total=4, base64=data))
    assert not (tmp_path / "s" / "index.m3u8").exists()
    saver(segment_item(3, total=4, base64=data))
    saver(segment_item(0, total=4, base64=data))
    assert saver.listed == [0, 1]
    saver(segment_item(2, total=4, path=str(tmp_path / "elsewhere.ts")))  # on the worker's volume only
    assert saver.listed == [0, 1, 3] and "segment 3/4 not saved" in logged[0]
    saver({"type": "segment", "index": 4, "note": "upload failed"})  # malformed: reported, not fatal
    saver(RESULT)
    assert (
        (tmp_path / "s" / "index.m3u8")
        .read_text()
        .endswith("seg_00001.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:0.320,\nseg_00003.ts\n#EXT-X-ENDLIST\n")
    )
