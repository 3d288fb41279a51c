"""The worker's front door holds (issue 11, "Holes found"): a trickling server cannot hold a job (total deadlines,
cancellation reaches a fetch in progress), strict JSON types, an over-long ``duration`` refused before any fetch,
messages that state the real cap and keep a URL's port, ``para`` with one speaker reported."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import runpod.serverless.utils.rp_ssrf  # noqa: F401 - the SDK imported before the clocks start

from bad_inputs import face, speech
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.errors import WorkerError
from multitalk_serve.worker.handler import Worker
from multitalk_serve.worker.media import MediaFetcher, redact_url


class Trickle:
    """A loopback server that sends one byte a second: ``/body`` after the headers (Content-Length 100), ``/headers``
    inside the headers. Records when each client went away."""

    def __init__(self):
        self.closed: list[float] = []  # monotonic time a client was seen gone
        self.requests = 0
        self.stop = threading.Event()
        trickle = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                trickle.requests += 1
                try:
                    if self.path.startswith("/headers"):
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    else:
                        self.send_response(200)
                        self.send_header("Content-Length", "100")
                        self.end_headers()
                    for _ in range(100):
                        if trickle.stop.wait(1.0):
                            return
                        self.wfile.write(b"a")
                        self.wfile.flush()
                except OSError:
                    trickle.closed.append(time.monotonic())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self):
        self.stop.set()
        self.httpd.shutdown()


@pytest.fixture
def trickle(monkeypatch):
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")  # the SSRF guard would refuse loopback
    server = Trickle()
    yield server
    server.close()


def config(tmp_path: Path, **changes) -> WorkerConfig:
    volume = tmp_path / "volume"
    volume.mkdir(exist_ok=True)
    settings = {
        "model_path": tmp_path,
        "volume_path": volume,
        "s3": None,
        "download_timeout_s": 3.0,  # per read: a byte a second never trips it
        "download_retries": 2,
        "download_deadline_s": 2.0,
        "input_deadline_s": 60.0,
        "progress_interval_s": 0.0,
    }
    return WorkerConfig(**{**settings, **changes})


def timed_failure(fn, *args) -> tuple[WorkerError, float]:
    started = time.monotonic()
    with pytest.raises(WorkerError) as exc:
        fn(*args)
    return exc.value, time.monotonic() - started


# --- 1. trickling downloads -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/body", "/headers"])
def test_a_trickling_download_stops_at_its_total_deadline(tmp_path, trickle, path):
    """One byte a second, a 3 s stall timeout, 2 tries: before, the fetch took 25 s and more; now it ends at the
    2 s deadline, says how long it waited, and its connection is cut (the server sees it go)."""
    fetcher = MediaFetcher(config(tmp_path), None)
    error, seconds = timed_failure(fetcher.fetch, f"{trickle.base}{path}?sig=secret", "audio[0]", "audio")
    assert error.code == "E_DOWNLOAD" and seconds < 2.0 + 1.0, (seconds, error.message)
    assert f"audio[0]: gave up on {trickle.base}{path} after waiting 2." in error.message, error.message
    assert "the 2 s download deadline (DOWNLOAD_DEADLINE_SECONDS)" in error.message and "secret" not in error.message
    deadline = time.monotonic() + 5
    while not trickle.closed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trickle.closed, "the trickling connection was left open"


def test_all_inputs_share_the_input_stage_deadline(tmp_path, trickle):
    fetcher = MediaFetcher(config(tmp_path, download_deadline_s=30.0, input_deadline_s=1.5), None)
    error, seconds = timed_failure(fetcher.fetch, f"{trickle.base}/body", "image", "image")
    assert error.code == "E_DOWNLOAD" and seconds < 1.5 + 1.0, seconds
    assert "the 1.5 s deadline for all of a job's inputs (INPUT_DEADLINE_SECONDS)" in error.message, error.message
    error, seconds = timed_failure(fetcher.fetch, f"{trickle.base}/body", "audio[0]", "audio")
    assert error.code == "E_DOWNLOAD" and seconds < 0.5, seconds  # the stage's time is spent


def test_cancelling_reaches_a_fetch_in_progress(tmp_path, trickle):
    cancel = threading.Event()
    fetcher = MediaFetcher(config(tmp_path, download_deadline_s=60.0), None, cancel)
    threading.Timer(0.5, cancel.set).start()
    error, seconds = timed_failure(fetcher.fetch, f"{trickle.base}/body", "image", "image")
    assert error.code == "E_CANCELLED" and "while fetching image" in error.message, error.message
    assert seconds < 0.5 + 0.5, seconds


@pytest.fixture(scope="module")
def media_b64() -> dict:
    return {"image": base64.b64encode(face()).decode(), "audio": base64.b64encode(speech(0.4)).decode()}


SMALL = {"width": 64, "height": 64, "sampling_steps": 1, "seed": 3, "mode": "clip"}


def test_a_job_with_a_trickling_input_fails_at_the_deadline(tiny_pipeline, tmp_path, trickle, media_b64):
    worker = Worker(tiny_pipeline, config(tmp_path))
    job = {"id": "trickle", "input": {"image": media_b64["image"], "audio": f"{trickle.base}/body", **SMALL}}
    started = time.monotonic()
    result = worker.run(job)
    assert result["error"].startswith("E_DOWNLOAD: audio: gave up on"), result  # the field as sent (one track)
    assert time.monotonic() - started < 2.0 + 1.5


def test_a_job_cancelled_during_its_download_ends_promptly(tiny_pipeline, tmp_path, trickle, media_b64):
    """The handler's cancel event (set when RunPod stops the job) reaches the fetch: the job thread is free at once
    for the next job."""
    worker = Worker(tiny_pipeline, config(tmp_path, download_deadline_s=60.0))
    job = {"id": "cancel", "input": {"image": f"{trickle.base}/body", "audio": media_b64["audio"], **SMALL}}
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    result = worker.run(job, cancel)
    assert result["error"].startswith("E_CANCELLED: the job was cancelled while fetching image"), result
    assert time.monotonic() - started < 0.5 + 0.7


# --- 5. smaller holes -----------------------------------------------------------------------------------------------
class NoFetch(MediaFetcher):
    def fetch(self, *args, **kwargs):
        raise AssertionError("a fetch started")


@pytest.mark.parametrize(
    ("length", "says"),
    [
        ({"duration": 3600}, "duration: 3600 s is over this worker's 600 s limit (MAX_DURATION_SECONDS)"),
        ({"duration": 600.5}, "duration: 600.5 s is over this worker's 600 s limit"),
        ({"num_frames": 15001}, "num_frames: 15001 frames (600.04 s at 25 fps) is over this worker's 600 s limit"),
    ],
)
def test_a_length_over_the_cap_is_refused_before_any_fetch(tiny_pipeline, tmp_path, monkeypatch, length, says):
    import multitalk_serve.worker.handler as handler

    monkeypatch.setattr(handler, "MediaFetcher", NoFetch)
    worker = Worker(tiny_pipeline, config(tmp_path))
    job = {"input": {"image": "https://example.com/a.png", "audio": "https://example.com/a.wav", **length}}
    started = time.monotonic()
    result = worker.run({"id": "long", **job})
    assert result["error"].startswith(f"E_INPUT: {says}"), result
    assert time.monotonic() - started < 1.0


def test_the_duration_cap_message_states_the_real_cap(tiny_pipeline, tmp_path):
    """Audio over the cap, no explicit length: the message says the cap (2 s here), not the decoder's one-frame margin."""
    import wave

    import numpy as np

    path = tmp_path / "volume" / "long.wav"
    config_ = config(tmp_path, max_duration_s=2.0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(np.arange(8000 * 5) / 10) * 9000).astype("<i2").tobytes())
    result = Worker(tiny_pipeline, config_).run(
        {"id": "cap", "input": {"image": base64.b64encode(face()).decode(), "audio": str(path), **SMALL}}
    )
    assert result["error"].startswith("E_AUDIO: audio of speaker 1: longer than the 2 s limit"), result


