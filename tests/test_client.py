"""examples/client.py against a RunPod-like REST API (polling with progress, failures) and against the worker's
real local API server on the tiny model."""

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

import pipeline_stubs as stubs
from media import write_audio
from multitalk_serve.engine.pipeline.video import probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from client import JobFailed, MultiTalkClient, main, media


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
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
