"""Fetching a job's media: http(s) URL, data URI or plain base64, a path on the network volume, an S3 key.

URLs go through the RunPod SDK's SSRF-safe fetch (public addresses only, every redirect re-checked, connection
pinned to the checked address) with a size cap, a stall timeout and retries. Every network fetch (URL or S3) also
has a total deadline (``DOWNLOAD_DEADLINE_SECONDS``, retries included) and all of a job's inputs share one
(``INPUT_DEADLINE_SECONDS``): a server trickling one byte a second cannot hold a job. A fetch runs in a helper
thread; past its deadline, or when the job is cancelled, its sockets are shut down and the job goes on at once.
Volume paths must resolve (symlinks too) inside the volume. Every failure is a ``WorkerError`` naming the field,
never echoing base64 or URL secrets.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .config import S3Settings, WorkerConfig
from .errors import WorkerError
from .schema import Media, MediaObject

# Raw base64 of a JPEG starts with "/9j/": a string that is long, well-formed base64 is data, not a volume path
# (paths have a '.', '-' or '_' somewhere, which base64's alphabet lacks).
RAW_BASE64 = re.compile(r"[A-Za-z0-9+/]{60,}={0,2}")
DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*)(;base64)?,(.*)$", re.DOTALL)
RELATIVE_PATH = re.compile(r"(?:[\w .-]+/)*[\w .-]+\.[A-Za-z0-9]{1,5}")  # e.g. examples/multi/1/multi1.png
EXPECTED_TYPES = {
    "image": ("image/",),
    "audio": ("audio/", "video/", "application/octet-stream"),
    "video": ("video/", "application/octet-stream"),
    "source": ("image/", "video/", "application/octet-stream"),  # the official JSON's cond_video: either
    "voice": ("application/",),  # a Kokoro voice file (a torch .pt)
}
VIDEO_KINDS = ("video", "source")  # fetched under MAX_VIDEO_MB instead of MAX_INPUT_MB
CHUNK = 1 << 16


def redact_url(url: str) -> str:
    """scheme://host[:port]/path only: query strings and user:password@ often carry signatures or tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a port that is not a number
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


# --- cutting off a fetch in progress ----------------------------------------------------------------------------
_local = threading.local()
_hook_lock = threading.Lock()


class _Watch:
    """The sockets one fetch thread opened (urllib3: the SDK's fetch and botocore), shut down on ``abort``."""

    def __init__(self) -> None:
        self.aborted = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            aborted = self.aborted.is_set()
        if aborted:
            _shut(sock)

    def abort(self) -> None:
        with self._lock:
            self.aborted.set()
            sockets = list(self._sockets)
        for sock in sockets:  # a recv blocked in the fetch thread returns at once
            _shut(sock)

    def check(self) -> None:
        if self.aborted.is_set():
            raise _Aborted()


class _Aborted(Exception):
    pass


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _install_socket_hook() -> None:
    """Let a fetch thread see the sockets urllib3 opens for it (every other thread is left alone)."""
    from urllib3.util import connection

    with _hook_lock:
        if getattr(connection.create_connection, "_multitalk_watched", False):
            return
        original = connection.create_connection

        def create_connection(*args, **kwargs):
            sock = original(*args, **kwargs)
            watch = getattr(_local, "watch", None)
            if watch is not None:
                watch.add(sock)
            return sock

        create_connection._multitalk_watched = True
        connection.create_connection = create_connection


