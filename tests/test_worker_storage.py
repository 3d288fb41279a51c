"""Output storage against a real S3-compatible server on loopback: upload, presigned download, per-request
credentials, key prefix; and fallbacks that never drop a finished video."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import requests

from multitalk_serve.worker.config import S3Settings, WorkerConfig
from multitalk_serve.worker.errors import WorkerError
from multitalk_serve.worker.schema import OutputOptions
from multitalk_serve.worker.storage import Storage

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


def config(tmp_path: Path, s3=None, volume=True, **kw) -> WorkerConfig:
    vol = tmp_path / "volume"
    if volume:
        vol.mkdir(exist_ok=True)
    defaults = {"model_path": tmp_path, "volume_path": vol, "s3": s3, "upload_retries": 2, "output_prefix": "mt"}
    return WorkerConfig(**{**defaults, **kw})


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(VIDEO)
    return path


def test_upload_to_env_bucket_and_download_through_the_presigned_url(tmp_path, video, bucket):
    thumb = tmp_path / "t.jpg"
    thumb.write_bytes(b"\xff\xd8jpeg")
    stored = Storage(config(tmp_path, s3=bucket)).store("job-1", video, thumb, OutputOptions(prefix="team/a"))
    assert stored.storage == "s3" and stored.key == "mt/team/a/job-1/job-1.mp4"
    response = requests.get(stored.url, timeout=10)
    assert response.status_code == 200 and response.content == VIDEO
    assert response.headers["Content-Type"] == "video/mp4"
    assert requests.get(stored.thumbnail_url, timeout=10).content == b"\xff\xd8jpeg"


def test_per_request_credentials_win(tmp_path, video, bucket, s3_server):
    env_bucket = S3Settings(s3_server, "testing", "testing", "not-created", "us-east-1")
    stored = Storage(config(tmp_path, s3=env_bucket), request_s3=bucket).store(
        "job-2", video, None, OutputOptions(filename="talk.mp4")
    )
    assert stored.key == "mt/job-2/talk.mp4" and requests.get(stored.url, timeout=10).content == VIDEO


def test_s3_config_from_a_request_names_what_is_missing():
    with pytest.raises(WorkerError, match="s3Config is missing accessSecret, bucketName"):
        S3Settings.from_request({"accessId": "a", "endpointUrl": "http://x"})


def test_env_variants(monkeypatch):
    for name in (
        "BUCKET_ENDPOINT_URL",
        "BUCKET_ACCESS_KEY_ID",
        "BUCKET_SECRET_ACCESS_KEY",
        "BUCKET_NAME",
        "S3_BUCKET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    assert S3Settings.from_env() is None
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", "https://videos.s3.eu-west-1.amazonaws.com")
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "s")
    s3 = S3Settings.from_env()
    assert (s3.endpoint_url, s3.bucket, s3.region) == ("https://s3.eu-west-1.amazonaws.com", "videos", "eu-west-1")
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", "https://acc.r2.cloudflarestorage.com")
    monkeypatch.setenv("BUCKET_NAME", "out")
    assert S3Settings.from_env().bucket == "out"
    for name in ("BUCKET_ENDPOINT_URL", "BUCKET_NAME"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("S3_BUCKET", "legacy")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    s3 = S3Settings.from_env()
    assert (s3.bucket, s3.region, s3.endpoint_url) == ("legacy", "us-west-2", None)


def test_a_failed_upload_keeps_the_video_on_the_volume(tmp_path, video, s3_server):
    broken = S3Settings("http://127.0.0.1:9", "k", "s", "b")  # nothing listens on port 9
    stored = Storage(config(tmp_path, s3=broken)).store("job-3", video, None, OutputOptions())
    assert stored.storage == "volume" and Path(stored.path).read_bytes() == VIDEO
    assert stored.path.startswith(str(tmp_path / "volume" / "outputs" / "mt"))
    assert any("upload to s3://b/mt/job-3/job-3.mp4 failed after 2 tries" in w for w in stored.warnings)


def test_a_failed_upload_without_volume_returns_small_videos_inline(tmp_path, video):
    broken = S3Settings("http://127.0.0.1:9", "k", "s", "b")
    stored = Storage(config(tmp_path, s3=broken, volume=False)).store("job-4", video, None, OutputOptions(format="s3"))
    assert stored.storage == "inline" and base64.b64decode(stored.base64) == VIDEO and stored.warnings


def test_inline_size_guard(tmp_path, video):
    cfg = config(tmp_path, volume=False, inline_max_bytes=1000)
    with pytest.raises(WorkerError) as exc:
        Storage(cfg).store("job-5", video, None, OutputOptions())
    assert exc.value.code == "E_OUTPUT_TOO_LARGE" and "configure s3Config" in exc.value.message
    # with a volume the same video is kept there instead of failing
    stored = Storage(config(tmp_path, inline_max_bytes=1000)).store(
        "job-5", video, None, OutputOptions(format="base64")
    )
    assert stored.storage == "volume" and "inline" in stored.warnings[0]


def test_formats_that_cannot_be_honoured(tmp_path, video):
    with pytest.raises(WorkerError, match=r"output.format is s3 but no bucket is configured"):
        Storage(config(tmp_path)).store("j", video, None, OutputOptions(format="s3"))
    with pytest.raises(WorkerError, match=r"output.format is volume but no network volume is mounted"):
        Storage(config(tmp_path / "elsewhere", volume=False)).store("j", video, None, OutputOptions(format="volume"))


def test_keys_cannot_escape_the_prefix(tmp_path):
    storage = Storage(config(tmp_path))
    key = storage.key_for("../../evil", "../x.mp4", OutputOptions(prefix="a/b"))
    assert key.startswith("mt/a/b/") and ".." not in key.split("/")
