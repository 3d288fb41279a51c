"""``download``: fill a model directory with a profile's files, verified, resumable, idempotent.

How one run goes:

1. Lock the directory (``.multitalk/lock``): two downloads into one volume would corrupt each other.
2. Plan: one ``model_info`` call per repository revision lists every file with its size and hash (LFS sha256, or
   the git blob id of small files); the revision is pinned to that commit for the whole run.
3. Reuse what is there: a repository already in a Hugging Face cache (RunPod's cached models under
   ``/runpod-volume/huggingface-cache/hub``) is used in place; a local file is kept if the manifest says it was
   verified and its size and modification time have not changed since, or if hashing it matches the Hub.
4. Check free space for what is left (plus the transient float32 copies of files converted to bfloat16).
5. Fetch the rest in parallel with ``huggingface_hub``'s HTTP download (retries with ``Range`` within a run),
   into ``.multitalk/partial/<hash>.part``: a run that is killed resumes from the bytes already on disk. Each file is
   hashed while it streams, checked against the Hub's hash (refetched once if wrong), then moved into place
   (or converted to bfloat16 first), and recorded in ``.multitalk/manifest.json``.
6. Write which file is which component into the manifest (the worker reads it).

Rerunning fetches only what is missing or wrong. ``HF_TOKEN``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are honoured.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ..engine.loading.paths import MANIFEST, cached_snapshot, hf_cache_dirs
from . import convert
from .profiles import Fetch, Profile

STATE_DIR = ".multitalk"
PARTIAL_DIR = Path(STATE_DIR) / "partial"
LOCK_FILE = Path(STATE_DIR) / "lock"
SPACE_MARGIN = 512 << 20  # kept free beyond what the files need
HASH_CHUNK = 8 << 20


class DownloadError(Exception):
    """A download that cannot complete; ``code`` is stable (docs/provisioning.md, "Provisioning errors")."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class RemoteFile:
    fetch: Fetch
    commit: str
    path: str  # in the repository
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob id (what identifies small files)

    @property
    def dest(self) -> str:
        """Path relative to the model root."""
        return f"{self.fetch.folder}/{self.path}" if self.fetch.folder else self.path

    @property
    def to_bf16(self) -> bool:
        return any(fnmatch.fnmatch(self.path, p) for p in self.fetch.to_bf16)

    @property
    def identity(self) -> str:
        return self.sha256 or self.blob_id or f"{self.commit}-{self.path.replace('/', '_')}"

    def final_size_bound(self) -> int:
        return self.size // 2 + (1 << 20) if self.to_bf16 else self.size


@dataclass
class Report:
    profile: str
    root: str
    files: int = 0
    kept: int = 0  # already complete and verified
    fetched: int = 0
    converted: int = 0
    from_cache: dict[str, str] = field(default_factory=dict)  # repo -> snapshot used in place
    bytes_transferred: int = 0
    bytes_on_disk: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    to_fetch: list[str] = field(default_factory=list)
    bytes_to_fetch: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# --- hashing -----------------------------------------------------------------------------------------------------
def _git_blob_hasher(size: int):
    h = hashlib.sha1()  # git's object id, not a security hash
    h.update(b"blob %d\0" % size)
    return h


def file_digest(path: Path, *, git_blob: bool = False) -> str:
    h = _git_blob_hasher(path.stat().st_size) if git_blob else hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _matches_remote(path: Path, remote: RemoteFile) -> bool:
    if path.stat().st_size != remote.size:
        return False
    if remote.sha256:
        return file_digest(path) == remote.sha256
    return remote.blob_id is None or file_digest(path, git_blob=True) == remote.blob_id


class _HashingFile:
    """What ``http_get`` writes to: appends to the partial file and hashes on the way (``seek``/``truncate`` as a
    server that ignores ``Range`` makes it restart)."""

    def __init__(self, path: Path, remote: RemoteFile):
        self.path, self.remote = path, remote
        self.file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._rehash(path.stat().st_size)

    def _rehash(self, upto: int) -> None:
        self.hash = hashlib.sha256() if self.remote.sha256 else _git_blob_hasher(self.remote.size)
        with open(self.path, "rb") as f:
            left = upto
            while left > 0 and (chunk := f.read(min(HASH_CHUNK, left))):
                self.hash.update(chunk)
                left -= len(chunk)

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.hash.update(data)
        return len(data)

    def tell(self) -> int:
        return self.file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        result = self.file.truncate(size)
        self.file.flush()
        self._rehash(self.path.stat().st_size)
        return result

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


