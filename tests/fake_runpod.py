"""A fake RunPod job server on loopback, speaking the worker protocol the SDK's production loop uses.

The worker process runs the real ``runpod`` SDK job loop (``RUNPOD_WEBHOOK_GET_JOB`` set): it long-polls
``job-take``, posts progress and results to ``job-done`` (form-encoded bodies holding JSON), polls ``job-stop`` for
cancellations and pings. Tests queue jobs, read what the worker posted, and request stops.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse


class FakeRunPod:
    def __init__(self):
        self.jobs: queue.Queue[dict] = queue.Queue()
        self.posts: list[dict] = []  # {"kind": "done"|"stream", "job": id, "query": ..., "body": json}
        self.stops: queue.Queue[str] = queue.Queue()
        self.pings = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlparse(self.path).path
                if "/job-take/" in path:
                    try:
                        job = server.jobs.get(timeout=1.0)
                    except queue.Empty:
                        return self._send(204)
                    return self._send(200, job)
                if "/job-stop/" in path:
                    try:
                        job_id = server.stops.get(timeout=1.0)
                    except queue.Empty:
                        return self._send(204)
                    return self._send(200, {"jobsToStop": [job_id]})
                if "/ping/" in path:
                    server.pings += 1
                    return self._send(200, {})
                return self._send(404, {})

            def do_POST(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                kind = "stream" if "/job-stream/" in url.path else "done"
                job_id = url.path.rstrip("/").split("/")[-1]
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw}
                with server.lock:
                    server.posts.append({"kind": kind, "job": job_id, "query": url.query, "body": body})
                return self._send(200, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}/v2/ep"

    def env(self) -> dict[str, str]:
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.base}/job-take/$RUNPOD_POD_ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.base}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_WEBHOOK_PING": f"{self.base}/ping/$RUNPOD_POD_ID?gpu=test",
            "RUNPOD_AI_API_KEY": "test-key",
            "RUNPOD_POD_ID": "worker-1",
            "RUNPOD_ENDPOINT_ID": "ep",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_PING_INTERVAL": "1000",
        }

    def posts_for(self, job_id: str) -> list[dict]:
        with self.lock:
            return [p for p in self.posts if p["job"] == job_id]

    def final(self, job_id: str) -> dict | None:
        """The job's result body (the job-done post that is not a progress update)."""
        for post in self.posts_for(job_id):
            if post["kind"] == "done" and post["body"].get("status") != "IN_PROGRESS":
                return post["body"]
        return None

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}")

    def close(self):
        self.httpd.shutdown()


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``python -m multitalk_serve.worker`` in production mode, output to ``log_path``."""
    full = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process by the caller
    return subprocess.Popen(
        [sys.executable, "-m", "multitalk_serve.worker"], env=full, stdout=log, stderr=subprocess.STDOUT
    )
