"""Where a job keeps what it has made, so that a run of the same job continues it: the job folder on the network
volume, named by the job's key, one writer at a time, cleaned up by age.

- The key: the request's ``job_key`` (the client chooses it: resending the request with it continues the job), else
  the RunPod job id (RunPod's own retry of a job whose worker died runs it again under the same id).
- The folder ``{VOLUME_PATH}/multitalk-state/jobs/{key}`` holds the engine's segments and loop state
  (``engine/pipeline/segments.py``) and ``published.json`` (the segments already delivered). Without a volume the
  folder is local to the job and nothing survives the worker.
- One writer: a ``lock`` file made with ``O_EXCL``, its time refreshed every ``HEARTBEAT_S`` while the job runs. A
  second job with the same key waits (cancellable) until the lock is released or stale (not refreshed for
  ``STALE_S``, or its owner's process is gone on this machine), up to ``wait_s``, then is refused (``E_BUSY``).
- Folders whose newest file is older than ``JOB_STATE_TTL_HOURS`` are removed (at start and before every job); a
  finished job's folder is removed once its video is stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from .errors import WorkerError

log = logging.getLogger("multitalk_serve.worker")

STATE_DIR = "multitalk-state/jobs"
LOCK = "lock"
HEARTBEAT_S = 10.0
STALE_S = 60.0  # a lock not refreshed for this long belongs to a worker that died
KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def safe_key(key: str) -> str:
    """A job key as a folder name: letters, digits, ``._-`` kept, anything else replaced; never ``.`` or ``..``."""
    name = "".join(c if c in KEY_CHARS else "-" for c in key)[:128]
    return name if name.strip(".") else "job-" + name


def _host() -> str:
    return os.environ.get("RUNPOD_POD_ID") or socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobLock:
    """The one-writer lock of a job folder, refreshed by a background thread while held."""

    def __init__(self, folder: Path, stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S):
        self.path = folder / LOCK
        self.stale_s, self.heartbeat_s = stale_s, heartbeat_s
        self.owner = {"host": _host(), "pid": os.getpid(), "token": uuid.uuid4().hex, "since": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait_s: float, cancel: threading.Event | None = None, key: str = "") -> None:
        deadline = time.monotonic() + wait_s
        while True:
            if self._try():
                self._thread = threading.Thread(target=self._beat, name="job-lock", daemon=True)
                self._thread.start()
                return
            holder = self._holder()
            if self._stale(holder):
                self._break()
                continue
            if time.monotonic() >= deadline or (cancel is not None and cancel.is_set()):
                since = holder.get("since") if holder else None
                age = f" for {time.time() - since:.0f} s" if isinstance(since, int | float) else ""
                raise WorkerError(
                    "E_BUSY",
                    f"job_key {key}: another run of this job is in progress{age} (one writer per job); "
                    "wait for it to finish, or send it again later to continue it",
                )
            time.sleep(0.5)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._holder().get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)

    def _try(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(self.owner, handle)
        return True

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False  # released meanwhile: the next try takes it
        if age > self.stale_s:
            return True
        same_host = holder.get("host") == self.owner["host"]
        pid = holder.get("pid")
        return same_host and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid)

    def _break(self) -> None:
        """Take a stale lock out of the way (renamed first, so two takers never both remove a fresh lock)."""
        aside = self.path.with_name(f"{LOCK}.stale-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, aside)
            aside.unlink(missing_ok=True)
            log.warning("took over the job lock %s of a worker that stopped", self.path)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(self.path)


class JobFolders:
    """The job folders of this worker's volume (or of local disk without one)."""

    def __init__(self, volume: Path | None, ttl_s: float, wait_s: float):
        self.root = volume / STATE_DIR if volume is not None else None
        self.ttl_s, self.wait_s = ttl_s, wait_s

    @property
    def persistent(self) -> bool:
        return self.root is not None

    def folder(self, key: str, workdir: Path) -> Path:
        return self.root / safe_key(key) if self.root is not None else workdir / "job"

    def sweep(self, now: float | None = None) -> int:
        """Remove job folders left longer than the TTL (finished or abandoned); returns how many."""
        if self.root is None or not self.root.is_dir():
            return 0
        now = time.time() if now is None else now
        removed = 0
        for folder in self.root.iterdir():
            try:
                newest = max((p.stat().st_mtime for p in folder.iterdir()), default=folder.stat().st_mtime)
            except OSError:
                continue
            if now - newest > self.ttl_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        if removed:
            log.info("removed %d job folder(s) older than %.0f h", removed, self.ttl_s / 3600)
        return removed

    def published(self, folder: Path) -> dict[int, dict]:
        """The segment events an earlier run of this job delivered (index -> event)."""
        try:
            data = json.loads((folder / "published.json").read_text())
            return {int(k): v for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def save_published(self, folder: Path, events: dict[int, dict]) -> None:
        tmp = folder / "published.json.part"
        try:
            tmp.write_text(json.dumps({str(k): v for k, v in events.items()}))
            os.replace(tmp, folder / "published.json")
        except OSError as exc:  # the job goes on; a resumed run would deliver these segments again
            log.warning("could not save the delivered segments of %s (%s)", folder.name, exc.strerror or exc)
            tmp.unlink(missing_ok=True)
