from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# One intra-op thread (set before torch is imported; subprocesses inherit it): the tiny models' operations are too
# small for a second thread to pay, and on a busy 2-core machine a waiting OpenMP team spins, which made a tiny
# generation up to 5x slower (docs/testing.md). Set OMP_NUM_THREADS to choose otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """Every tiny layout, written once per test session (read-only for tests: copy before changing)."""
    from multitalk_serve.tiny import write_tiny_models

    root = tmp_path_factory.mktemp("tiny")
    write_tiny_models(root)
    return root


@pytest.fixture(scope="session")
def parity_root(tmp_path_factory) -> Path:
    """The official-parity checkpoint (original layout + MultiTalk, 1280-wide CLIP and 12 x 768 audio features)."""
    from multitalk_serve.tiny import PARITY_DIMS, write_original_layout

    root = tmp_path_factory.mktemp("parity")
    write_original_layout(root, PARITY_DIMS, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_root):
    """The tiny pipeline, loaded once for every test that generates."""
    import torch

    from multitalk_serve.engine.pipeline.generate import MultiTalkPipeline

    return MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._server.server_port}"
    server.stop()


@pytest.fixture
def bucket(s3_server):
    """A fresh bucket on the loopback S3 server; yields S3Settings for it."""
    import uuid

    import boto3

    from multitalk_serve.worker.config import S3Settings

    name = f"test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return S3Settings(s3_server, "testing", "testing", name, "us-east-1")


@pytest.fixture(scope="session")
def http_server():
    """A loopback HTTP server: /files/<name> serves registered bytes; /status/<code>, /redirect-loop, /slow,
    /huge (endless body), /redirect-to?url=... for download tests. Yields (base_url, files dict)."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            if url.path.startswith("/files/") and url.path[7:] in files:
                body = files[url.path[7:]]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif url.path.startswith("/status/"):
                self.send_response(int(url.path[8:]))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif url.path == "/redirect-loop":
                self.send_response(302)
                self.send_header("Location", "/redirect-loop")
                self.end_headers()
            elif url.path == "/redirect-to":
                self.send_response(302)
                self.send_header("Location", parse_qs(url.query)["url"][0])
                self.end_headers()
            elif url.path == "/slow":
                time.sleep(3)
                self.send_response(200)
                self.end_headers()
            elif url.path == "/huge":
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(10_000):
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", files
    server.shutdown()
