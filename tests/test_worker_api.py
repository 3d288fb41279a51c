"""The worker through the real RunPod SDK: the in-process local API (/runsync, /run + /status), one local job
(--test_input), and the production job loop against a fake RunPod server (progress, results, errors, cancel)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from runpod.serverless.modules.rp_fastapi import WorkerAPI

import pipeline_stubs as stubs
from fake_runpod import FakeRunPod, start_worker
from media import write_audio
from multitalk_serve.engine.pipeline.video import probe
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.handler import Worker

FAST = {"width": 96, "height": 64, "sampling_steps": 2, "seed": 3}


def png_b64() -> str:
    buf = io.BytesIO()
    Image.fromarray(stubs.scenario_image()).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def wav_b64(tmp_path: Path, seconds: float = 1.0, name: str = "a.wav") -> str:
    return base64.b64encode(write_audio(tmp_path / name, seconds).read_bytes()).decode()


@pytest.fixture(scope="module")
def worker(tiny_pipeline, tiny_root, tmp_path_factory):
    volume = tmp_path_factory.mktemp("volume")
    config = WorkerConfig(model_path=tiny_root, volume_path=volume / "missing", s3=None, progress_interval_s=0.0)
    return Worker(tiny_pipeline, config, load_seconds=1.5)


@pytest.fixture(scope="module")
def client(worker):
    return TestClient(WorkerAPI({"handler": worker.handle}).rp_app)


def decode_video(output: dict, tmp_path: Path) -> Path:
    path = tmp_path / "out.mp4"
    path.write_bytes(base64.b64decode(output["video_base64"]))
    return path


def test_runsync_generates_a_video(client, tmp_path):
    body = {
        "input": {
            "image": png_b64(),
            "audio": [wav_b64(tmp_path)],
            "prompt": "a person talks",
            "output": {"thumbnail": True},
            **FAST,
        }
    }
    reply = client.post("/runsync", json=body).json()
    assert reply["status"] == "COMPLETED", reply
    out = reply["output"]
    info = probe(decode_video(out, tmp_path))
    assert (info.frames, info.width, info.height, info.audio_codec) == (25, 96, 64, "aac")
    assert out["video"] == {
        "storage": "inline",
        "url": None,
        "path": None,
        "content_type": "video/mp4",
        "file_name": out["video"]["file_name"],
        "bytes": len(base64.b64decode(out["video_base64"])),
        "duration_s": 1.0,
        "frames": 25,
        "fps": 25,
        "width": 96,
        "height": 64,
        "has_audio": True,
    }
    assert out["seed"] == 3 and out["params"]["sampling_steps"] == 2 and out["params"]["speakers"] == 1
    assert out["worker"]["gpu"] == "cpu" and out["worker"]["model_load_s"] == 1.5
    assert {"download", "audio", "sampling", "vae_decode", "encode_mux", "upload", "total"} <= set(out["timings"])
    assert base64.b64decode(out["thumbnail_base64"])[:2] == b"\xff\xd8"


def test_run_then_status(client, tmp_path):
    body = {
        "input": {
            "cond_image": png_b64(),
            "cond_audio": {"person1": wav_b64(tmp_path), "person2": "None"},
            "audio_type": "para",
            "bbox": {"person1": [0, 0, 300, 250], "person2": [0, 250, 300, 500]},
            **FAST,
        }
    }
    queued = client.post("/run", json=body).json()
    assert queued["status"] == "IN_PROGRESS"
    done = client.post(f"/status/{queued['id']}").json()
    assert done["status"] == "COMPLETED", done
    assert done["output"]["params"]["speakers"] == 2 and done["output"]["video"]["frames"] == 25


@pytest.mark.parametrize(
    ("input_", "error"),
    [
        ({"image": "not-base64!!", "audio": "UklGRg=="}, "E_INPUT: image: not a URL, a volume path or valid base64"),
        ({"image": "x", "audio": "y", "turbo": "very"}, "E_INPUT: turbo: Input should be a valid boolean"),
        ({"audio": "UklGRg=="}, "E_INPUT: input: image is required"),
        ({"image": "aGVsbG8=", "audio": "UklGRg=="}, "E_AUDIO: audio of speaker 1: cannot open as audio"),
        ({"image": "/etc/passwd", "audio": "UklGRg=="}, "E_DOWNLOAD: image: "),
    ],
)
def test_errors_come_back_coded(client, input_, error):
    reply = client.post("/runsync", json={"input": input_}).json()
    assert reply["status"] == "FAILED" and reply["error"].startswith(error), reply


def test_bad_image_and_over_long_audio(client, worker, tmp_path):
    reply = client.post(
        "/runsync",
        json={"input": {"image": base64.b64encode(b"not an image").decode(), "audio": wav_b64(tmp_path), **FAST}},
    ).json()
    assert reply["error"].startswith("E_IMAGE: image: not a readable image"), reply
    reply = client.post(
        "/runsync", json={"input": {"image": png_b64(), "audio": wav_b64(tmp_path), "duration": 900, **FAST}}
    ).json()
    # a length over the cap is refused before the media is fetched or decoded
    assert reply["error"] == "E_INPUT: duration: 900 s is over this worker's 600 s limit (MAX_DURATION_SECONDS)", reply


def test_health_probe(client):
    for probe_input in ({"test": "health_check"}, {"healthcheck": True}):
        reply = client.post("/runsync", json={"input": probe_input}).json()
        assert reply["status"] == "COMPLETED" and reply["output"]["status"] == "healthy"


def test_test_input_mode(tiny_root, tmp_path):
    """``python -m multitalk_serve.worker`` with a ``test_input.json`` in the working directory (volume inputs)."""
    volume = tmp_path / "volume"
    (volume / "in").mkdir(parents=True)
    Image.fromarray(stubs.scenario_image()).save(volume / "in" / "face.png")
    write_audio(volume / "in" / "voice.wav", 1.0)
    job = {
        "input": {
            "image": str(volume / "in" / "face.png"),
            "audio": str(volume / "in" / "voice.wav"),
            "output": {"format": "volume"},
            **FAST,
        }
    }
    (tmp_path / "test_input.json").write_text(json.dumps(job))
    env = {
        **os.environ,
        "MODEL_PATH": str(tiny_root),
        "VOLUME_PATH": str(volume),
        "MULTITALK_DTYPE": "fp32",
        "MULTITALK_WARMUP": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "multitalk_serve.worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "warm-up generation done" in result.stdout + result.stderr
    videos = list((volume / "outputs").rglob("*.mp4"))
    assert len(videos) == 1 and probe(videos[0]).frames == 25


@pytest.fixture(scope="module")
def production(tiny_root, tmp_path_factory):
    """The worker process in production mode against the fake RunPod server."""
    tmp = tmp_path_factory.mktemp("prod")
    volume = tmp / "volume"
    volume.mkdir()
    fake = FakeRunPod()
    env = {
        **fake.env(),
        "MODEL_PATH": str(tiny_root),
        "VOLUME_PATH": str(volume),
        "MULTITALK_DTYPE": "fp32",
        "PROGRESS_INTERVAL_SECONDS": "0",
        "RUNPOD_LOG_LEVEL": "DEBUG",
    }
    process = start_worker(env, tmp / "worker.log")
    yield fake, process, tmp
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    fake.close()


def test_production_loop_progress_and_result(production, tmp_path):
    fake, _, _ = production
    fake.jobs.put({"id": "job-ok", "input": {"image": png_b64(), "audio": [wav_b64(tmp_path)], **FAST}})
    final = fake.wait_for(lambda: fake.final("job-ok"), 180, "the job's result")
    out = final["output"]
    assert out["video"]["storage"] == "volume" and out["video"]["frames"] == 25
    assert probe(out["video_path"]).frames == 25
    progress = [p["body"]["output"] for p in fake.posts_for("job-ok") if p["body"].get("status") == "IN_PROGRESS"]
    stages = [p["stage"] for p in progress]
    assert stages[0] == "audio" and "sampling" in stages and "decoding" in stages
    steps = [p for p in progress if p["stage"] == "sampling"]
    assert [s["step"] for s in steps] == [1, 2] and steps[-1]["pct"] == 100.0 and steps[0]["total_clips"] == 1


def test_production_loop_error_payload(production):
    fake, _, _ = production
    fake.jobs.put({"id": "job-bad", "input": {"image": "x", "audio": "y", "sampling_steps": 0}})
    final = fake.wait_for(lambda: fake.final("job-bad"), 60, "the error result")
    assert final["error"].startswith("E_INPUT: sampling_steps: Input should be greater than or equal to 1")


def test_production_loop_cancel_then_next_job(production, tmp_path):
    fake, _, tmp = production
    long_job = {"image": png_b64(), "audio": [wav_b64(tmp_path, 6.0)], **FAST, "sampling_steps": 20}
    fake.jobs.put({"id": "job-cancel", "input": long_job})
    fake.wait_for(
        lambda: any(p["body"].get("output", {}).get("stage") == "sampling" for p in fake.posts_for("job-cancel")),
        120,
        "sampling to start",
    )
    fake.stops.put("job-cancel")
    fake.jobs.put({"id": "job-after", "input": {"image": png_b64(), "audio": [wav_b64(tmp_path)], **FAST}})
    final = fake.wait_for(lambda: fake.final("job-after"), 180, "the next job's result")
    assert final["output"]["video"]["frames"] == 25
    assert fake.final("job-cancel") is None  # a stopped job posts no result: the platform marks it cancelled
    steps = [
        p["body"]["output"]["step"]
        for p in fake.posts_for("job-cancel")
        if p["body"].get("output", {}).get("stage") == "sampling"
    ]
    assert max(steps) < 20 * 3  # stopped early (3 clips x 20 steps otherwise)
    log = (tmp / "worker.log").read_text()
    assert "job-cancel: stop requested" in log
    assert "base64," not in log and "UklGR" not in log  # DEBUG logging, yet no payloads


def test_production_loop_keeps_credentials_out_of_the_log(production, bucket, tmp_path):
    """The platform hands the job over with its s3Config; at DEBUG the worker's log still holds no credential, no
    signature and no payload."""
    fake, _, tmp = production
    secret = {
        "endpointUrl": bucket.endpoint_url,
        "accessId": "AKIAPRODSECRET987654",
        "accessSecret": "prod-secret-value-never-logged",
        "bucketName": bucket.bucket,
    }
    job = {"image": png_b64(), "audio": [wav_b64(tmp_path)], **FAST}
    fake.jobs.put({"id": "job-s3", "input": job, "s3Config": secret})
    final = fake.wait_for(lambda: fake.final("job-s3"), 180, "the S3 job's result")
    assert final["output"]["video"]["storage"] == "s3", final
    log = (tmp / "worker.log").read_text()
    assert "job-s3" in log
    for leak in ("AKIAPRODSECRET987654", "prod-secret-value-never-logged", "X-Amz-Signature=", "base64,"):
        assert leak not in log, leak


def test_production_loop_keeps_a_wrongly_shaped_secret_out_of_the_log(production, tmp_path):
    """An s3Config sent as a string, a list or JSON inside a string, and a secret inside the input: at DEBUG the
    worker's log (our lines and the SDK's) holds none of it (issue 11: a string s3Config appeared whole)."""
    fake, _, tmp = production
    secret = "prod-wrong-shape-secret-4321"
    shapes = {
        "job-shape-str": f"https://s3.example.com AKIDSHAPE {secret}",
        "job-shape-list": ["https://s3.example.com", "AKIDSHAPE", secret],
        "job-shape-json": json.dumps({"accessId": "AKIDSHAPE", "accessSecret": secret, "bucketName": "b"}),
    }
    for job_id, value in shapes.items():
        fake.jobs.put({"id": job_id, "input": {"image": "x", "audio": "y", "s3Config": value}, "s3Config": value})
    for job_id in shapes:
        final = fake.wait_for(lambda job_id=job_id: fake.final(job_id), 60, f"{job_id}'s result")
        assert final["error"].startswith("E_INPUT: s3Config"), final
    log = (tmp / "worker.log").read_text()
    assert "job-shape-json" in log
    assert secret not in log and "AKIDSHAPE" not in log