def test_urls_in_messages_keep_their_port_but_not_secrets():
    assert redact_url("http://127.0.0.1:8080/a.wav?X-Amz-Signature=abc") == "http://127.0.0.1:8080/a.wav"
    assert redact_url("https://user:pass@example.com:8443/a.png?token=t") == "https://example.com:8443/a.png"
    assert redact_url("http://[::1]:9000/x") == "http://[::1]:9000/x"
    assert redact_url("https://example.com/x") == "https://example.com/x"


def test_a_404_names_the_url_with_its_port(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    base, _ = http_server
    error, _ = timed_failure(MediaFetcher(config(tmp_path), None).fetch, f"{base}/files/none.png?k=v", "image", "image")
    assert error.message == f"image: HTTP 404 for {base}/files/none.png", error.message


def test_para_with_one_voice_is_reported(tiny_pipeline, tmp_path):
    """The warning lands in the result's ``warnings`` (``_options`` fills the list the result reports)."""
    from multitalk_serve.worker.schema import JobInput

    worker = Worker(tiny_pipeline, config(tmp_path))
    a, b = "https://example.com/a.wav", "https://example.com/b.wav"
    for audio, warned in (([a], True), ([a, None], True), ([None, b], True), ([a, b], False)):
        warnings: list[str] = []
        request = JobInput.model_validate({"image": "https://example.com/a.png", "audio": audio, "audio_type": "para"})
        options, _ = worker._options(request, warnings)
        assert options.audio_type == "para"
        assert any(w.startswith("audio_type: para") and "no effect" in w for w in warnings) == warned, (audio, warnings)


# --- 3. secrets in any shape stay out of every log line -------------------------------------------------------------
KEY_ID, SECRET, NUMBER = "my-access-id-4242", "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-very-secret", 918273645546372819
SHAPES = {
    "a string": f"https://s3.example.com {KEY_ID} {SECRET}",
    "a list": ["https://s3.example.com", KEY_ID, SECRET, "bucket"],
    "nested": {"credentials": {"id": KEY_ID, "value": [SECRET]}, "extra": [{"deep": {"x": SECRET}}]},
    "JSON in a string": json.dumps({"accessId": KEY_ID, "accessSecret": SECRET, "bucketName": "b"}),
    "wrong value types": {"accessId": KEY_ID, "accessSecret": [SECRET], "bucketName": 5},
    "incomplete": {"accessId": KEY_ID, "accessSecret": SECRET},
    "odd keys": {"key": KEY_ID, "pw": SECRET, "note": f'it\'s "{SECRET}"'},
    "a number": NUMBER,
}


def leaks(text: str) -> list[str]:
    return [s for s in (KEY_ID, SECRET, "very-secret", str(NUMBER)) if s in text]


@pytest.fixture
def debug_everywhere(capsys):
    """Every Python logger and the RunPod SDK's printer at DEBUG; yields a function returning all output so far."""
    import logging

    from runpod.serverless.modules.rp_logger import RunPodLogger

    from multitalk_serve.worker.logs import install

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    root, sdk = logging.getLogger(), RunPodLogger()
    handler, level, sdk_level = Collect(logging.DEBUG), root.level, sdk.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    sdk.set_level("DEBUG")
    install()

    def output() -> str:
        printed = capsys.readouterr()
        return "\n".join(records) + printed.out + printed.err

    yield output
    root.removeHandler(handler)
    root.setLevel(level)
    sdk.set_level(sdk_level)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_secret_in_any_shape_stays_out_of_every_log_line(tiny_pipeline, tmp_path, media_b64, debug_everywhere, shape):
    """The SDK's local test mode logs the whole job at DEBUG (``Retrieved local job: {...}``): an ``s3Config`` sent
    as a string appeared whole there. Each wrong shape, under RunPod's key and inside ``input``, through the SDK's
    own local runner and its local API: nothing of the secret in any output."""
    import asyncio

    from fastapi.testclient import TestClient
    from runpod.serverless.modules.rp_fastapi import WorkerAPI
    from runpod.serverless.modules.rp_local import run_local

    worker = Worker(tiny_pipeline, config(tmp_path))
    value = SHAPES[shape]
    jobs = [
        {"input": {**media_b64, **SMALL}, "s3Config": value},
        {"input": {**media_b64, **SMALL, "sampling_steps": 0}, "s3_config": value},  # (a key we do not read)
        {"input": {**media_b64, **SMALL, "s3Config": value}},
        {"input": {**media_b64, **SMALL, "credentials": value, "prompt": f"password={SECRET}"}},
    ]
    for job in jobs:
        with pytest.raises(SystemExit):  # the SDK's local runner exits 1 on a failed job
            asyncio.run(run_local({"handler": worker.handle, "rp_args": {"test_input": job}}))
    client = TestClient(WorkerAPI({"handler": worker.handle}).rp_app)
    for job in jobs[2:]:
        assert client.post("/runsync", json=job).json()["status"] == "FAILED"
    text = debug_everywhere()
    assert "Retrieved local job" in text and "s3Config" in text  # the SDK did log the jobs
    assert leaks(text) == [], (shape, leaks(text))


def test_scrub_redacts_a_secret_key_whatever_the_value_and_its_rendering():
    from multitalk_serve.worker.logs import scrub

    for shape, value in SHAPES.items():
        for key in ("s3Config", "s3_config", "S3CONFIG", "accessSecret", "aws_secret_access_key", "password", "token"):
            job = {"id": "j", "input": {"prompt": "hi", key: value}, key: value}
            for text in (
                str(job),
                json.dumps(job),
                repr(json.dumps(job)),
                json.dumps(json.dumps(job)),
                f"{key}={value}",
            ):
                assert leaks(scrub(text)) == [], (shape, key, text, scrub(text))
    kept = scrub(str({"id": "j", "input": {"prompt": "hello", "sampling_steps": 4}}))
    assert kept == str({"id": "j", "input": {"prompt": "hello", "sampling_steps": 4}})
    assert scrub("GET https://user:pw@example.com:8443/a.png?X-Amz-Signature=s") == (
        "GET https://<redacted>@example.com:8443/a.png?<query redacted>"
    )


# --- scrubbing at the speed of the job loop -------------------------------------------------------------------------
def _reference_scrub(text: str) -> str:
    """``scrub`` as first written: the key regex tried at every position, every pattern run on every text."""
    import re

    from multitalk_serve.worker import logs

    out, pos = [], 0
    while (match := logs._KEY.search(text, pos)) is not None:
        start = match.end()
        end = logs._value_end(text, start, structured=bool(match.group(1)))
        out.append(text[pos:start])
        if end > start:
            quote = text[start] if text[start] in "'\"" else ""
            out.append(f"{quote}<redacted>{quote}")
        pos = end if end > start else start
    out.append(text[pos:])
    text = "".join(out)
    for pattern, replacement in [
        (r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=\s]+", "<data-uri redacted>"),
        (r"[A-Za-z0-9+/]{120,}={0,2}", lambda m: f"<{len(m.group(0))} base64 characters redacted>"),
        (r"(Credential=|Signature=|X-Amz-Credential=|X-Amz-Signature=)[^\s,;&'\"]+", r"\1<redacted>"),
        (r"\b(?:AKIA|ASIA)[0-9A-Z]{12,}\b", "<access key redacted>"),
        (r"(https?://[^\s'\"?]+)\?[^\s'\"]*", r"\1?<query redacted>"),
    ]:
        text = re.sub(pattern, replacement, text)
    return re.sub(r"(\b[a-z][a-z0-9+.-]*://)[^\s/@'\"]+@", r"\1<redacted>@", text, flags=re.IGNORECASE)


PIECES = [
    *("s3Config", "S3_CONFIG", "s3-config", "accessSecret", "AccessId", "access_key_id", "secret", "secret_x", "tok"),
    *("token", "TOKEN", "Passwd", "password", "api-key", "apikey", "aws_session_token", "credential", "credentials"),
    *("authorization", "x-amz-security-token", "X-Amz-", "s3", "'", '"', "\\", '\\"', "\\\\'", ":", "=", " ", ",", "{"),
    *("}", "[", "]", "(", ")", "b'", "\n", "&", ";", "@", "?", "://", "https://", "data:image/png;base64,", "AKIA"),
    *("ASIA", "ABCDEFGHIJKLMNOP", "Signature=", "X-Amz-Credential=", "user:pw@", "A" * 130, "aGVsbG8+/w==", "=="),
    *("\u017f", "\u212a", "\u0130", "\u0131", "é"),  # letters that IGNORECASE matches to ASCII ones, and others
    *("'s3Config': ", '"token": "', '\\"password\\": \\"', "{'accessSecret': '", "\\\\'secret\\\\': ", "token="),
]


def test_scrub_gives_what_the_plain_regex_search_gives():
    """The fast paths (key search only where a key can start, patterns only where their literal text occurs) change
    nothing in what is redacted: 2000 texts made of keys, quotes, escapes, structure, URLs, base64 and letters that
    IGNORECASE matches to ASCII ones, each scrubbed both ways."""
    import random

    from multitalk_serve.worker.logs import scrub

    rng = random.Random(0)
    alphabet = "aZ09 :=,'\"\\{}[]()@?/+.-_\n\u017f\u212a\u0130é"
    for _ in range(2000):
        parts = [
            rng.choice(PIECES) if rng.random() < 0.7 else "".join(rng.choices(alphabet, k=rng.randint(1, 4)))
            for _ in range(rng.randint(0, 40))
        ]
        if rng.random() < 0.3:  # a job as the SDK and we render it, with some of the above as keys and values
            job = {"id": "j", "input": {rng.choice(PIECES): "".join(parts[:5]), "prompt": "".join(parts[5:])}}
            parts = [rng.choice((str, json.dumps, lambda j: repr(json.dumps(j))))(job)]
        text = "".join(parts)
        assert scrub(text) == _reference_scrub(text), text


def test_scrubbing_a_job_with_megabytes_of_base64_is_fast():
    """The SDK logs whole jobs at DEBUG: scrubbing 2 MB of inline media took about 4 s (the key regex at every
    position); now about 0.15 s."""
    from multitalk_serve.worker.logs import scrub

    payload = base64.b64encode(np.random.default_rng(0).bytes(1_500_000)).decode()
    job = {"id": "j", "input": {"image": payload, "audio": "https://u:p@example.com/a.wav?X-Amz-Signature=s"}}
    for text in (str(job), json.dumps(job)):
        started = time.perf_counter()
        cleaned = scrub(text)
        seconds = time.perf_counter() - started
        assert payload[:200] not in cleaned and "u:p@" not in cleaned and "X-Amz-Signature=s" not in cleaned
        assert seconds < 2.0, seconds  # (was 4 s for each on an idle machine)


def test_the_sdk_printer_scrubs_only_what_it_prints(capsys, monkeypatch):
    """A DEBUG line under the SDK's INFO level is neither printed nor scrubbed; one at its level is both."""
    from runpod.serverless.modules.rp_logger import RunPodLogger

    from multitalk_serve.worker import logs

    logs.install()
    calls: list[str] = []
    monkeypatch.setattr(logs, "scrub", lambda text: calls.append(text) or "<scrubbed>")
    sdk = RunPodLogger()
    level = sdk.level
    try:
        sdk.level = "INFO"
        sdk.debug({"input": {"s3Config": {"accessSecret": "x"}}})
        assert calls == [] and capsys.readouterr().out == ""
        sdk.info({"input": {"s3Config": {"accessSecret": "x"}}})
        assert len(calls) == 1 and "<scrubbed>" in capsys.readouterr().out
    finally:
        sdk.level = level
