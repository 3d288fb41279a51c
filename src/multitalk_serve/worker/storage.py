"""Where a finished video goes: S3 (per-request ``s3Config`` or the worker's bucket), the network volume, or inline.

A finished video is never dropped because one destination failed: an upload that still fails after retries falls
back to the volume, then to inline base64 when small enough, and the result says where the video is and why.
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import S3Settings, WorkerConfig
from .errors import WorkerError
from .schema import OutputOptions


def s3_client(settings: S3Settings, *, attempts: int = 3, connect_timeout: float = 10, read_timeout: float = 60):
    """A boto3 S3 client; checksum settings that S3-compatible stores (R2, GCS, MinIO) accept. ``attempts`` and the
    timeouts bound one request (segments of a stream use smaller ones than the final video: delivery.py)."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": attempts, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        region_name=settings.region or "us-east-1",
        config=config,
    )


def _error_name(exc: BaseException) -> str:
    """The S3 error code (``AccessDenied``, ``NoSuchBucket``) or the exception's type: never its text, which may
    hold a URL with a signature."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code or type(exc).__name__


def upload_with_retries(
    send: Callable[[], object],
    bucket: str,
    key: str,
    tries: int,
    *,
    backoff_s: float = 0.5,
    deadline_s: float | None = None,
) -> None:
    """Run ``send`` (one upload) up to ``tries`` times, waiting ``backoff_s`` x 2^(try-1) (at most 8 s) between
    tries and starting no try past ``deadline_s`` seconds from now; ``E_UPLOAD`` naming the object when all fail."""
    start = time.monotonic()
    tries = max(1, tries)
    error, made = "", 0
    for attempt in range(tries):
        if attempt:
            wait = min(2**attempt * backoff_s, 8.0)
            if deadline_s is not None and time.monotonic() - start + wait >= deadline_s:
                break
            time.sleep(wait)
        made += 1
        try:
            send()
            return
        except Exception as exc:
            error = _error_name(exc)
    raise WorkerError("E_UPLOAD", f"upload to s3://{bucket}/{key} failed after {made} tries ({error})")


def presign(client, bucket: str, key: str, expiry_s: int) -> str:
    """A presigned GET URL (computed locally: no request)."""
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expiry_s)


def _safe_segment(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:120] or "job"


def output_key(config: WorkerConfig, job_id: str, name: str, options: OutputOptions) -> str:
    """``OUTPUT_PREFIX / request prefix / job id / name``: a request cannot leave the configured prefix."""
    parts = [config.output_prefix, options.prefix or "", _safe_segment(job_id), _safe_segment(name)]
    return "/".join(p.strip("/") for p in parts if p)


def destinations(config: WorkerConfig, s3: S3Settings | None, wanted: str) -> list[str]:
    """Where an output may go, in the order tried, for ``output.format`` = ``wanted`` (``E_INPUT`` when the format
    names a destination that does not exist)."""
    volume = ["volume"] if config.volume_mounted else []
    buckets = ["s3"] if s3 is not None else []
    if wanted == "s3":
        if not buckets:
            raise WorkerError("E_INPUT", "output.format is s3 but no bucket is configured (s3Config or BUCKET_*)")
        return ["s3", *volume, "inline"]
    if wanted == "volume":
        if not volume:
            raise WorkerError(
                "E_INPUT", f"output.format is volume but no network volume is mounted at {config.volume_path}"
            )
        return ["volume", *buckets, "inline"]
    if wanted == "base64":
        return ["inline", *buckets, *volume]
    return [*buckets, *volume, "inline"]


@dataclass
class Stored:
    """Where the video (and thumbnail) ended up; becomes part of the job's output."""

    storage: str  # "s3", "volume", "inline"
    url: str | None = None
    key: str | None = None
    path: str | None = None
    base64: str | None = None
    thumbnail_url: str | None = None
    thumbnail_path: str | None = None
    thumbnail_base64: str | None = None
    speech_url: str | None = None  # the synthesised speech (text requests), stored beside the video
    speech_key: str | None = None
    speech_path: str | None = None
    speech_base64: str | None = None
    warnings: list[str] = field(default_factory=list)


FALLBACK_NOTE = {
    "s3": "the video was uploaded to S3 instead (video_url)",
    "volume": "the video was kept on the network volume instead (video_path)",
    "inline": "the video is returned inline instead (video_base64)",
}


