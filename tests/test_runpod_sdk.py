"""The worker through the RunPod SDK's own client, ``runpod.Endpoint`` (``run``, ``status``, ``output``, ``cancel``,
``health``, ``run_sync``), against the fake RunPod (public API + the production job loop the worker runs).

``run_sync`` and ``Job.output`` return ``None`` for a failed job: the error code and message are in the status body,
which the client reads with ``endpoint.rp_client.get(f"{endpoint.endpoint_id}/status/{job.job_id}")`` (docs/api.md,
"Calling it with the RunPod SDK").
"""

from __future__ import annotations

import base64
import io
import signal
import subprocess
import time

import pytest
import runpod
from PIL import Image

import pipeline_stubs as stubs
from fake_runpod import FakeRunPod, start_worker
from media import write_audio
from multitalk_serve.engine.pipeline.video import probe

FAST = {"width": 96, "height": 64, "sampling_steps": 2, "seed": 3}


def png_b64() -> str:
    buf = io.BytesIO()
    Image.fromarray(stubs.scenario_image()).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def endpoint(tiny_root, tmp_path_factory):
    """A ``runpod.Endpoint`` whose jobs a production-mode worker process runs."""
    tmp = tmp_path_factory.mktemp("sdk")
    fake = FakeRunPod(runsync_wait=240)
    env = {
        **fake.env(),
        "MODEL_PATH": str(tiny_root),
        "VOLUME_PATH": str(tmp / "no-volume"),
        "MULTITALK_DTYPE": "fp32",
        "PROGRESS_INTERVAL_SECONDS": "0",
    }
    process = start_worker(env, tmp / "worker.log")
    saved = runpod.api_key, runpod.endpoint_url_base
    runpod.api_key, runpod.endpoint_url_base = "test-key", fake.api_base
    audio = base64.b64encode(write_audio(tmp / "a.wav", 1.0).read_bytes()).decode()
    long_audio = base64.b64encode(write_audio(tmp / "long.wav", 6.0).read_bytes()).decode()
    try:
        yield runpod.Endpoint("ep"), fake, {"image": png_b64(), "audio": audio, "long_audio": long_audio}
    finally:
        runpod.api_key, runpod.endpoint_url_base = saved
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        fake.close()


def wait_status(job, wanted: tuple[str, ...], timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job.status()
        if status in wanted:
            return status
        time.sleep(0.5)
    raise TimeoutError(f"job {job.job_id} never reached {wanted}")


def test_run_status_output_and_health(endpoint, tmp_path):
    ep, _, media = endpoint
    job = ep.run({"image": media["image"], "audio": media["audio"], **FAST})
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert wait_status(job, ("COMPLETED", "FAILED")) == "COMPLETED"
    out = job.output()
    video = tmp_path / "out.mp4"
    video.write_bytes(base64.b64decode(out["video_base64"]))
    assert probe(video).frames == 25 and out["video"]["frames"] == 25 and out["seed"] == 3
    health = ep.health()
    assert health["workers"]["ready"] == 1 and health["jobs"]["completed"] >= 1


def test_run_sync_returns_the_output(endpoint):
    ep, _, media = endpoint
    out = ep.run_sync({"input": {"image": media["image"], "audio": media["audio"], **FAST}}, timeout=300)
    assert out["video"]["storage"] == "inline" and out["params"]["sampling_steps"] == 2


def test_a_failed_job_error_code_through_the_sdk(endpoint):
    """The SDK hides it (``None``); the status body has ``"<CODE>: <message>"``."""
    ep, _, media = endpoint
    bad = {"image": media["image"], "audio": media["audio"], "sampling_steps": 0}
    assert ep.run_sync(bad, timeout=120) is None  # the SDK's answer for every failure

    job = ep.run(bad)
    assert wait_status(job, ("COMPLETED", "FAILED")) == "FAILED"
    assert job.output() is None
    body = ep.rp_client.get(f"{ep.endpoint_id}/status/{job.job_id}")  # what docs/api.md tells SDK users to do
    assert body["status"] == "FAILED"
    code, _, message = body["error"].partition(": ")
    assert code == "E_INPUT" and message.startswith("sampling_steps: Input should be greater than or equal to 1")


def test_cancel_stops_the_job_and_the_next_one_runs(endpoint):
    ep, fake, media = endpoint
    job = ep.run({"image": media["image"], "audio": media["long_audio"], **FAST, "sampling_steps": 20})
    fake.wait_for(
        lambda: (fake.status(job.job_id).get("output") or {}).get("stage") == "sampling", 180, "sampling to start"
    )
    assert job.cancel()["status"] == "CANCELLED"
    assert job.status() == "CANCELLED"
    after = ep.run({"image": media["image"], "audio": media["audio"], **FAST})
    assert wait_status(after, ("COMPLETED", "FAILED")) == "COMPLETED"
    assert fake.final(job.job_id) is None  # the stopped job posted no result
    steps = [
        p["body"]["output"]["step"]
        for p in fake.posts_for(job.job_id)
        if (p["body"].get("output") or {}).get("stage") == "sampling"
    ]
    assert max(steps) < 20 * 3  # stopped early (3 clips x 20 steps otherwise)
