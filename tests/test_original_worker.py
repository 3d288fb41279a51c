"""The original worker's clients, unchanged (berrylands/meigen-multitalk-runpod-serverless, V42-V154).

Each test sends exactly what one of its clients sends (``runpod-multitalk/examples/client.py``,
``examples/multitalk_client.py``, ``examples/simple_video_generator.py``, ``examples/s3_video_generator.py``,
``test_input.json``, the handlers' documented inputs) and reads the answer the way that client reads it, through the
local API (in process) and the production job loop (``runpod.Endpoint`` against the fake RunPod). Jobs render at
96x64 with at most 2 steps (``small_render.py``); what each request translates to is checked on its own, below.
"""

from __future__ import annotations

import base64
import io
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import runpod
from fastapi.testclient import TestClient
from PIL import Image
from runpod.serverless.modules.rp_fastapi import WorkerAPI

import pipeline_stubs as stubs
from fake_runpod import FakeRunPod, start_worker
from media import write_audio
from multitalk_serve.engine.pipeline.video import probe
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.errors import WorkerError
from multitalk_serve.worker.handler import Worker
from multitalk_serve.worker.legacy import DEFAULT_IMAGE_ENV, LegacyRequest
from small_render import SmallRender

TESTS = Path(__file__).parent


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(stubs.scenario_image()).save(buf, format="JPEG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("utf-8")  # what every one of its clients does


def client_py_input(image: bytes, audio_1: bytes, audio_2: bytes | None, **kw) -> dict:
    """``runpod-multitalk/examples/client.py`` ``MultiTalkClient._prepare_input`` (files -> base64)."""
    data = {
        "reference_image": b64(image),
        "audio_1": b64(audio_1),
        "prompt": kw.get("prompt", "Two people having a conversation"),
        "num_frames": kw.get("num_frames", 100),
        "seed": kw.get("seed", 42),
        "turbo": kw.get("turbo", False),
        "sampling_steps": kw.get("sampling_steps", 20),
    }
    if audio_2:
        data["audio_2"] = b64(audio_2)
    return data


def test_sine_pcm(duration: float = 3.0) -> bytes:
    """``examples/simple_video_generator.py`` ``create_test_audio``: bare int16 samples at 16 kHz, no header."""
    sample_rate = 16000
    t = np.linspace(0, duration, int(sample_rate * duration), False)
    audio = np.sin(2 * np.pi * 440 * t)
    audio += 0.5 * np.sin(2 * np.pi * 440 * 2 * t)
    audio += 0.25 * np.sin(2 * np.pi * 440 * 3 * t)
    audio = audio * np.exp(-t / duration)
    audio = audio / np.max(np.abs(audio)) * 0.8
    return (audio * 32767).astype(np.int16).tobytes()


test_sine_pcm.__test__ = False  # a helper, not a test


# --- what each old request becomes (no generation) -------------------------------------------------------------
def translate(raw: dict, has_bucket: bool = False) -> tuple[LegacyRequest, dict]:
    legacy = LegacyRequest.detect(raw)
    assert legacy is not None, raw
    return legacy, legacy.translate(has_bucket, 200_000_000, 0.2)


def test_our_own_requests_are_not_old():
    for raw in (
        {"image": "x", "audio": "y"},
        {"cond_image": "x", "cond_audio": {"person1": "y"}, "sample_steps": 4, "output_format": "s3", "turbo": True},
        {"image_url": "x", "audio_url": "y", "duration": 2, "output": {"format": "base64"}},
    ):
        assert LegacyRequest.detect(raw) is None


def test_client_py_request_translates():
    legacy, ours = translate(client_py_input(b"img", b"a1", b"a2", turbo=True))
    assert legacy.family == "flat"
    assert ours == {
        "image": b64(b"img"),
        "audio": [b64(b"a1"), b64(b"a2")],
        "prompt": "Two people having a conversation",
        "num_frames": 100,
        "seed": 42,
        "turbo": True,
        "sampling_steps": 20,
        "output": {"format": "base64"},  # no bucket: inline, as src/handler.py answered (never a volume path)
    }


def test_v106_to_v114_request_translates():
    """``handler_v106.py`` .. ``handler_v114.py``: bare names, S3 output under a chosen key, their guidance names."""
    raw = {
        "action": "generate",
        "audio_1": "1.wav",
        "condition_image": "multi1.png",
        "prompt": "A person talking naturally",
        "output_format": "s3",
        "s3_output_key": "multitalk-out/output-1700000000.mp4",
        "sample_steps": 30,
        "text_guidance_scale": 7.5,
        "audio_guidance_scale": 3.5,
        "seed": 42,
    }
    legacy, ours = translate(raw, has_bucket=True)
    assert legacy.family == "nested"
    assert ours == {
        "image": {"s3_key": "multi1.png"},
        "audio": [{"s3_key": "1.wav"}],
        "prompt": "A person talking naturally",
        "sampling_steps": 30,
        "text_guide_scale": 7.5,
        "audio_guide_scale": 3.5,
        "seed": 42,
        "output": {"format": "s3", "prefix": "multitalk-out", "filename": "output-1700000000.mp4"},
    }
    legacy, ours = translate(raw, has_bucket=False)  # no bucket: the volume's inputs/ folder, stored where we can
    assert ours["image"] == {"path": "inputs/multi1.png"} and ours["audio"] == [{"path": "inputs/1.wav"}]
    assert ours["output"] == {"format": "base64", "prefix": "multitalk-out", "filename": "output-1700000000.mp4"}
    assert any("no bucket" in w for w in legacy.warnings)


def test_v136_v150_requests_translate():
    """``handler_v136_reference.py`` / ``handler_v150_graceful.py``: S3 keys, or ``audio_file`` / ``image_file``."""
    legacy, ours = translate(
        {"audio_s3_key": "in/1.wav", "image_s3_key": "in/multi1.png", "sampling_steps": 40, "turbo": False},
        has_bucket=True,
    )
    assert legacy.family == "flat"
    assert ours == {
        "image": {"s3_key": "in/multi1.png"},
        "audio": [{"s3_key": "in/1.wav"}],
        "sampling_steps": 40,
        "turbo": False,
        "output": {"format": "s3"},  # its default
    }
    _, ours = translate({"audio_file": "1.wav", "image_file": "multi1.png", "output_format": "base64"})
    assert ours == {
        "image": {"path": "inputs/multi1.png"},
        "audio": [{"path": "inputs/1.wav"}],
        "output": {"format": "base64"},
    }


def test_stream_requests_translate():
    """The V2.x ``action: generate`` + ``audio`` shape: raw PCM gets a WAV header; fps is always 25; inline output."""
    raw = {"action": "generate", "audio": b64(test_sine_pcm()), "duration": 3.0, "fps": 30, "width": 512, "height": 512}
    with pytest.raises(WorkerError, match=r"^reference_image: MultiTalk animates a reference image") as info:
        translate(raw)
    assert info.value.code == "E_INPUT" and DEFAULT_IMAGE_ENV in info.value.message
    legacy, ours = translate({**raw, "reference_image": b64(b"jpeg")})
    assert legacy.family == "stream"
    header, _, data = ours["audio"][0].partition(",")
    assert header == "data:audio/wav;base64"
    with wave.open(io.BytesIO(base64.b64decode(data))) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()) == (16000, 1, 2, 48000)
    assert ours["image"] == b64(b"jpeg") and ours["output"] == {"format": "base64"}
    assert (ours["duration"], ours["width"], ours["height"]) == (3.0, 512, 512) and "fps" not in ours
    assert legacy.warnings == ["fps 30 ignored: MultiTalk videos are 25 fps"]

    wav_file = io.BytesIO()  # a real file's bytes (multitalk_client.py's encode_file) pass through untouched
    with wave.open(wav_file, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(test_sine_pcm(0.5))
    _, ours = translate({"action": "generate", "audio": b64(wav_file.getvalue()), "reference_image": "face.jpg"})
    assert ours["audio"] == [b64(wav_file.getvalue())] and ours["image"] == {"path": "inputs/face.jpg"}

    _, ours = translate(  # s3_video_generator.py: s3:// URLs (ours already), S3 output under its key
        {
            "action": "generate",
            "audio": "s3://videos/multitalk/input/audio_20250101_120000.wav",
            "duration": 5.0,
            "fps": 30,
            "width": 512,
            "height": 512,
            "reference_image": "s3://videos/face.jpg",
            "output_format": "s3",
            "s3_output_key": "multitalk/batch/videos/a_20250101_120000.mp4",
        },
        has_bucket=True,
    )
    assert ours["audio"] == ["s3://videos/multitalk/input/audio_20250101_120000.wav"]
    assert ours["output"] == {"format": "s3", "prefix": "multitalk/batch/videos", "filename": "a_20250101_120000.mp4"}


def test_bare_names_cannot_leave_their_folder():
    for name in ("../secret.wav", "inputs/../../etc/x.wav", "/etc/passwd", "..", "a/../b.wav"):
        _, ours = translate({"audio_1": name, "condition_image": "face.png"})
        assert ours["audio"] == [name]  # not a bare name: left to the media rules (base64 / volume path) to refuse
    with pytest.raises(WorkerError, match=r"^s3_output_key:"):
        translate({"audio_1": "a.wav", "condition_image": "f.png", "s3_output_key": "../../escape.mp4"})


def test_its_bucket_variable_names_the_input_bucket(monkeypatch):
    """V136-V150 named the bucket ``AWS_S3_BUCKET_NAME`` (credentials from ``AWS_*``)."""
    from multitalk_serve.worker.config import S3Settings

    for name in ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "S3_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_S3_BUCKET_NAME": "760572149-framepack", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    for name, value in {**env, "AWS_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    settings = S3Settings.from_env()
    assert settings is not None and (settings.bucket, settings.region) == ("760572149-framepack", "eu-west-1")


def test_operator_actions_and_unknown_actions_are_refused():
    with pytest.raises(WorkerError, match="operator action"):
        LegacyRequest.detect({"action": "download_models", "models": ["wan"]})
    with pytest.raises(WorkerError, match="unknown action 'dance'"):
        LegacyRequest.detect({"action": "dance"})
    with pytest.raises(WorkerError, match="action: must be a string"):
        LegacyRequest.detect({"action": ["generate"]})
    with pytest.raises(WorkerError, match="output_format: must be a string"):
        translate({"audio_1": "a.wav", "condition_image": "f.png", "output_format": ["s3"]})
    _, ours = translate({"audio_1": "a.wav", "condition_image": "f.png", "output": "inline", "s3_output_key": "k.mp4"})
    assert ours["output"] == "inline" and ours["s3_output_key"] == "k.mp4"  # left for JobInput to refuse, coded


def our_result(storage: str) -> dict:
    """A result as ``JobOutput.payload()`` gives it, stored in ``storage``."""
    where = {
        "s3": {
            "video_url": "https://s3.example/b/multitalk/j/a.mp4?X-Amz-Signature=1",
            "video_s3_key": "multitalk/j/a.mp4",
        },
        "volume": {"video_path": "/runpod-volume/outputs/multitalk/j/j.mp4"},
        "inline": {"video_base64": "AAAA"},
    }[storage]
    video = {"storage": storage, "url": where.get("video_url"), "path": where.get("video_path")}
    video |= {"content_type": "video/mp4", "file_name": "a.mp4", "bytes": 3 * 2**20, "duration_s": 2.0}
    video |= {"frames": 50, "fps": 25, "width": 96, "height": 64, "has_audio": True}
    return {**where, "video": video, "seed": 7, "params": {}, "timings": {"total": 12.34}, "worker": {}, "warnings": []}


def test_stream_answers_as_its_clients_read_them():
    """``s3_video_generator.py``: ``output_type`` s3_url, ``video`` an s3:// URL it downloads with boto3, ``s3_key``,
    ``s3_bucket``, ``parameters``; inline: ``video`` is the base64."""
    legacy, _ = translate(
        {"action": "generate", "audio": "a.wav", "reference_image": "f.png", "output_format": "s3"}, True
    )
    out = legacy.answer(our_result("s3"), "videos")
    assert (out["success"], out["output_type"], out["video"]) == (True, "s3_url", "s3://videos/multitalk/j/a.mp4")
    assert (out["s3_key"], out["s3_bucket"]) == ("multitalk/j/a.mp4", "videos") and out["video_url"].startswith("https")
    params = out["parameters"]
    assert (params["resolution"], params["fps"], params["duration"], params["output_format"]) == (
        "96x64",
        25,
        2.0,
        "s3",
    )
    assert out["processing_time"] == "12.3s" and out["models_used"][0] == "MultiTalk"
    out = legacy.answer(our_result("inline"), None)
    assert (out["video"], out["output_type"], out["frames"]) == ("AAAA", "base64", 50)
    assert legacy.answer(our_result("volume"), None)["output_type"] == "volume_path"


def test_nested_and_flat_answers_keep_ours():
    legacy, _ = translate({"action": "generate", "audio_1": "a.wav", "condition_image": "f.png"}, True)
    out = legacy.answer(our_result("s3"), "videos")
    assert out["output"] == {
        "status": "completed",
        "message": "Video generated successfully",
        "video_url": out["video_url"],
        "s3_key": "multitalk/j/a.mp4",
    }
    assert out["video"]["storage"] == "s3" and out["status"] == "success" and out["size_mb"] == 3.0
    legacy, _ = translate({"audio_s3_key": "a.wav", "image_s3_key": "f.png"}, True)
    out = legacy.answer(our_result("inline"), None)
    assert "output" not in out and out["video_base64"] == "AAAA" and out["video"]["frames"] == 50
    assert (out["status"], out["success"], out["duration"], out["frames"], out["format"]) == (
        "success",
        True,
        2.0,
        50,
        "mp4",
    )


# --- the local API, in process ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("volume")
    inputs = root / "inputs"
    inputs.mkdir()
    Image.fromarray(stubs.scenario_image()).save(inputs / "multi1.png")
    write_audio(inputs / "1.wav", 1.0)
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "x.wav"
    elsewhere.write_bytes((inputs / "1.wav").read_bytes())
    (inputs / "link.wav").symlink_to(elsewhere)
    return root


@pytest.fixture(scope="module")
def api(tiny_pipeline, tiny_root, volume):
    config = WorkerConfig(model_path=tiny_root, volume_path=volume, s3=None, progress_interval_s=0.0)
    return TestClient(WorkerAPI({"handler": Worker(SmallRender(tiny_pipeline), config).handle}).rp_app)


def test_client_py_generate_video_sync(api, tmp_path):
    """``MultiTalkClient.generate_video_sync``: POST /runsync, then ``video_url`` or base64 ``video_base64``."""
    audio = write_audio(tmp_path / "a1.wav", 1.0).read_bytes()
    input_data = client_py_input(jpeg_bytes(), audio, audio, num_frames=25, turbo=True)
    result = api.post("/runsync", json={"input": input_data}).json()
    assert "error" not in result, result
    output_path = tmp_path / "output.mp4"
    assert "video_url" not in result["output"]  # no bucket: its else branch
    output_path.write_bytes(base64.b64decode(result["output"]["video_base64"]))
    assert probe(output_path).frames == 25
    assert result["output"]["params"]["speakers"] == 2 and result["output"]["status"] == "success"


def test_test_input_json_model_check(api):
    """The original repository's ``test_input.json``."""
    reply = api.post("/runsync", json={"input": {"action": "model_check"}}).json()
    assert reply["status"] == "COMPLETED", reply
    answer = reply["output"]["output"]
    assert answer["status"] == "ready" and answer["message"].startswith("MultiTalk worker ready")
    assert answer["model_info"]["network_volume_mounted"] is True and "pytorch_version" in answer["model_info"]
    info = api.post("/runsync", json={"input": {"action": "model_info"}}).json()["output"]["output"]  # V115
    assert info["status"] == "success" and info["model_info"]["models_loaded"] is True


@pytest.mark.parametrize("probe_input", [{"health_check": True}, {"type": "health"}, {"test": "health_check"}])
def test_health_probes(api, probe_input):
    """``runpod-multitalk/handler.py`` (V154), ``src/handler.py`` and V150's probes."""
    output = api.post("/runsync", json={"input": probe_input}).json()["output"]
    assert output["status"] == "healthy"
    if "test" not in probe_input:
        assert output["message"] and output["volume_mounted"] is True and output["worker_id"]


def test_v106_v114_nested_answer_from_the_volume(api, tmp_path):
    """Bare names from ``VOLUME_PATH/inputs``; the answer nested in ``output`` as V106-V114 returned it."""
    raw = {
        "action": "generate",
        "audio_1": "1.wav",
        "condition_image": "multi1.png",
        "prompt": "A person talking naturally",
        "output_format": "base64",
    }
    reply = api.post("/runsync", json={"input": raw}).json()
    assert reply["status"] == "COMPLETED", reply
    result = reply["output"]["output"]
    assert result["status"] == "completed" and result["message"]
    (tmp_path / "v.mp4").write_bytes(base64.b64decode(result["video_base64"]))
    assert probe(tmp_path / "v.mp4").frames == 25
    assert "video_base64" not in reply["output"]  # the video once per answer


def test_old_names_in_errors(api):
    """A failure names the field as the old request wrote it (and bare names stay inside ``inputs/``)."""
    cases = [
        ({"audio_1": "missing.wav", "condition_image": "multi1.png"}, "E_DOWNLOAD: audio_1: no such file"),
        ({"audio_1": "1.wav", "image_file": "nope.png"}, "E_DOWNLOAD: image_file: no such file"),
        ({"audio_1": "link.wav", "condition_image": "multi1.png"}, "E_DOWNLOAD: audio_1: inputs/link.wav is outside"),
        (
            {"audio_1": "../outside.wav", "condition_image": "multi1.png"},
            "E_INPUT: audio_1: ../outside.wav is a relative path",
        ),
        ({"audio_1": "1.wav", "condition_image": "multi1.png", "sample_steps": 0}, "E_INPUT: sample_steps: Input"),
        ({"action": "generate", "audio": b64(test_sine_pcm(0.2))}, "E_INPUT: reference_image: MultiTalk animates"),
    ]
    for raw, error in cases:
        reply = api.post("/runsync", json={"input": raw}).json()
        assert reply["status"] == "FAILED" and reply["error"].startswith(error), (raw, reply)


def test_v150_flat_answer_from_the_bucket(tiny_pipeline, tiny_root, bucket, tmp_path):
    """``audio_1`` / ``condition_image`` as keys in the worker's bucket, S3 output: V136/V150's fields."""
    import boto3
    import requests

    s3 = boto3.client(
        "s3", endpoint_url=bucket.endpoint_url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    s3.put_object(Bucket=bucket.bucket, Key="1.wav", Body=write_audio(tmp_path / "1.wav", 1.0).read_bytes())
    s3.put_object(Bucket=bucket.bucket, Key="multi1.png", Body=jpeg_bytes())
    config = WorkerConfig(model_path=tiny_root, volume_path=tmp_path / "none", s3=bucket, progress_interval_s=0.0)
    api = TestClient(WorkerAPI({"handler": Worker(SmallRender(tiny_pipeline), config).handle}).rp_app)
    raw = {
        "audio_1": "1.wav",
        "condition_image": "multi1.png",
        "prompt": "A person talking naturally with expressive lip sync",
        "output_format": "s3",
        "sample_steps": 40,
        "turbo": False,
    }
    reply = api.post("/runsync", json={"input": raw}).json()
    assert reply["status"] == "COMPLETED", reply
    out = reply["output"]
    assert out["status"] == "success" and out["success"] is True
    assert out["video_s3_key"] == out["s3_key"] and out["video_s3_key"].endswith(".mp4")
    assert (out["duration"], out["frames"]) == (1.0, 25) and 0 < out["size_mb"] < 5
    (tmp_path / "s3.mp4").write_bytes(requests.get(out["video_url"], timeout=10).content)
    assert probe(tmp_path / "s3.mp4").frames == 25


# --- the production job loop, through the SDK as its examples call it ------------------------------------------
@pytest.fixture(scope="module")
def endpoint(tiny_root, tmp_path_factory, volume):
    tmp = tmp_path_factory.mktemp("old-clients")
    fake = FakeRunPod(runsync_wait=240)
    env = {
        **fake.env(),
        "MODEL_PATH": str(tiny_root),
        "VOLUME_PATH": str(volume),
        "MULTITALK_DTYPE": "fp32",
        DEFAULT_IMAGE_ENV: "multi1.png",
    }
    process = start_worker(env, tmp / "worker.log", [sys.executable, str(TESTS / "small_render.py")])
    saved = runpod.api_key, runpod.endpoint_url_base
    runpod.api_key, runpod.endpoint_url_base = "test-key", fake.api_base
    try:
        yield runpod.Endpoint("ep"), fake
    finally:
        runpod.api_key, runpod.endpoint_url_base = saved
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        fake.close()


def poll(job, timeout: float = 600) -> str:
    """Their loop: ``while job.status() in ["IN_QUEUE", "IN_PROGRESS"]: time.sleep(...)``."""
    deadline = time.monotonic() + timeout
    while job.status() in ["IN_QUEUE", "IN_PROGRESS"]:
        assert time.monotonic() < deadline, "job never finished"
        time.sleep(0.5)
    return job.status()


def test_multitalk_client_generate_talking_video(endpoint, tmp_path):
    """``examples/multitalk_client.py`` ``generate_talking_video`` with a reference image."""
    ep, fake = endpoint
    fake.wait_for(lambda: fake.polled, 600, "the worker to start and ask for jobs")  # minutes on a loaded CI box
    health = ep.health()
    assert health.get("workers", {}).get("ready", 0) == 1
    audio_path = write_audio(tmp_path / "test_audio.wav", 1.0)
    image_path = tmp_path / "face.jpg"
    image_path.write_bytes(jpeg_bytes())
    job_input = {"action": "generate", "audio": b64(audio_path.read_bytes()), "fps": 30}
    job_input["reference_image"] = b64(image_path.read_bytes())
    job_input["duration"] = 1.0
    job = ep.run(job_input)
    assert poll(job) == "COMPLETED"
    output = job.output()
    assert output.get("success") is True
    assert (output.get("duration"), output.get("frames")) == (1.0, 25) and output.get("processing_time").endswith("s")
    video_b64 = output.get("video")
    (tmp_path / "multitalk_output.mp4").write_bytes(base64.b64decode(video_b64))
    assert probe(tmp_path / "multitalk_output.mp4").frames == 25
    assert output["output_type"] == "base64" and "fps 30 ignored: MultiTalk videos are 25 fps" in output["warnings"]


def test_simple_video_generator_raw_pcm(endpoint, tmp_path):
    """``examples/simple_video_generator.py``: raw 16 kHz PCM, no image (the operator's ORIGINAL_WORKER_IMAGE)."""
    ep, _ = endpoint
    audio_data = np.frombuffer(test_sine_pcm(1.0), dtype=np.int16)
    job_input = {
        "action": "generate",
        "audio": base64.b64encode(audio_data.tobytes()).decode("utf-8"),
        "duration": 1.0,
        "fps": 30,
        "width": 512,
        "height": 512,
    }
    job = ep.run(job_input)
    assert poll(job) == "COMPLETED"
    result = job.output()
    assert result and result.get("success")
    video_data = base64.b64decode(result.get("video"))
    (tmp_path / "output.mp4").write_bytes(video_data)
    assert probe(tmp_path / "output.mp4").frames == 25
    assert "processing_time" in result and ", ".join(result["models_used"]).startswith("MultiTalk")


def test_v150_client_through_the_job_loop(endpoint, tmp_path):
    """V136/V150's request (``audio_file`` / ``image_file`` bare names), read as its users read it."""
    ep, _ = endpoint
    job = ep.run({"audio_file": "1.wav", "image_file": "multi1.png", "output_format": "base64"})
    assert poll(job) == "COMPLETED"
    out = job.output()
    assert out["status"] == "success" and (out["duration"], out["frames"]) == (1.0, 25)
    (tmp_path / "v150.mp4").write_bytes(base64.b64decode(out["video_base64"]))
    assert probe(tmp_path / "v150.mp4").frames == 25


def test_old_failures_are_coded_in_the_job_loop(endpoint):
    ep, fake = endpoint
    job = ep.run({"action": "list_models"})
    assert poll(job) == "FAILED"
    assert fake.status(job.job_id)["error"].startswith("E_INPUT: action: 'list_models' was an operator action")
    assert ep.run_sync({"input": {"action": "model_check"}}, timeout=60)["output"]["status"] == "ready"