class Storage:
    def __init__(self, config: WorkerConfig, request_s3: S3Settings | None = None):
        self.config = config
        self.request_s3 = request_s3

    @property
    def s3(self) -> S3Settings | None:
        return self.request_s3 or self.config.s3

    def key_for(self, job_id: str, name: str, options: OutputOptions) -> str:
        """``OUTPUT_PREFIX / request prefix / job id / name``: a request cannot leave the configured prefix."""
        return output_key(self.config, job_id, name, options)

    def store(
        self, job_id: str, video: Path, thumbnail: Path | None, options: OutputOptions, speech: Path | None = None
    ) -> Stored:
        """The video where ``options.format`` asks (with fallbacks); the thumbnail and the speech (a WAV, for text
        requests) go beside it, under the same name with ``.jpg`` / ``.wav``."""
        name = options.filename or f"{_safe_segment(job_id)}.mp4"
        if not name.endswith(".mp4"):
            name += ".mp4"
        order = self._order(options.format)
        warnings: list[str] = []
        for target in order:
            try:
                if target == "s3":
                    stored = self._to_s3(job_id, name, video, thumbnail, options, speech)
                elif target == "volume":
                    stored = self._to_volume(job_id, name, video, thumbnail, options, speech)
                else:
                    stored = self._inline(video, thumbnail, speech)
                where = FALLBACK_NOTE[stored.storage]
                stored.warnings = [f"{w}; {where}" for w in warnings] + stored.warnings
                return stored
            except WorkerError as exc:
                if target == order[-1]:
                    if warnings:
                        raise WorkerError(exc.code, "; ".join([*warnings, exc.message])) from None
                    raise
                warnings.append(f"{target}: {exc.message}")
        raise WorkerError("E_UPLOAD", "no storage destination")  # pragma: no cover

    def _order(self, wanted: str) -> list[str]:
        return destinations(self.config, self.s3, wanted)

    def _to_s3(
        self, job_id: str, name: str, video: Path, thumbnail: Path | None, options: OutputOptions, speech=None
    ) -> Stored:
        settings = self.s3
        client = s3_client(settings)
        key = self.key_for(job_id, name, options)
        self._upload(client, settings.bucket, key, video, "video/mp4")
        stored = Stored("s3", key=key, url=self._presign(client, settings.bucket, key))
        if thumbnail is not None:
            thumb_key = key.removesuffix(".mp4") + ".jpg"
            try:
                self._upload(client, settings.bucket, thumb_key, thumbnail, "image/jpeg")
                stored.thumbnail_url = self._presign(client, settings.bucket, thumb_key)
            except WorkerError as exc:
                stored.warnings.append(f"thumbnail not uploaded: {exc.message}")
        if speech is not None:
            speech_key = key.removesuffix(".mp4") + ".wav"
            try:
                self._upload(client, settings.bucket, speech_key, speech, "audio/wav")
                stored.speech_key, stored.speech_url = speech_key, self._presign(client, settings.bucket, speech_key)
            except WorkerError as exc:  # the speech is in the video's soundtrack too; say it is not apart
                stored.warnings.append(f"speech not uploaded (it is the video's soundtrack): {exc.message}")
        return stored

    def _upload(self, client, bucket: str, key: str, path: Path, content_type: str) -> None:
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, use_threads=True)
        upload_with_retries(
            lambda: client.upload_file(
                str(path), bucket, key, ExtraArgs={"ContentType": content_type}, Config=transfer
            ),
            bucket,
            key,
            self.config.upload_retries,
        )

    def _presign(self, client, bucket: str, key: str) -> str:
        return presign(client, bucket, key, self.config.presign_expiry_s)

    def _to_volume(
        self, job_id: str, name: str, video: Path, thumbnail: Path | None, options: OutputOptions, speech=None
    ) -> Stored:
        rel = self.key_for(job_id, name, options)
        target = self.config.volume_path / "outputs" / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, target)
            stored = Stored("volume", path=str(target))
            if thumbnail is not None:
                thumb = target.with_suffix(".jpg")
                shutil.copyfile(thumbnail, thumb)
                stored.thumbnail_path = str(thumb)
            if speech is not None:
                wav = target.with_suffix(".wav")
                shutil.copyfile(speech, wav)
                stored.speech_path = str(wav)
            return stored
        except OSError as exc:
            raise WorkerError("E_UPLOAD", f"cannot write {target} ({exc.strerror or exc})") from None

    def _inline(self, video: Path, thumbnail: Path | None, speech: Path | None = None) -> Stored:
        size = video.stat().st_size
        if size > self.config.inline_max_bytes:
            raise WorkerError(
                "E_OUTPUT_TOO_LARGE",
                f"the video is {size / 1e6:.1f} MB, over the {self.config.inline_max_bytes / 1e6:.0f} MB that fit in a "
                "job result; configure s3Config / BUCKET_* or mount a network volume",
            )
        stored = Stored("inline", base64=base64.b64encode(video.read_bytes()).decode("ascii"))
        if thumbnail is not None:
            stored.thumbnail_base64 = base64.b64encode(thumbnail.read_bytes()).decode("ascii")
        if speech is not None:
            total = size + speech.stat().st_size
            if total > self.config.inline_max_bytes:
                stored.warnings.append(
                    f"speech not returned: with the video it is {total / 1e6:.1f} MB, over the "
                    f"{self.config.inline_max_bytes / 1e6:.0f} MB that fit in a job result (it is the video's "
                    "soundtrack); configure s3Config / BUCKET_* or mount a network volume to get it apart"
                )
            else:
                stored.speech_base64 = base64.b64encode(speech.read_bytes()).decode("ascii")
        return stored
