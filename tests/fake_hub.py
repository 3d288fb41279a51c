"""A fake Hugging Face Hub on loopback, close enough to the real one for ``huggingface_hub`` 2.4.0's HTTP download path.

Emulated (checked against the client's code, see ``tests/test_fake_hub.py``):

* ``GET /api/models/{repo_id}[/revision/{rev}]`` (``model_info`` / ``repo_info``): the Hub's JSON, with ``siblings``
  carrying ``size``, ``blobId`` (git blob oid; for LFS files the oid of the LFS pointer) and ``lfs``
  (``sha256``, ``size``, ``pointerSize``) when ``blobs=true`` is asked for, as ``files_metadata=True`` does.
* ``GET /api/models/{repo_id}/tree/{rev}[/{path}]`` (``list_repo_tree``, hence ``snapshot_download``), one page.
* ``HEAD``/``GET /{repo_id}/resolve/{rev}/{path}``: plain git files answer 200 with ``ETag: "<git blob oid>"``,
  ``X-Repo-Commit`` and ``Content-Length``; LFS files answer 302 to a signed "CDN" URL with ``X-Linked-Etag:
  "<sha256>"``, ``X-Linked-Size``, ``X-Repo-Commit`` and ``ETag``. No Xet headers are ever sent, so the client takes
  its plain HTTP path even when ``hf_xet`` is installed.
* The CDN (``GET /cdn/<sha256>?...``) listens on a *second port* of the same ``FakeHub``: the client only treats a
  redirect target as a CDN when its origin (scheme, host, port) differs from the Hub's (``_is_same_or_hub_host``).
  So, as with the real Hub, the metadata ``HEAD`` stops at the 302, ``hf_hub_download`` drops the ``authorization``
  header for the CDN GET, and httpx strips it when it follows a GET redirect itself. CDN URLs are signed: a URL
  that was tampered with, has expired (``cdn_url_ttl``) or was revoked (``expire_cdn_urls()``) gets 403.
* ``Range: bytes=START-``, ``START-END`` and ``-SUFFIX`` on content responses (206 + ``Content-Range``; 416 when
  unsatisfiable), ``Accept-Ranges: bytes``.
* Errors with the Hub's ``X-Error-Code`` headers: ``RepoNotFound`` (401 anonymous, 404 with a valid token, as the
  Hub does), ``RevisionNotFound`` (404), ``EntryNotFound`` (404, with ``X-Repo-Commit``), ``GatedRepo`` (401 on
  ``/resolve`` of a gated repo without a valid token; the API stays readable, as on the Hub). Optionally, an
  unknown token gets 401 ``Invalid credentials in Authorization header`` like the Hub (``reject_unknown_tokens``).
* Fault injection per file path: ``truncate()``, ``fail()``, ``corrupt()``, plus ``throttle()``; and a log of every
  request (``requests``, ``content_gets()``).

Not emulated: other repo types (datasets, spaces), uploads and every other API route, Xet storage, gzip
``Content-Encoding`` of text files, pagination of tree listings, multi-range requests (answered 200 in full),
rate limits, and per-user access lists for gated repos (every valid token may read every gated repo). Repos hold
exactly the files given to ``add_repo`` (no automatic ``.gitattributes``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".gguf", ".pth", ".bin", ".pt", ".model", ".ckpt", ".h5", ".onnx", ".msgpack")
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses plain git files above 10 MiB: bigger files are LFS files
CHUNK = 1024 * 1024
_FIXED_DATE = "2024-01-01T00:00:00.000Z"
_CORRUPT = bytes(b ^ 0xFF for b in range(256))  # bytes.translate table: every byte changes, the size does not


def _is_lfs(path: str, size: int) -> bool:
    return path.lower().endswith(LFS_SUFFIXES) or size > LFS_THRESHOLD


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """One file's content and the hashes the Hub reports for it."""

    source: bytes | Path
    size: int
    sha256: str
    git_oid: str  # sha1 of b"blob <size>\\0" + content
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """The git blob id the Hub lists: the content's for git files, the LFS pointer's for LFS files."""
        return _git_oid(self.pointer) if self.lfs else self.git_oid

    @property
    def etag(self) -> str:
        """What ``get_hf_file_metadata`` reports as ``etag``: the sha256 for LFS files, else the git blob id."""
        return self.sha256 if self.lfs else self.git_oid

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Content bytes ``start`` to ``end`` (exclusive), in chunks of at most ``CHUNK``."""
        if isinstance(self.source, bytes):
            view = memoryview(self.source)
            for offset in range(start, end, CHUNK):
                yield bytes(view[offset : min(end, offset + CHUNK)])
            return
        with open(self.source, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise OSError(f"{self.source} shrank while being served")
                left -= len(data)
                yield data


def make_blob(content: bytes | Path, path_in_repo: str) -> Blob:
    """Hash ``content`` (bytes, or a file streamed from disk) the way the Hub does."""
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        return Blob(data, len(data), hashlib.sha256(data).hexdigest(), _git_oid(data), _is_lfs(path_in_repo, len(data)))
    if isinstance(content, os.PathLike):
        source = Path(content)
        size = source.stat().st_size
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
        with open(source, "rb") as f:
            while data := f.read(8 * CHUNK):
                sha256.update(data)
                sha1.update(data)
        return Blob(source, size, sha256.hexdigest(), sha1.hexdigest(), _is_lfs(path_in_repo, size))
    raise TypeError(f"{path_in_repo}: file content must be bytes or a pathlib.Path, not {type(content).__name__}")


@dataclass
class _Repo:
    repo_id: str
    gated: bool | str = False
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch / PR ref -> commit sha
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)  # commit sha -> {path: blob}

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


@dataclass
class RequestRecord:
    """One request the fake Hub received. Appended when the request arrives; ``status`` is set before the response
    headers go out and ``body_bytes`` counts body bytes as they are handed to the socket."""

    method: str
    server: str  # "hub" or "cdn"
    path: str  # as sent, still percent-encoded (e.g. ".../revision/refs%2Fpr%2F1")
    query: str
    range: str | None
    authorization: str | None
    headers: dict[str, str]
    status: int = 0
    body_bytes: int = 0
    repo_id: str | None = None
    file: str | None = None  # path in repo, for /resolve/ and CDN requests
    revision: str | None = None  # as requested (decoded), for API and /resolve/ requests
    content: bool = False  # True when the request reached a file's content (plain /resolve/ GET or CDN GET)


@dataclass
class _Fault:
    kind: str  # "fail" | "truncate" | "corrupt"
    path: str
    repo_id: str | None
    remaining: int | None  # None: forever
    status: int = 0
    after_bytes: int = 0
    method: str = "GET"

    def matches(self, kind: str, repo_id: str | None, path: str | None, method: str) -> bool:
        return (
            self.kind == kind
            and self.path == path
            and self.repo_id in (None, repo_id)
            and self.method == method
            and (self.remaining is None or self.remaining > 0)
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub, role: str) -> None:
        self.hub = hub
        self.role = role
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address) -> None:
        """Quiet: a client that went away is normal; anything else is kept in ``hub.errors``."""
        if not isinstance(sys.exc_info()[1], OSError):
            self.hub.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub; every response carries a Content-Length
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet

    def setup(self) -> None:
        super().setup()
        self.server.hub._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, False)

    def do_GET(self) -> None:
        self.server.hub._dispatch(self, head=False)

    def do_HEAD(self) -> None:
        self.server.hub._dispatch(self, head=True)


class _Reply:
    """Writes one response and keeps its ``RequestRecord`` up to date."""

    def __init__(self, handler: _Handler, record: RequestRecord, head: bool) -> None:
        self.h, self.record, self.head = handler, record, head

    def start(self, status: int, headers: dict[str, str]) -> None:
        self.record.status = status
        self.h.send_response(status)
        for name, value in headers.items():
            self.h.send_header(name, value)
        self.h.end_headers()

    def write(self, data: bytes) -> bool:
        """Send body bytes; False when the client went away."""
        if self.head or not data:
            return True
        self.record.body_bytes += len(data)  # counted first: the client may return before write() does
        try:
            self.h.wfile.write(data)
        except OSError:
            self.record.body_bytes -= len(data)
            self.h.close_connection = True
            return False
        return True

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, ctype: str = "") -> None:
        all_headers = dict(headers or {})
        if ctype:
            all_headers["Content-Type"] = ctype
        all_headers["Content-Length"] = str(len(body))
        self.start(status, all_headers)
        self.write(body)

    def json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(data).encode(), headers, "application/json; charset=utf-8")

    def error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        all_headers = {"X-Error-Message": message, **(headers or {})}
        if code is not None:
            all_headers["X-Error-Code"] = code
        self.json(status, {"error": message}, all_headers)


class FakeHub:
    """A fake Hugging Face Hub (and its CDN) on 127.0.0.1; see the module docstring.

    ``FakeHub(tokens={"hf_test"})`` accepts ``Authorization: Bearer hf_test`` as a valid token. ``url`` is the
    endpoint to pass to ``huggingface_hub`` (``endpoint=hub.url``); ``cdn_url`` is where LFS files are served from.
    """

    def __init__(
        self,
        tokens: Iterable[str] = ("hf_test",),
        *,
        reject_unknown_tokens: bool = False,
        reject_auth_on_cdn: bool = False,
        cdn_url_ttl: float | None = None,
    ) -> None:
        """``reject_unknown_tokens``: answer 401 to any token not in ``tokens`` (the Hub does; off by default so a
        token saved on the developer's machine does not break tests). ``reject_auth_on_cdn``: answer 400 to CDN
        requests carrying an Authorization header (as S3 pre-signed URLs do). ``cdn_url_ttl``: seconds a CDN URL
        stays valid (default: until ``expire_cdn_urls()``)."""
        self.tokens = set(tokens)
        self.reject_unknown_tokens = reject_unknown_tokens
        self.reject_auth_on_cdn = reject_auth_on_cdn
        self.cdn_url_ttl = cdn_url_ttl
        self.requests: list[RequestRecord] = []
        self.errors: list[str] = []  # tracebacks of exceptions raised inside the fake (should stay empty)
        self._repos: dict[str, _Repo] = {}
        self._faults: list[_Fault] = []
        self._throttle: float | None = None
        self._secret = secrets.token_bytes(16)
        self._generation = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._closed = False
        self._servers = [_Server(self, "hub"), _Server(self, "cdn")]
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=f"fake-{s.role}")
            for s in self._servers
        ]
        for thread in self._threads:
            thread.start()
        self.url = f"http://127.0.0.1:{self._servers[0].server_port}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_port}"

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop both listeners and cut every open connection (idle keep-alive ones included). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for server in self._servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- content ---------------------------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        revision: str = "main",
        gated: bool | str = False,
        private: bool = False,
    ) -> str:
        """Create (or replace) ``revision`` of ``repo_id`` holding ``files``; returns its commit sha (deterministic).

        A repo may hold several revisions (``"main"``, ``"refs/pr/1"``, ...), each addressable by name and by commit
        sha. ``Path`` values are hashed now and streamed from disk when served (not loaded in memory). ``gated``
        (True means ``"auto"``) and ``private`` are sticky: once set on a repo by any call they stay set.
        """
        blobs = {path.strip("/"): make_blob(content, path) for path, content in files.items()}
        digest = hashlib.sha1(f"{repo_id}\0{revision}\0".encode())
        for path in sorted(blobs):
            digest.update(f"{path}\0{blobs[path].sha256}\0".encode())
        sha = digest.hexdigest()
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo(repo_id))
            if gated:
                repo.gated = "auto" if gated is True else gated
            repo.private = repo.private or private
            repo.refs[revision] = sha
            repo.commits[sha] = blobs
        return sha

    def blob(self, repo_id: str, path_in_repo: str, revision: str = "main") -> Blob:
        """The served file's ``Blob`` (sizes and hashes), for assertions."""
        repo = self._repos[repo_id]
        sha = repo.resolve(revision)
        if sha is None:
            raise KeyError(revision)
        return repo.commits[sha][path_in_repo]

    def cdn_location(self, repo_id: str, path_in_repo: str, revision: str = "main") -> str:
        """The signed CDN URL the Hub would redirect an LFS file to now."""
        return self._sign(self.blob(repo_id, path_in_repo, revision).sha256, repo_id, path_in_repo)

    def expire_cdn_urls(self) -> None:
        """Revoke every CDN URL handed out so far (like signed URLs expiring); later GETs of them get 403."""
        with self._lock:
            self._generation += 1

    # -- fault injection -------------------------------------------------------------------------------------------

    def truncate(self, path_in_repo: str, after_bytes: int, times: int = 1, *, repo_id: str | None = None) -> None:
        """The next ``times`` content GETs of the file send full headers but drop the connection after
        ``after_bytes`` body bytes (httpx: RemoteProtocolError)."""
        self._add_fault(_Fault("truncate", path_in_repo, repo_id, times, after_bytes=after_bytes))

    def fail(
        self,
        path_in_repo: str,
        status: int = 503,
        times: int = 1,
        *,
        repo_id: str | None = None,
        method: str = "GET",
    ) -> None:
        """The next ``times`` content GETs of the file (``method="HEAD"``: HEADs of its ``/resolve/`` URL) answer
        ``status``."""
        self._add_fault(_Fault("fail", path_in_repo, repo_id, times, status=status, method=method.upper()))

    def corrupt(self, path_in_repo: str, times: int | None = None, *, repo_id: str | None = None) -> None:
        """Serve other bytes of the same size for the file's content (every byte inverted); ``times=None``: forever.
        Headers (ETag, sizes, sha256 in the API) still describe the true content."""
        self._add_fault(_Fault("corrupt", path_in_repo, repo_id, times))

    def throttle(self, bytes_per_second: float | None) -> None:
        """Slow every content response down to ``bytes_per_second`` (each response on its own); None: full speed."""
        self._throttle = bytes_per_second

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
        self._throttle = None

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind: str, repo_id: str | None, path: str | None, method: str = "GET") -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(kind, repo_id, path, method):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    # -- request log -----------------------------------------------------------------------------------------------

    def content_gets(self, path_in_repo: str, repo_id: str | None = None) -> list[RequestRecord]:
        """GETs that reached the file's content (plain-file ``/resolve/`` GETs and CDN GETs), oldest first."""
        with self._lock:
            records = list(self.requests)
        return [
            r
            for r in records
            if r.method == "GET" and r.content and r.file == path_in_repo and repo_id in (None, r.repo_id)
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- HTTP ------------------------------------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler, head: bool) -> None:
        split = urlsplit(handler.path)
        record = RequestRecord(
            method="HEAD" if head else "GET",
            server=handler.server.role,
            path=split.path,
            query=split.query,
            range=handler.headers.get("Range"),
            authorization=handler.headers.get("Authorization"),
            headers=dict(handler.headers.items()),
        )
        with self._lock:
            self.requests.append(record)
        reply = _Reply(handler, record, head)
        try:
            if handler.server.role == "cdn":
                self._cdn(reply, split.path, parse_qs(split.query))
            elif split.path.startswith("/api/models/"):
                self._api(reply, split.path[len("/api/models/") :], parse_qs(split.query))
            elif "/resolve/" in split.path:
                self._resolve(reply, split.path)
            else:
                reply.error(404, None, "Not found (not emulated by FakeHub)")
        except Exception:
            self.errors.append(traceback.format_exc())
            handler.close_connection = True
            if record.status == 0:
                reply.send(500, b"FakeHub internal error", ctype="text/plain")

    def _auth(self, reply: _Reply) -> str:
        """'none', 'valid' or 'invalid'."""
        value = reply.record.authorization
        if not value:
            return "none"
        scheme, _, token = value.partition(" ")
        return "valid" if scheme.lower() == "bearer" and token.strip() in self.tokens else "invalid"

    def _repo_or_error(self, reply: _Reply, repo_id: str) -> _Repo | None:
        """The repo, or None after answering the error the Hub gives for it."""
        auth = self._auth(reply)
        reply.record.repo_id = repo_id
        if auth == "invalid" and self.reject_unknown_tokens:
            reply.error(401, None, "Invalid credentials in Authorization header")
            return None
        repo = self._repos.get(repo_id)
        if repo is None or (repo.private and auth != "valid"):
            # The Hub answers 401 to anonymous requests for missing (or private) repos, 404 to authenticated ones.
            if auth == "valid":
                reply.error(404, "RepoNotFound", "Repository not found")
            else:
                reply.error(401, "RepoNotFound", "Invalid username or password.")
            return None
        return repo

    @staticmethod
    def _split_revision(raw: str) -> tuple[str, str]:
        """Split ``<revision>/<rest>`` (raw, percent-encoded) into (decoded revision, raw rest). The client encodes
        ``refs/pr/1`` as ``refs%2Fpr%2F1``; the unencoded form is accepted too, as the Hub does."""
        parts = raw.split("/")
        take = 3 if unquote(parts[0]) == "refs" and len(parts) >= 3 and parts[1] in ("pr", "convert") else 1
        return unquote("/".join(parts[:take])), "/".join(parts[take:])

    def _api(self, reply: _Reply, rest: str, query: dict[str, list[str]]) -> None:
        segments = rest.strip("/").split("/")
        n = 2 if "/".join(segments[:2]) in self._repos else 1
        if n == 1 and segments[0] not in self._repos:
            n = 1 if len(segments) > 1 and segments[1] in ("revision", "tree") else 2
        repo_id, sub = unquote("/".join(segments[:n])), segments[n:]
        if sub and sub[0] not in ("revision", "tree"):
            reply.error(404, None, "Not found (API route not emulated by FakeHub)")
            return
        repo = self._repo_or_error(reply, repo_id)
        if repo is None:
            return
        if not sub:
            revision, path = "main", ""
        elif sub[0] == "revision":
            revision, path = unquote("/".join(sub[1:])), ""  # the client quotes it whole: "refs%2Fpr%2F1"
        else:
            revision, path = self._split_revision("/".join(sub[1:]))
        reply.record.revision = revision
        sha = repo.resolve(revision)
        if sha is None:
            reply.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        files = repo.commits[sha]
        if sub and sub[0] == "tree":
            self._tree(reply, files, unquote(path).strip("/"), _flag(query, "recursive"), sha)
            return
        blobs = _flag(query, "blobs")
        siblings = []
        for name in sorted(files):
            sibling: dict[str, object] = {"rfilename": name}
            if blobs:
                blob = files[name]
                sibling.update(blobId=blob.blob_id, size=blob.size)
                if blob.lfs:
                    sibling["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
            siblings.append(sibling)
        reply.json(
            200,
            {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
                "sha": sha,
                "lastModified": _FIXED_DATE,
                "createdAt": _FIXED_DATE,
                "private": repo.private,
                "gated": repo.gated,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "spaces": [],
                "usedStorage": sum(b.size for b in files.values()),
            },
        )

    def _tree(self, reply: _Reply, files: dict[str, Blob], prefix: str, recursive: bool, sha: str) -> None:
        under = {p: b for p, b in files.items() if not prefix or p.startswith(prefix + "/")}
        if prefix and not under:
            reply.error(404, "EntryNotFound", f"{prefix} does not exist on revision", {"X-Repo-Commit": sha})
            return
        base = prefix + "/" if prefix else ""
        entries: dict[str, dict[str, object]] = {}
        for path, blob in under.items():
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                directory = base + "/".join(parts[:depth])
                entries[directory] = {
                    "type": "directory",
                    "oid": hashlib.sha1(f"tree {directory}".encode()).hexdigest(),
                    "size": 0,
                    "path": directory,
                }
            if recursive or len(parts) == 1:
                entry: dict[str, object] = {"type": "file", "oid": blob.blob_id, "size": blob.size, "path": path}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
                entries[path] = entry
        reply.json(200, [entries[p] for p in sorted(entries)])

    def _resolve(self, reply: _Reply, raw_path: str) -> None:
        repo_part, _, rest = raw_path.partition("/resolve/")
        repo = self._repo_or_error(reply, unquote(repo_part.strip("/")))
        if repo is None:
            return
        revision, raw_file = self._split_revision(rest)
        path = unquote(raw_file)
        reply.record.revision, reply.record.file = revision, path
        if repo.gated and self._auth(reply) != "valid":
            reply.error(
                401,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated to"
                " access it. Please log in.",
            )
            return
        sha = repo.resolve(revision)
        if sha is None:
            reply.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        blob = repo.commits[sha].get(path)
        if blob is None:
            reply.error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
            return
        if reply.head and (fault := self._take_fault("fail", repo.repo_id, path, "HEAD")):
            reply.error(fault.status, None, f"Injected failure ({fault.status})", {"X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if blob.lfs:
            location = self._sign(blob.sha256, repo.repo_id, path)
            body = f"Found. Redirecting to {location}".encode()
            headers |= {
                "Location": location,
                "ETag": f'"{blob.blob_id}"',
                "X-Linked-Etag": f'"{blob.sha256}"',
                "X-Linked-Size": str(blob.size),
            }
            reply.send(302, body, headers, "text/plain; charset=utf-8")
            return
        headers |= {"ETag": f'"{blob.git_oid}"', "Content-Disposition": _disposition(path, "inline")}
        self._content(reply, blob, repo.repo_id, path, headers, "text/plain; charset=utf-8")

    # -- CDN -------------------------------------------------------------------------------------------------------

    def _signature(self, sha256: str, repo_id: str, path: str, expires: str, generation: int) -> str:
        message = f"{sha256}\0{repo_id}\0{path}\0{expires}\0{generation}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def _sign(self, sha256: str, repo_id: str, path: str) -> str:
        expires = str(int(time.time() + self.cdn_url_ttl)) if self.cdn_url_ttl is not None else "never"
        signature = self._signature(sha256, repo_id, path, expires, self._generation)
        return (
            f"{self.cdn_url}/cdn/{sha256}?repo={quote(repo_id, safe='')}&file={quote(path, safe='')}"
            f"&Expires={expires}&Signature={signature}"
        )

    def _cdn(self, reply: _Reply, path: str, query: dict[str, list[str]]) -> None:
        sha256 = path.removeprefix("/cdn/")
        repo_id, file, expires, signature = (query.get(k, [""])[0] for k in ("repo", "file", "Expires", "Signature"))
        reply.record.repo_id, reply.record.file = repo_id or None, file or None
        denied = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>{}</Message></Error>"
        valid = hmac.compare_digest(signature, self._signature(sha256, repo_id, file, expires, self._generation))
        if not path.startswith("/cdn/") or not valid:
            reply.send(403, denied.format("Access denied").encode(), ctype="application/xml")
            return
        if expires != "never" and time.time() > int(expires):
            reply.send(403, denied.format("Request has expired").encode(), ctype="application/xml")
            return
        if self.reject_auth_on_cdn and reply.record.authorization:
            message = "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>"
            reply.send(400, message.encode(), ctype="application/xml")
            return
        repo = self._repos.get(repo_id)
        blob = None
        if repo is not None:
            blob = next((f[file] for f in repo.commits.values() if f.get(file) and f[file].sha256 == sha256), None)
        if blob is None:
            reply.send(404, denied.format("Not found").encode(), ctype="application/xml")
            return
        headers = {
            "ETag": f'"{blob.sha256}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": _disposition(file, "attachment"),
        }
        self._content(reply, blob, repo_id, file, headers, "application/octet-stream")

    # -- content responses -----------------------------------------------------------------------------------------

    def _content(self, reply: _Reply, blob: Blob, repo_id: str, path: str, headers: dict[str, str], ctype: str) -> None:
        reply.record.content = True
        truncate_at: int | None = None
        corrupt = False
        if not reply.head:
            if fault := self._take_fault("fail", repo_id, path):
                reply.send(fault.status, f"Injected failure ({fault.status})".encode(), ctype="text/plain")
                return
            if fault := self._take_fault("truncate", repo_id, path):
                truncate_at = fault.after_bytes
            corrupt = self._take_fault("corrupt", repo_id, path) is not None
        size = blob.size
        start, end, status = 0, size, 200
        requested = _parse_range(reply.record.range, size)
        if requested == "unsatisfiable":
            reply.send(416, b"", {**headers, "Content-Range": f"bytes */{size}"}, ctype)
            return
        if requested is not None:
            start, end = requested
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
        reply.start(status, {**headers, "Content-Type": ctype, "Content-Length": str(end - start)})
        if reply.head:
            return
        sent, deadline = 0, time.monotonic()
        piece_size = 64 * 1024 if self._throttle else CHUNK
        for chunk in blob.read(start, end):
            for offset in range(0, len(chunk), piece_size):
                piece = chunk[offset : offset + piece_size]
                if truncate_at is not None and sent + len(piece) >= truncate_at:
                    reply.write(_maybe_corrupt(piece[: truncate_at - sent], corrupt))
                    reply.h.close_connection = True  # the socket closes (mid-body) once this handler returns
                    return
                if not reply.write(_maybe_corrupt(piece, corrupt)):
                    return
                sent += len(piece)
                if rate := self._throttle:
                    deadline = max(deadline, time.monotonic()) + len(piece) / rate
                    time.sleep(max(0.0, deadline - time.monotonic()))


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")


def _maybe_corrupt(data: bytes, corrupt: bool) -> bytes:
    return data.translate(_CORRUPT) if corrupt else data


def _disposition(path: str, kind: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return f"{kind}; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def _parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end exclusive), "unsatisfiable", or None to serve the whole file (no or unsupported Range)."""
    if not value:
        return None
    match = _RANGE.fullmatch(value)
    if match is None or not (match[1] or match[2]):
        return None  # multi-range or malformed: ignored, as RFC 9110 allows
    if match[1]:
        start = int(match[1])
        last = min(int(match[2]), size - 1) if match[2] else size - 1
        if start >= size or (match[2] and int(match[2]) < start):
            return "unsatisfiable"
        return start, last + 1
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        return "unsatisfiable"
    return max(0, size - suffix), size
