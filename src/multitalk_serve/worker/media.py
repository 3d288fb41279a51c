"""Fetching a job's media: http(s) URL, data URI or plain base64, a path on the network volume, an S3 key.

URLs go through the RunPod SDK's SSRF-safe fetch (public addresses only, every redirect re-checked, connection
pinned to the checked address) with a size cap, a timeout and retries. Volume paths must resolve (symlinks too)
inside the volume. Every failure is a ``WorkerError`` naming the field, never echoing base64 or URL secrets.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
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
EXPECTED_TYPES = {"image": ("image/",), "audio": ("audio/", "video/", "application/octet-stream")}


def redact_url(url: str) -> str:
    """scheme://host/path only: query strings often carry signatures or tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


class MediaFetcher:
    def __init__(self, config: WorkerConfig, s3: S3Settings | None):
        self.config = config
        self.s3 = s3

    def fetch(self, media: Media, field: str, kind: str) -> bytes:
        """The bytes of one media input. ``kind`` is ``image`` or ``audio`` (checks data-URI types)."""
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
        if size > self.config.max_input_bytes:
            raise WorkerError(
                "E_DOWNLOAD",
                f"{field}: {size / 1e6:.3g} MB is over the {self.config.max_input_bytes / 1e6:.3g} MB limit",
            )

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

    def _url(self, url: str, field: str) -> bytes:
        from runpod.serverless.utils.rp_ssrf import SSRFError, iter_content_capped, safe_get

        shown = redact_url(url)
        last_error = ""
        for attempt in range(max(1, self.config.download_retries)):
            if attempt:
                time.sleep(min(2**attempt, 8) * 0.5)
            try:
                response = safe_get(url, timeout=self.config.download_timeout_s, max_bytes=self.config.max_input_bytes)
            except SSRFError as exc:
                raise WorkerError("E_DOWNLOAD", f"{field}: refused to fetch {shown}: {_reason(exc)}") from None
            except Exception as exc:  # connection errors, timeouts: retried
                last_error = f"{type(exc).__name__}"
                continue
            try:
                if response.status_code >= 500 or response.status_code == 429:
                    last_error = f"HTTP {response.status_code}"
                    continue
                if response.status_code != 200:
                    raise WorkerError("E_DOWNLOAD", f"{field}: HTTP {response.status_code} for {shown}")
                try:
                    chunks = list(iter_content_capped(response, 1 << 20, self.config.max_input_bytes))
                except SSRFError:
                    raise WorkerError(
                        "E_DOWNLOAD",
                        f"{field}: {shown} is larger than the {self.config.max_input_bytes / 1e6:.3g} MB limit",
                    ) from None
                except Exception as exc:
                    last_error = type(exc).__name__
                    continue
                data = b"".join(chunks)
                if not data:
                    raise WorkerError("E_DOWNLOAD", f"{field}: {shown} returned no data")
                return data
            finally:
                response.close()
        raise WorkerError(
            "E_DOWNLOAD", f"{field}: could not fetch {shown} after {self.config.download_retries} tries ({last_error})"
        )

    def _s3(self, key: str | None, field: str) -> bytes:
        if self.s3 is None:
            raise WorkerError(
                "E_DOWNLOAD", f"{field}: an S3 key needs a bucket (s3Config or the worker's BUCKET_* settings)"
            )
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise WorkerError("E_INPUT", f"{field}: invalid S3 key")
        from .storage import s3_client

        client = s3_client(self.s3)
        try:
            head = client.head_object(Bucket=self.s3.bucket, Key=key)
            self._check_size(int(head["ContentLength"]), field)
            return client.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read()
        except WorkerError:
            raise
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            raise WorkerError("E_DOWNLOAD", f"{field}: cannot read s3://{self.s3.bucket}/{key} ({code})") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    return re.sub(r"https?://\S+", lambda m: redact_url(m.group(0)), text)
