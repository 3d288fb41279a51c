"""Fetching job media: URLs (SSRF-safe), base64 and data URIs, volume paths, S3 keys; every refusal coded."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import boto3
import pytest

from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.errors import WorkerError
from multitalk_serve.worker.media import MediaFetcher, redact_url
from multitalk_serve.worker.schema import MediaObject


def fetcher(tmp_path: Path, s3=None, **kw) -> MediaFetcher:
    volume = tmp_path / "volume"
    volume.mkdir(exist_ok=True)
    defaults = {
        "model_path": tmp_path,
        "volume_path": volume,
        "s3": None,
        "download_retries": 2,
        "download_timeout_s": 1.0,
    }
    return MediaFetcher(WorkerConfig(**{**defaults, **kw}), s3)


def fails(code: str, message: str, fn, *args):
    with pytest.raises(WorkerError) as exc:
        fn(*args)
    assert exc.value.code == code, exc.value
    assert message in exc.value.message, exc.value.message
    return exc.value


@pytest.fixture
def allow_loopback(monkeypatch):
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")


def test_base64_plain_and_data_uri(tmp_path):
    f = fetcher(tmp_path)
    payload = b"RIFF....WAVEfmt "
    assert f.fetch(base64.b64encode(payload).decode(), "audio[0]", "audio") == payload
    assert f.fetch("data:audio/wav;base64," + base64.b64encode(payload).decode(), "audio[0]", "audio") == payload
    assert f.fetch(MediaObject(base64=base64.b64encode(payload).decode()), "audio[0]", "audio") == payload


def test_bad_base64_and_wrong_data_uri_type(tmp_path):
    f = fetcher(tmp_path)
    fails(
        "E_INPUT", "image: not a URL, a volume path or valid base64", f.fetch, "this is not base64!!", "image", "image"
    )
    fails(
        "E_INPUT",
        "audio[0]: a data URI of type image/png where audio was expected",
        f.fetch,
        "data:image/png;base64,aGVsbG8=",
        "audio[0]",
        "audio",
    )
    fails("E_INPUT", "must be data:<type>;base64", f.fetch, "data:image/png,hello", "image", "image")


def test_volume_paths_stay_inside_the_volume(tmp_path):
    f = fetcher(tmp_path)
    volume = tmp_path / "volume"
    (volume / "in").mkdir()
    (volume / "in" / "a.wav").write_bytes(b"abc")
    (tmp_path / "secret.txt").write_text("nope")
    os.symlink(tmp_path / "secret.txt", volume / "in" / "link.wav")
    assert f.fetch(str(volume / "in" / "a.wav"), "audio[0]", "audio") == b"abc"
    fails(
        "E_DOWNLOAD",
        "outside the network volume",
        f.fetch,
        str(volume / "in" / ".." / ".." / "secret.txt"),
        "audio[0]",
        "audio",
    )
    fails("E_DOWNLOAD", "outside the network volume", f.fetch, str(volume / "in" / "link.wav"), "audio[0]", "audio")
    fails("E_DOWNLOAD", "no such file on the volume", f.fetch, str(volume / "missing.wav"), "audio[0]", "audio")
    fails("E_DOWNLOAD", "is not a file", f.fetch, str(volume / "in"), "audio[0]", "audio")


def test_other_schemes_are_refused(tmp_path):
    f = fetcher(tmp_path)
    fails("E_DOWNLOAD", "file:// URLs are not accepted", f.fetch, "file:///etc/passwd", "image", "image")
    fails("E_DOWNLOAD", "ftp:// URLs are not accepted", f.fetch, "ftp://example.com/a.png", "image", "image")


def test_url_download_and_failures(tmp_path, http_server, allow_loopback):
    base, files = http_server
    files["face.png"] = b"\x89PNG" + b"x" * 1000
    f = fetcher(tmp_path)
    assert f.fetch(f"{base}/files/face.png", "image", "image") == files["face.png"]
    fails("E_DOWNLOAD", "image: HTTP 404 for http://127.0.0.1", f.fetch, f"{base}/files/none.png", "image", "image")
    fails("E_DOWNLOAD", "after 2 tries (HTTP 503)", f.fetch, f"{base}/status/503", "image", "image")
    fails("E_DOWNLOAD", "exceeded maximum redirects", f.fetch, f"{base}/redirect-loop", "image", "image")
    fails("E_DOWNLOAD", "after 2 tries", f.fetch, f"{base}/slow", "image", "image")
    small = fetcher(tmp_path, max_input_bytes=100_000)
    fails("E_DOWNLOAD", "larger than the 0.1 MB limit", small.fetch, f"{base}/huge", "image", "image")


def test_private_addresses_are_refused(tmp_path, http_server, monkeypatch):
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)
    base, files = http_server
    files["x.png"] = b"x"
    f = fetcher(tmp_path)
    for url in (
        f"{base}/files/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.png",
        "http://localhost/a.png",
        "http://[::1]/a.png",
    ):
        fails("E_DOWNLOAD", "refused to fetch", f.fetch, url, "image", "image")


def test_messages_hide_url_secrets():
    assert (
        redact_url("https://b.s3.amazonaws.com/k.png?X-Amz-Signature=abc&token=t") == "https://b.s3.amazonaws.com/k.png"
    )


def test_s3_keys_from_the_configured_bucket(tmp_path, bucket):
    client = boto3.client(
        "s3",
        endpoint_url=bucket.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.put_object(Bucket=bucket.bucket, Key="in/a.wav", Body=b"wave")
    f = fetcher(tmp_path, s3=bucket)
    assert f.fetch(MediaObject(s3_key="in/a.wav"), "audio[0]", "audio") == b"wave"
    assert f.fetch(f"s3://{bucket.bucket}/in/a.wav", "audio[0]", "audio") == b"wave"
    fails("E_DOWNLOAD", "only the configured bucket", f.fetch, "s3://other/in/a.wav", "audio[0]", "audio")
    fails("E_DOWNLOAD", "cannot read", f.fetch, MediaObject(s3_key="in/missing.wav"), "audio[0]", "audio")
    fails("E_INPUT", "invalid S3 key", f.fetch, MediaObject(s3_key="../x"), "audio[0]", "audio")
    fails("E_DOWNLOAD", "needs a bucket", fetcher(tmp_path).fetch, MediaObject(s3_key="a"), "audio[0]", "audio")


def test_size_limit_for_inline_and_volume(tmp_path):
    f = fetcher(tmp_path, max_input_bytes=10)
    fails(
        "E_DOWNLOAD", "MB is over the 1e-05 MB limit", f.fetch, base64.b64encode(b"x" * 100).decode(), "image", "image"
    )