class MediaFetcher:
    """Fetches one job's media. ``cancel`` (the job's cancel event) stops a fetch in progress; all fetches of one
    fetcher share the input stage's deadline, counted from its creation."""

    def __init__(self, config: WorkerConfig, s3: S3Settings | None, cancel: threading.Event | None = None):
        self.config = config
        self.s3 = s3
        self.cancel = cancel or threading.Event()
        self.started = time.monotonic()
        self.stage_deadline = self.started + config.input_deadline_s
        self._limit, self._limit_name = config.max_input_bytes, "MAX_INPUT_MB"  # of the fetch in progress

    def fetch(self, media: Media, field: str, kind: str) -> bytes:
        """The bytes of one media input. ``kind`` is ``image``, ``audio``, ``video`` or ``source`` (an image or a
        video): it checks data-URI types and sets the size limit (``MAX_VIDEO_MB`` for a video, else
        ``MAX_INPUT_MB``)."""
        self._limit, self._limit_name = (
            (self.config.max_video_bytes, "MAX_VIDEO_MB")
            if kind in VIDEO_KINDS
            else (self.config.max_input_bytes, "MAX_INPUT_MB")
        )
        if self.cancel.is_set():
            raise WorkerError("E_CANCELLED", f"the job was cancelled before {field} was fetched")
        if isinstance(media, MediaObject):
            if media.url is not None:
                return self._url(media.url, field)
            if media.base64 is not None:
                return self._base64(media.base64, field, kind)
            if media.path is not None:
                return self._volume(media.path, field)
            return self._s3(media.s3_key, field)
        text = media.strip()
        if text.startswith(("http://", "https://")):
            return self._url(text, field)
        if text.startswith("data:"):
            return self._base64(text, field, kind)
        if text.startswith("s3://"):
            bucket, _, key = text[5:].partition("/")
            if self.s3 is not None and bucket != self.s3.bucket:
                raise WorkerError("E_DOWNLOAD", f"{field}: only the configured bucket can be read, not {bucket!r}")
            return self._s3(key, field)
        if text.startswith("/") and not (len(text) % 4 == 0 and RAW_BASE64.fullmatch(text)):
            return self._volume(text, field)
        if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.IGNORECASE):
            scheme = text.split("://", 1)[0]
            raise WorkerError("E_DOWNLOAD", f"{field}: {scheme}:// URLs are not accepted (http, https, s3)")
        if RELATIVE_PATH.fullmatch(text):  # base64 has no '.': this is a file name, as the official JSON files use
            raise WorkerError(
                "E_INPUT",
                f"{field}: {text} is a relative path; give an absolute path on the network volume "
                f'({self.config.volume_path}/{text}), or {{"path": "{text}"}} for one relative to the volume, '
                "or a URL or base64",
            )
        return self._base64(text, field, kind)

    # --- sources ----------------------------------------------------------------------------------------------
    def _check_size(self, size: int, field: str) -> None:
        if size > self._limit:
            limit = f"{self._limit / 1e6:.3g} MB limit ({self._limit_name})"
            raise WorkerError("E_DOWNLOAD", f"{field}: {size / 1e6:.3g} MB is over the {limit}")

    def _base64(self, text: str, field: str, kind: str) -> bytes:
        payload = text
        if text.startswith("data:"):
            match = DATA_URI.match(text)
            if not match or not match.group(3):
                raise WorkerError("E_INPUT", f"{field}: a data URI must be data:<type>;base64,<data>")
            mime = (match.group(1) or "").lower()
            if mime and not mime.startswith(EXPECTED_TYPES[kind]):
                raise WorkerError("E_INPUT", f"{field}: a data URI of type {mime} where {kind} was expected")
            payload = match.group(4)
        compact = re.sub(r"\s+", "", payload)
        self._check_size(len(compact) * 3 // 4, field)
        try:
            data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise WorkerError(
                "E_INPUT", f"{field}: not a URL, a volume path or valid base64 ({len(text)} characters)"
            ) from None
        if not data:
            raise WorkerError("E_INPUT", f"{field}: empty")
        return data

    def _volume(self, path: str, field: str) -> bytes:
        """An absolute path, or (object form) one relative to the volume; it must resolve inside the volume."""
        root = self.config.volume_path.resolve()
        candidate = Path(path) if Path(path).is_absolute() else root / path
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise WorkerError("E_DOWNLOAD", f"{field}: no such file on the volume: {path}") from None
        if not resolved.is_relative_to(root):
            raise WorkerError("E_DOWNLOAD", f"{field}: {path} is outside the network volume {root}")
        if not resolved.is_file():
            raise WorkerError("E_DOWNLOAD", f"{field}: {path} is not a file")
        self._check_size(resolved.stat().st_size, field)
        return resolved.read_bytes()

    # --- network fetches: bounded in total time, cancellable --------------------------------------------------
    def _bounded(self, field: str, shown: str, work: Callable[[_Watch, dict], bytes]) -> bytes:
        """Run ``work`` in a helper thread and wait for it until the fetch's deadline (the sooner of
        ``download_deadline_s`` from now and the input stage's), or until the job is cancelled. ``work`` gets the
        watch (it checks ``watch.aborted`` between reads) and a dict where it notes ``tries`` and ``last``."""
        _install_socket_hook()
        start = time.monotonic()
        own = start + self.config.download_deadline_s
        deadline = min(own, self.stage_deadline)
        watch, state, box = _Watch(), {"tries": 0, "last": ""}, {}
        done = threading.Event()

        def run() -> None:
            _local.watch = watch
            try:
                box["data"] = work(watch, state)
            except BaseException as exc:  # handed to the job thread
                box["error"] = exc
            finally:
                _local.watch = None
                done.set()

        threading.Thread(target=run, name=f"multitalk-fetch-{field}", daemon=True).start()
        while not done.wait(min(0.05, max(deadline - time.monotonic(), 0.0))):
            waited = time.monotonic() - start
            if self.cancel.is_set():
                watch.abort()
                raise WorkerError("E_CANCELLED", f"the job was cancelled while fetching {field} (after {waited:.1f} s)")
            if time.monotonic() >= deadline:
                watch.abort()
                tries = f"{state['tries']} {'try' if state['tries'] == 1 else 'tries'}"
                last = state["last"] or "still receiving"
                if own <= self.stage_deadline:
                    limit = f"the {self.config.download_deadline_s:g} s download deadline (DOWNLOAD_DEADLINE_SECONDS)"
                else:
                    limit = (
                        f"the {self.config.input_deadline_s:g} s deadline for all of a job's inputs "
                        "(INPUT_DEADLINE_SECONDS)"
                    )
                raise WorkerError(
                    "E_DOWNLOAD", f"{field}: gave up on {shown} after waiting {waited:.1f} s, {limit}; {tries} ({last})"
                )
        if "error" in box:
            raise box["error"]
        return box["data"]

    def _url(self, url: str, field: str) -> bytes:
        import runpod.serverless.utils.rp_ssrf  # noqa: F401 - imported here, not on the deadline's time

        shown = redact_url(url)
        return self._bounded(field, shown, lambda watch, state: self._url_tries(url, shown, field, watch, state))

    def _url_tries(self, url: str, shown: str, field: str, watch: _Watch, state: dict) -> bytes:
        from runpod.serverless.utils.rp_ssrf import SSRFError, iter_content_capped, safe_get

        for attempt in range(max(1, self.config.download_retries)):
            if attempt and watch.aborted.wait(min(2**attempt, 8) * 0.5):
                raise _Aborted()
            state["tries"] = attempt + 1
            try:
                response = safe_get(url, timeout=self.config.download_timeout_s, max_bytes=self._limit)
            except SSRFError as exc:
                raise WorkerError("E_DOWNLOAD", f"{field}: refused to fetch {shown}: {_reason(exc)}") from None
            except Exception as exc:  # connection errors, timeouts: retried
                watch.check()
                state["last"] = f"{type(exc).__name__}"
                continue
            try:
                if response.status_code >= 500 or response.status_code == 429:
                    state["last"] = f"HTTP {response.status_code}"
                    continue
                if response.status_code != 200:
                    raise WorkerError("E_DOWNLOAD", f"{field}: HTTP {response.status_code} for {shown}")
                chunks = []
                try:
                    for chunk in iter_content_capped(response, CHUNK, self._limit):
                        watch.check()
                        chunks.append(chunk)
                except SSRFError:
                    raise WorkerError(
                        "E_DOWNLOAD",
                        f"{field}: {shown} is larger than the {self._limit / 1e6:.3g} MB limit ({self._limit_name})",
                    ) from None
                except _Aborted:
                    raise
                except Exception as exc:
                    watch.check()
                    state["last"] = type(exc).__name__
                    continue
                data = b"".join(chunks)
                if not data:
                    raise WorkerError("E_DOWNLOAD", f"{field}: {shown} returned no data")
                return data
            finally:
                response.close()
        raise WorkerError(
            "E_DOWNLOAD", f"{field}: could not fetch {shown} after {state['tries']} tries ({state['last']})"
        )

    def _s3(self, key: str | None, field: str) -> bytes:
        if self.s3 is None:
            raise WorkerError(
                "E_DOWNLOAD", f"{field}: an S3 key needs a bucket (s3Config or the worker's BUCKET_* settings)"
            )
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise WorkerError("E_INPUT", f"{field}: invalid S3 key")
        return self._bounded(
            field, f"s3://{self.s3.bucket}/{key}", lambda watch, state: self._s3_read(key, field, watch, state)
        )

    def _s3_read(self, key: str, field: str, watch: _Watch, state: dict) -> bytes:
        from .storage import s3_client

        state["tries"] = 1
        client = s3_client(self.s3)
        try:
            head = client.head_object(Bucket=self.s3.bucket, Key=key)
            self._check_size(int(head["ContentLength"]), field)
            body = client.get_object(Bucket=self.s3.bucket, Key=key)["Body"]
            chunks, total = [], 0
            for chunk in body.iter_chunks(CHUNK):
                watch.check()
                total += len(chunk)
                self._check_size(total, field)
                chunks.append(chunk)
            return b"".join(chunks)
        except (WorkerError, _Aborted):
            raise
        except Exception as exc:
            watch.check()
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            raise WorkerError("E_DOWNLOAD", f"{field}: cannot read s3://{self.s3.bucket}/{key} ({code})") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    return re.sub(r"https?://\S+", lambda m: redact_url(m.group(0)), text)
