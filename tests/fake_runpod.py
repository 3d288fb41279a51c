"""A fake RunPod on loopback: the worker protocol the SDK's production loop uses, and the public endpoint API.

Worker side: the worker process runs the real ``runpod`` SDK job loop (``RUNPOD_WEBHOOK_GET_JOB`` set): it long-polls
``job-take``, posts progress and results to ``job-done`` (form-encoded bodies holding JSON), polls ``job-stop`` for
cancellations and pings. Tests queue jobs, read what the worker posted, and request stops.

Client side (what ``runpod.Endpoint`` calls, ``runpod/endpoint/runner.py``; set ``runpod.endpoint_url_base`` to
``fake.api_base``): ``POST /v2/{endpoint}/run`` and ``/runsync``, ``GET /status/{id}``, ``POST /cancel/{id}``,
``GET /health``, ``GET /stream/{id}`` (the items the worker streamed since the last call: ``{"id", "status",
"stream": [{"output": item}, ...]}``; ``on_stream_poll`` lets a test post items between polls), with RunPod's bodies: ``{"id", "status"}`` then ``IN_QUEUE``, ``IN_PROGRESS`` (with the latest
progress ``output``), ``COMPLETED`` (``output``), ``FAILED`` (``error``, no ``output``) or ``CANCELLED``; a request
without ``Authorization: Bearer ...`` gets 401.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class FakeRunPod:
    def __init__(self, runsync_wait: float = 90.0):
        self.jobs: queue.Queue[dict] = queue.Queue()
        self.posts: list[dict] = []  # {"kind": "done"|"stream", "job": id, "query": ..., "body": json}
        self.stops: queue.Queue[str] = queue.Queue()
        self.pings = 0
        self.polled = False  # a worker has asked for a job
        self.states: dict[str, dict] = {}  # job id -> RunPod's status body (jobs sent through the public API)
        self.runsync_wait = runsync_wait  # RunPod answers /runsync with IN_PROGRESS after this long
        self.streams: dict[str, list] = {}  # job id -> streamed items not yet read through /stream
        self.stream_polls: dict[str, int] = {}  # job id -> GET /stream calls so far
        self.on_stream_poll = None  # optional (job_id, poll number from 1) -> None, called before a /stream answer
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
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

            def _authorized(self) -> bool:
                if (self.headers.get("Authorization") or "").startswith("Bearer "):
                    return True
                self._send(401, {"error": "Unauthorized"})
                return False

            def do_GET(self):
                path = urlparse(self.path).path
                if "/job-take/" in path:
                    server.polled = True
                    job = server.take()
                    return self._send(200, job) if job else self._send(204)
                if "/job-stop/" in path:
                    try:
                        job_id = server.stops.get(timeout=1.0)
                    except queue.Empty:
                        return self._send(204)
                    return self._send(200, {"jobsToStop": [job_id]})
                if "/ping/" in path:
                    server.pings += 1
                    return self._send(200, {})
                parts = path.strip("/").split("/")  # v2, endpoint, op[, id]
                if len(parts) < 3 or parts[0] != "v2" or not self._authorized():
                    return None if len(parts) >= 3 and parts[0] == "v2" else self._send(404, {})
                if parts[2] == "status" and len(parts) == 4:
                    state = server.status(parts[3])
                    return self._send(200, state) if state else self._send(404, {"error": "job not found"})
                if parts[2] == "stream" and len(parts) == 4:
                    state = server.stream(parts[3])
                    return self._send(200, state) if state else self._send(404, {"error": "job not found"})
                if parts[2] == "health":
                    return self._send(200, server.health())
                return self._send(404, {})

            def do_POST(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                parts = url.path.strip("/").split("/")
                if "/job-done/" in url.path or "/job-stream/" in url.path:
                    kind = "stream" if "/job-stream/" in url.path else "done"
                    job_id = parts[-1]
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = {"raw": raw}
                    server.record(kind, job_id, url.query, body)
                    return self._send(200, {})
                if len(parts) >= 3 and parts[0] == "v2" and self._authorized():
                    op = parts[2]
                    if op in ("run", "runsync"):
                        try:
                            body = json.loads(raw or "null")
                        except ValueError:
                            body = None
                        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
                            return self._send(400, {"error": 'the body must be {"input": {...}}'})
                        job_id = server.submit(body)
                        if op == "run":
                            return self._send(200, {"id": job_id, "status": "IN_QUEUE"})
                        return self._send(200, server.wait_final(job_id, server.runsync_wait))
                    if op == "cancel" and len(parts) == 4:
                        state = server.cancel(parts[3])
                        return self._send(200, state) if state else self._send(404, {"error": "job not found"})
                return self._send(404, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.api_base = f"http://127.0.0.1:{self.httpd.server_port}/v2"  # runpod.endpoint_url_base
        self.base = f"{self.api_base}/ep"

    # --- the platform's bookkeeping ---------------------------------------------------------------------------
    def submit(self, body: dict) -> str:
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        with self.lock:
            self.states[job_id] = {"id": job_id, "status": "IN_QUEUE"}
        self.jobs.put({"id": job_id, **body})
        return job_id

    def take(self) -> dict | None:
        """The next job for the worker (jobs cancelled while queued are skipped)."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                job = self.jobs.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            with self.lock:
                state = self.states.get(job["id"])
                if state is not None and state["status"] == "CANCELLED":
                    continue
                if state is not None:
                    state["status"] = "IN_PROGRESS"
                self.changed.notify_all()
            return job

    def record(self, kind: str, job_id: str, query: str, body: dict) -> None:
        with self.lock:
            self.posts.append({"kind": kind, "job": job_id, "query": query, "body": body})
            state = self.states.get(job_id)
            if state is not None and kind == "stream":
                self.streams.setdefault(job_id, []).append(body.get("output"))
            if state is not None and state["status"] not in FINAL and kind == "done":
                if body.get("status") == "IN_PROGRESS":
                    state["output"] = body.get("output")
                elif body.get("error") is not None:
                    self.states[job_id] = {"id": job_id, "status": "FAILED", "error": body["error"]}
                else:
                    self.states[job_id] = {"id": job_id, "status": "COMPLETED", "output": body.get("output")}
            self.changed.notify_all()

    def status(self, job_id: str) -> dict | None:
        with self.lock:
            state = self.states.get(job_id)
            return dict(state) if state is not None else None

    def stream(self, job_id: str) -> dict | None:
        """``GET /stream/{id}``: the status, and the items streamed since the last call."""
        with self.lock:
            if job_id not in self.states:
                return None
            self.stream_polls[job_id] = polls = self.stream_polls.get(job_id, 0) + 1
        if self.on_stream_poll is not None:
            self.on_stream_poll(job_id, polls)
        with self.lock:
            state = self.states[job_id]
            items = self.streams.pop(job_id, [])
            body = {"id": job_id, "status": state["status"], "stream": [{"output": item} for item in items]}
            if "error" in state:
                body["error"] = state["error"]
            return body

    def wait_final(self, job_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.states[job_id]["status"] not in FINAL and time.monotonic() < deadline:
                self.changed.wait(timeout=max(0.01, deadline - time.monotonic()))
            return dict(self.states[job_id])

    def cancel(self, job_id: str) -> dict | None:
        with self.lock:
            state = self.states.get(job_id)
            if state is None:
                return None
            if state["status"] not in FINAL:
                running = state["status"] == "IN_PROGRESS"
                self.states[job_id] = {"id": job_id, "status": "CANCELLED"}
                if running:
                    self.stops.put(job_id)
                self.changed.notify_all()
            return {"id": job_id, "status": self.states[job_id]["status"]}

    def health(self) -> dict:
        with self.lock:
            counts = {s: sum(1 for st in self.states.values() if st["status"] == s) for s in (*FINAL, "IN_QUEUE")}
            running = sum(1 for st in self.states.values() if st["status"] == "IN_PROGRESS")
        ready = 1 if self.polled else 0
        return {
            "jobs": {
                "completed": counts["COMPLETED"],
                "failed": counts["FAILED"],
                "inProgress": running,
                "inQueue": counts["IN_QUEUE"],
                "retried": 0,
            },
            "workers": {
                "idle": max(0, ready - running),
                "initializing": 0,
                "ready": ready,
                "running": min(ready, running),
                "throttled": 0,
                "unhealthy": 0,
            },
        }

    # --- worker side ------------------------------------------------------------------------------------------
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


def start_worker(env: dict[str, str], log_path: Path, command: list[str] | None = None) -> subprocess.Popen:
    """``python -m multitalk_serve.worker`` (or ``command``) in production mode, output to ``log_path``."""
    full = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process by the caller
    return subprocess.Popen(
        command or [sys.executable, "-m", "multitalk_serve.worker"], env=full, stdout=log, stderr=subprocess.STDOUT
    )