# --- progress ----------------------------------------------------------------------------------------------------
class Progress:
    """Aggregated byte progress of all parallel downloads, reported as one line every ``interval`` seconds."""

    def __init__(self, total: int, log: Callable[[str], None], interval: float = 10.0):
        self.total, self.log, self.interval = total, log, interval
        self.done = 0
        self.started = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.files_done = 0
        self.files_total = 0

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            self.last = now
        self.log(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0
        share = self.done / self.total if self.total else 1.0
        return (
            f"[{share:4.0%}] {self.done / 1e9:.2f}/{self.total / 1e9:.2f} GB at {rate / 1e6:.0f} MB/s, "
            f"~{left / 60:.0f} min left; {self.files_done}/{self.files_total} files done"
        )

    def bar_class(self):
        """A ``tqdm_class`` for ``http_get`` that feeds this counter instead of drawing a bar."""
        progress = self

        class Bar:
            def __init__(self, *args, **kwargs):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> bool:
                return False

            def update(self, n: int = 1) -> None:
                progress.add(n)

            def close(self) -> None:
                pass

        return Bar


# --- the manifest -------------------------------------------------------------------------------------------------
class Manifest:
    """``.multitalk/manifest.json``: what was verified, and which path is which component."""

    def __init__(self, root: Path):
        self.path = root / MANIFEST
        self.lock = threading.Lock()
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("version", 1)
        self.data.setdefault("files", {})

    @property
    def files(self) -> dict[str, dict]:
        return self.data["files"]

    def record(self, dest: str, entry: dict) -> None:
        with self.lock:
            self.files[dest] = entry
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def _entry(remote: RemoteFile, path: Path, sha256: str, converted: bool) -> dict:
    stat = path.stat()
    return {
        "repo": remote.fetch.repo_id,
        "revision": remote.fetch.revision,
        "commit": remote.commit,
        "path": remote.path,
        "remote_size": remote.size,
        "remote_sha256": remote.sha256,
        "remote_blob_id": remote.blob_id,
        "size": stat.st_size,
        "sha256": sha256,
        "mtime_ns": stat.st_mtime_ns,
        "bf16": converted,
    }


def entry_unchanged(entry: dict, path: Path) -> bool:
    """The file is as it was when verified (same size and modification time)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    return stat.st_size == entry.get("size") and stat.st_mtime_ns == entry.get("mtime_ns")


# --- the Hub -------------------------------------------------------------------------------------------------------
def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or "").lower() in ("1", "true", "yes", "on")


def _hub_error(exc: BaseException, what: str) -> DownloadError:
    """Map huggingface_hub / HTTP errors to our codes."""
    from huggingface_hub import errors

    if isinstance(exc, DownloadError):
        return exc
    if isinstance(exc, errors.GatedRepoError):
        return DownloadError("E_AUTH", f"{what}: gated repository; accept its terms on the Hub and set HF_TOKEN")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return DownloadError("E_NOT_FOUND", f"{what}: repository not found (or private: set HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return DownloadError("E_NOT_FOUND", f"{what}: revision not found")
    if isinstance(exc, errors.EntryNotFoundError):
        return DownloadError("E_NOT_FOUND", f"{what}: file not found")
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return DownloadError("E_AUTH", f"{what}: HTTP {status}; check HF_TOKEN")
        return DownloadError("E_NETWORK", f"{what}: HTTP {status} from the Hub")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError("E_SPACE", f"{what}: the disk is full (partial data kept; free space and rerun)")
    return DownloadError("E_NETWORK", f"{what}: {type(exc).__name__}: {exc}")


def plan(profile: Profile, *, endpoint: str | None = None, token: str | None = None) -> list[RemoteFile]:
    """Every file of ``profile`` with its size, hash and pinned commit (one metadata request per repo revision)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint or _endpoint(), token=token)
    infos = {}
    files: dict[str, RemoteFile] = {}
    for fetch in profile.fetches:
        key = (fetch.repo_id, fetch.revision)
        if key not in infos:
            what = f"{fetch.repo_id}@{fetch.revision}"
            try:
                infos[key] = api.model_info(fetch.repo_id, revision=fetch.revision, files_metadata=True)
            except Exception as exc:  # mapped to a stable code
                raise _hub_error(exc, what) from exc
        info = infos[key]
        for pattern in fetch.include:
            matched = [s for s in info.siblings or [] if fnmatch.fnmatch(s.rfilename, pattern)]
            if not matched:
                raise DownloadError(
                    "E_NOT_FOUND",
                    f"{fetch.repo_id}@{fetch.revision} ({info.sha}) has no file matching {pattern!r}; "
                    "the repository changed: update the profile",
                )
            for s in matched:
                remote = RemoteFile(
                    fetch, info.sha, s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None, s.blob_id
                )
                files[remote.dest] = remote
    return sorted(files.values(), key=lambda r: -r.size)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    lock_path = root / LOCK_FILE
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DownloadError("E_LOCKED", f"another download is writing to {root} (lock {lock_path})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the downloader -------------------------------------------------------------------------------------------------
class Downloader:
    def __init__(
        self,
        root: str | Path,
        profile: Profile,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        workers: int = 8,
        verify_hashes: bool = False,
        use_cache: bool = True,
        cache_dirs: list[Path] | None = None,
        log: Callable[[str], None] = print,
        progress_interval: float = 10.0,
    ):
        self.root = Path(root)
        self.profile = profile
        self.token = token if token is not None else (os.environ.get("HF_TOKEN") or None)
        self.endpoint = endpoint or _endpoint()
        self.workers = max(1, workers)
        self.verify_hashes = verify_hashes
        self.cache_dirs = (hf_cache_dirs() if cache_dirs is None else cache_dirs) if use_cache else []
        self.log = log
        self.progress_interval = progress_interval

    # -- public ----------------------------------------------------------------------------------------------------
    def run(self, dry_run: bool = False) -> Report:
        start = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        report = Report(self.profile.name, str(self.root), dry_run=dry_run)
        with _locked(self.root):
            manifest = Manifest(self.root)
            if _offline():
                return self._offline_check(manifest, report)
            remotes = plan(self.profile, endpoint=self.endpoint, token=self.token)
            report.files = len(remotes)
            cached = self._cached_fetches(remotes)
            report.from_cache = {f.repo_id: str(p) for f, p in cached.items()}
            todo = []
            for remote in remotes:
                if remote.fetch in cached:
                    continue
                if self._complete(remote, manifest):
                    report.kept += 1
                else:
                    todo.append(remote)
            report.to_fetch = [r.dest for r in todo]
            report.bytes_to_fetch = sum(r.size - self._partial_bytes(r) for r in todo)
            self._check_space(todo)
            if not dry_run:
                self._fetch_all(todo, manifest, report)
                manifest.data["profile"] = self.profile.name
                manifest.data["components"] = self._components(cached)
                manifest.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                with manifest.lock:
                    manifest.save()
                if not report.failures:
                    self._clean_partials(remotes)
            report.bytes_on_disk = sum(
                e.get("size", 0) for d, e in manifest.files.items() if d in {r.dest for r in remotes}
            )
        report.seconds = time.monotonic() - start
        if report.failures:
            first = next(iter(report.failures.values()))
            code = first.split(":", 1)[0] if first.startswith("E_") else "E_NETWORK"
            lines = "; ".join(f"{k}: {v}" for k, v in report.failures.items())
            raise DownloadError(
                code, f"{len(report.failures)} of {len(report.to_fetch)} files failed ({lines}); rerun to resume"
            )
        return report

    # -- steps -----------------------------------------------------------------------------------------------------
    def _cached_fetches(self, remotes: list[RemoteFile]) -> dict[Fetch, Path]:
        """Fetches whose every file is already in a Hugging Face cache snapshot (used in place, not copied).
        A converted-to-bf16 fetch is used as published (float32: the loader casts)."""
        found = {}
        for fetch in self.profile.fetches:
            snapshot = cached_snapshot(fetch.repo_id, self.cache_dirs, fetch.revision)
            if snapshot is None:
                continue
            mine = [r for r in remotes if r.fetch == fetch]
            if all((snapshot / r.path).is_file() and (snapshot / r.path).stat().st_size == r.size for r in mine):
                if self.verify_hashes and not all(_matches_remote(snapshot / r.path, r) for r in mine):
                    self.log(f"cache {snapshot} does not match {fetch.repo_id}: downloading instead")
                    continue
                found[fetch] = snapshot
                self.log(f"using the cached {fetch.repo_id} in place: {snapshot}")
        return found

    def _complete(self, remote: RemoteFile, manifest: Manifest) -> bool:
        """Is the local file complete and right? Cheap when the manifest vouches for it; hashes otherwise."""
        path = self.root / remote.dest
        if not path.is_file():
            return False
        entry = manifest.files.get(remote.dest)
        same_remote = entry is not None and (entry.get("remote_sha256"), entry.get("remote_blob_id")) == (
            remote.sha256,
            remote.blob_id,
        )
        if same_remote and entry_unchanged(entry, path) and not self.verify_hashes:
            return True
        if same_remote and entry.get("sha256") and file_digest(path) == entry["sha256"]:
            manifest.record(remote.dest, {**entry, "mtime_ns": path.stat().st_mtime_ns})
            return True
        if _matches_remote(path, remote):  # as published (placed by hand, or converted before a crash)
            if remote.to_bf16 and convert.has_float32(path):
                self._convert(remote, path, manifest)
            else:
                manifest.record(remote.dest, _entry(remote, path, file_digest(path), converted=False))
            return True
        self.log(f"{remote.dest}: does not match the Hub ({path.stat().st_size} bytes on disk): fetching again")
        path.unlink()
        return False

    def _partial(self, remote: RemoteFile) -> Path:
        return self.root / PARTIAL_DIR / f"{remote.identity}.part"

    def _partial_bytes(self, remote: RemoteFile) -> int:
        part = self._partial(remote)
        return part.stat().st_size if part.is_file() else 0

    def _check_space(self, todo: list[RemoteFile]) -> None:
        """Enough free space for what is left, plus the float32 originals alive while their half copies are written
        (one per file fetched at a time): with too little room for ``workers`` of them, fewer files are fetched at a
        time (logged); ``E_SPACE`` when even one at a time does not fit."""
        if not todo:
            return
        need = sum(r.final_size_bound() - self._partial_bytes(r) for r in todo)
        converting = sorted((r.size for r in todo if r.to_bf16), reverse=True)
        free = shutil.disk_usage(self.root).free
        for workers in range(self.workers, 0, -1):
            if free >= need + sum(converting[:workers]) + SPACE_MARGIN:
                if workers < self.workers:
                    self.log(
                        f"{free / 1e9:.1f} GB free: fetching {workers} files at a time instead of {self.workers}, "
                        "so the float32 files being converted fit beside the rest"
                    )
                    self.workers = workers
                return
        need += sum(converting[:1]) + SPACE_MARGIN
        raise DownloadError(
            "E_SPACE",
            f"{self.root} has {free / 1e9:.1f} GB free; this download needs {need / 1e9:.1f} GB "
            f"({len(todo)} files to fetch). Use a larger volume or free space, then rerun.",
        )

    def _fetch_all(self, todo: list[RemoteFile], manifest: Manifest, report: Report) -> None:
        if not todo:
            self.log(f"{self.profile.name}: every file is present and verified")
            return
        total = sum(r.size - self._partial_bytes(r) for r in todo)
        progress = Progress(total, self.log, self.progress_interval)
        progress.files_total = len(todo)
        self.log(f"fetching {len(todo)} files, {total / 1e9:.2f} GB, {self.workers} at a time into {self.root}")
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="download") as pool:
            futures = {pool.submit(self._fetch_one, r, manifest, progress): r for r in todo}
            for future in as_completed(futures):
                remote = futures[future]
                try:
                    transferred, converted = future.result()
                except DownloadError as exc:
                    report.failures[remote.dest] = str(exc)
                    self.log(f"FAILED {remote.dest}: {exc}")
                    continue
                report.fetched += 1
                report.converted += int(converted)
                report.bytes_transferred += transferred
                with progress.lock:
                    progress.files_done += 1
        self.log(progress.line())

    def _fetch_one(self, remote: RemoteFile, manifest: Manifest, progress: Progress) -> tuple[int, bool]:
        part = self._partial(remote)
        part.parent.mkdir(parents=True, exist_ok=True)
        transferred = 0
        for attempt in (1, 2):
            try:
                sent, digest = self._stream(remote, part, progress)
            except DownloadError:
                raise
            except Exception as exc:  # mapped to a stable code; the partial file stays for a rerun
                raise _hub_error(exc, remote.dest) from exc
            transferred += sent
            expected = remote.sha256 or remote.blob_id
            if expected is None or digest == expected:
                break
            self.log(f"{remote.dest}: hash mismatch after download (attempt {attempt}); fetching it again")
            part.unlink(missing_ok=True)
            progress.add(-remote.size)
        else:
            raise DownloadError("E_VERIFY", f"{remote.dest}: content does not match the Hub's hash twice in a row")
        dest = self.root / remote.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if remote.to_bf16 and convert.has_float32(part):
            self._convert(remote, part, manifest, dest)
            part.unlink(missing_ok=True)
            return transferred, True
        os.replace(part, dest)
        manifest.record(remote.dest, _entry(remote, dest, remote.sha256 or file_digest(dest), converted=False))
        self.log(f"verified {remote.dest} ({remote.size / 1e9:.2f} GB)")
        return transferred, False

    def _stream(self, remote: RemoteFile, part: Path, progress: Progress) -> tuple[int, str]:
        """Download into ``part`` from where it stops; returns (bytes transferred, hash of the whole file)."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(remote.fetch.repo_id, remote.path, revision=remote.commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, token=self.token)
        if meta.size is not None and meta.size != remote.size:
            raise DownloadError("E_VERIFY", f"{remote.dest}: the Hub reports {meta.size} bytes, listed {remote.size}")
        if part.is_file() and part.stat().st_size > remote.size:
            part.unlink()
        resume = part.stat().st_size if part.is_file() else 0
        if resume:
            self.log(f"resuming {remote.dest} at {resume / 1e9:.2f} of {remote.size / 1e9:.2f} GB")
        headers = build_hf_headers(token=self.token)
        headers["Accept-Encoding"] = "identity"
        if urlparse(meta.location).netloc != urlparse(self.endpoint).netloc:
            headers.pop("authorization", None)  # a CDN link is signed: the token stays with the Hub
        part.touch()
        sink = _HashingFile(part, remote)
        try:
            if resume < remote.size:
                http_get(
                    meta.location,
                    sink,
                    resume_size=resume,
                    headers=headers,
                    expected_size=remote.size,
                    displayed_filename=remote.path,
                    tqdm_class=progress.bar_class(),
                )
        finally:
            sink.close()
        return remote.size - resume, sink.hash.hexdigest()

    def _convert(self, remote: RemoteFile, source: Path, manifest: Manifest, dest: Path | None = None) -> None:
        dest = dest or source
        started = time.monotonic()
        half = convert.half_dtype_for(remote.path)
        name = str(half).removeprefix("torch.")
        note = f"{name} from {remote.fetch.repo_id}/{remote.path}@{remote.commit[:12]} sha256 {remote.sha256}"
        try:
            sha = convert.to_half(source, dest, note, half)
        except OSError as exc:
            raise _hub_error(exc, f"converting {remote.dest}") from exc
        manifest.record(remote.dest, _entry(remote, dest, sha, converted=True))
        self.log(
            f"verified {remote.dest} ({remote.size / 1e9:.2f} GB) and stored it as {name} "
            f"({dest.stat().st_size / 1e9:.2f} GB, {time.monotonic() - started:.1f} s)"
        )

    def _components(self, cached: dict[Fetch, Path]) -> dict[str, str | None]:
        out: dict[str, str | None] = {"image_processor": None}
        for name, (fetch, inner) in self.profile.components().items():
            base = cached.get(fetch) or (self.root / fetch.folder if fetch.folder else self.root)
            path = base / inner if inner else base
            try:
                out[name] = str(path.relative_to(self.root)) or "."
            except ValueError:
                out[name] = str(path)
        return out

    def _clean_partials(self, remotes: list[RemoteFile]) -> None:
        folder = self.root / PARTIAL_DIR
        if folder.is_dir():
            for leftover in folder.iterdir():
                leftover.unlink(missing_ok=True)

    def _offline_check(self, manifest: Manifest, report: Report) -> Report:
        """``HF_HUB_OFFLINE``: no Hub; check what the manifest recorded for this profile instead."""
        if manifest.data.get("profile") != self.profile.name or not manifest.files:
            raise DownloadError(
                "E_OFFLINE", f"HF_HUB_OFFLINE is set and {self.root} has no completed '{self.profile.name}' download"
            )
        bad = []
        for dest, entry in manifest.files.items():
            path = self.root / dest
            ok = (
                entry_unchanged(entry, path)
                if not self.verify_hashes
                else (path.is_file() and file_digest(path) == entry.get("sha256"))
            )
            if not ok:
                bad.append(dest)
        report.files, report.kept = len(manifest.files), len(manifest.files) - len(bad)
        if bad:
            raise DownloadError(
                "E_OFFLINE", f"HF_HUB_OFFLINE is set and {len(bad)} files need fetching: {', '.join(bad)}"
            )
        return report
