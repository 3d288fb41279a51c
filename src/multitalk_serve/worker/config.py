"""Worker settings from the environment (all optional; defaults in docs/configuration.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_DURATION_S = 600.0  # ten minutes (the longest video a job may ask for; MAX_DURATION_SECONDS)
MAX_JOB_SECONDS = 24 * 3600  # the most MAX_DURATION_SECONDS may be set to (the request schema's ceiling)


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    value = _env(name)
    try:
        return float(value) if value is not None else default
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {value!r}") from None


def _default_scale() -> float:
    from ..engine import DEFAULT_SPEED_LORA_SCALE  # the engine's choice, and why: speed/policy.py

    return DEFAULT_SPEED_LORA_SCALE


def _names(name: str) -> tuple[str, ...] | None:
    """A comma-separated list (``multitalk,infinitetalk-single``), lower case; None when unset."""
    value = _env(name)
    if value is None:
        return None
    return tuple(n.strip().lower() for n in value.split(",") if n.strip()) or None


def _flag(name: str) -> bool:
    return (_env(name, "0") or "0").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class S3Settings:
    """Where and how to upload: an S3-compatible endpoint, credentials and a bucket."""

    endpoint_url: str | None
    access_key: str
    secret_key: str
    bucket: str
    region: str | None = None

    @classmethod
    def from_request(cls, config: object) -> S3Settings:
        """RunPod's per-request ``s3Config``: ``{endpointUrl, accessId, accessSecret, bucketName, region?}``."""
        from .errors import WorkerError

        if not isinstance(config, dict):
            raise WorkerError("E_INPUT", "s3Config must be an object {endpointUrl, accessId, accessSecret, bucketName}")
        missing = [k for k in ("accessId", "accessSecret", "bucketName") if not config.get(k)]
        if missing:
            raise WorkerError("E_INPUT", f"s3Config is missing {', '.join(missing)}")
        wrong = [
            k
            for k in ("endpointUrl", "accessId", "accessSecret", "bucketName", "region")
            if config.get(k) is not None and not isinstance(config[k], str)
        ]
        if wrong:
            raise WorkerError("E_INPUT", f"s3Config: {', '.join(wrong)} must be text")
        return cls(
            config.get("endpointUrl"),
            config["accessId"],
            config["accessSecret"],
            config["bucketName"],
            config.get("region"),
        )

    @classmethod
    def from_env(cls) -> S3Settings | None:
        """RunPod's ``BUCKET_*`` variables, else ``S3_BUCKET`` + ``AWS_*``; ``None`` when neither is complete.

        ``BUCKET_ENDPOINT_URL`` may name the bucket in its host (``https://<bucket>.s3.<region>.amazonaws.com``, as
        RunPod's docs show) or be a bare endpoint with ``BUCKET_NAME`` (R2, MinIO, RunPod's S3 API, ...).
        """
        endpoint, key, secret = (
            _env("BUCKET_ENDPOINT_URL"),
            _env("BUCKET_ACCESS_KEY_ID"),
            _env("BUCKET_SECRET_ACCESS_KEY"),
        )
        if endpoint and key and secret:
            bucket = _env("BUCKET_NAME")
            if bucket is None:
                endpoint, bucket = _split_virtual_host(endpoint)
            if bucket:
                return cls(endpoint, key, secret, bucket, _env("BUCKET_REGION") or _region_of(endpoint))
        bucket = _env("S3_BUCKET") or _env("AWS_S3_BUCKET_NAME")  # the latter: the original worker's name
        key, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
        if bucket and key and secret:
            region = _env("AWS_REGION") or _env("AWS_DEFAULT_REGION")
            return cls(_env("S3_ENDPOINT_URL") or _env("AWS_ENDPOINT_URL"), key, secret, bucket, region)
        return None


def _split_virtual_host(endpoint: str) -> tuple[str, str | None]:
    """``https://bucket.s3.region.amazonaws.com`` -> (``https://s3.region.amazonaws.com``, ``bucket``)."""
    from urllib.parse import urlparse

    parsed = urlparse(endpoint)
    host = parsed.hostname or ""
    marker = ".s3."
    if marker in host and not host.startswith("s3."):
        bucket, rest = host.split(marker, 1)
        return f"{parsed.scheme}://s3.{rest}", bucket
    return endpoint, None


def _region_of(endpoint: str) -> str | None:
    import re

    match = re.search(r"\.s3[.-]([a-z0-9-]+)\.amazonaws\.com", endpoint) or re.search(r"//s3\.([a-z0-9-]+)\.", endpoint)
    return match.group(1) if match else None


@dataclass(frozen=True)
class WorkerConfig:
    model_path: Path = field(default_factory=lambda: Path(_env("MODEL_PATH", "/runpod-volume/models")))
    transformer: str | None = field(default_factory=lambda: _env("MULTITALK_TRANSFORMER"))
    warmup: bool = field(default_factory=lambda: _flag("MULTITALK_WARMUP"))
    volume_path: Path = field(default_factory=lambda: Path(_env("VOLUME_PATH", "/runpod-volume")))
    max_duration_s: float = field(default_factory=lambda: _float("MAX_DURATION_SECONDS", DEFAULT_MAX_DURATION_S))
    max_input_bytes: int = field(default_factory=lambda: int(_float("MAX_INPUT_MB", 200) * 1_000_000))
    max_video_bytes: int = field(default_factory=lambda: int(_float("MAX_VIDEO_MB", 500) * 1_000_000))
    download_timeout_s: float = field(default_factory=lambda: _float("DOWNLOAD_TIMEOUT_SECONDS", 30.0))
    download_retries: int = field(default_factory=lambda: int(_float("DOWNLOAD_RETRIES", 3)))
    # total time for one fetch (URL or S3 key, retries included) and for all of a job's inputs together
    download_deadline_s: float = field(default_factory=lambda: _float("DOWNLOAD_DEADLINE_SECONDS", 120.0))
    input_deadline_s: float = field(default_factory=lambda: _float("INPUT_DEADLINE_SECONDS", 300.0))
    inline_max_bytes: int = field(default_factory=lambda: int(_float("INLINE_MAX_MB", 14) * 1_000_000))
    output_prefix: str = field(default_factory=lambda: (_env("OUTPUT_PREFIX", "multitalk") or "").strip("/"))
    presign_expiry_s: int = field(default_factory=lambda: int(_float("PRESIGN_EXPIRY_SECONDS", 7 * 24 * 3600)))
    upload_retries: int = field(default_factory=lambda: int(_float("UPLOAD_RETRIES", 3)))
    progress_interval_s: float = field(default_factory=lambda: _float("PROGRESS_INTERVAL_SECONDS", 2.0))
    device: str | None = field(default_factory=lambda: _env("MULTITALK_DEVICE"))
    dtype: str | None = field(default_factory=lambda: _env("MULTITALK_DTYPE"))
    s3: S3Settings | None = field(default_factory=S3Settings.from_env)
    # speed and memory (engine/presets.py, memory.py, backends.py, lora.py)
    # None: the default model's (quality; FlashTalk: realtime, the one preset it runs)
    preset: str | None = field(default_factory=lambda: (_env("MULTITALK_PRESET") or "").strip().lower() or None)
    memory_plan: str | None = field(default_factory=lambda: _env("MULTITALK_MEMORY_PLAN", "auto"))
    attention: str = field(default_factory=lambda: _env("MULTITALK_ATTENTION", "auto") or "auto")
    speed_lora: str | None = field(default_factory=lambda: _env("MULTITALK_SPEED_LORA"))
    speed_lora_scale: float = field(default_factory=lambda: _float("MULTITALK_SPEED_LORA_SCALE", _default_scale()))
    fuse_speed_lora: bool = field(default_factory=lambda: _flag("MULTITALK_FUSE_SPEED_LORA"))
    compile: bool = field(default_factory=lambda: _flag("MULTITALK_COMPILE"))
    max_resolution: str = field(default_factory=lambda: _env("MAX_RESOLUTION", "720p") or "720p")
    # models: the request's default, and the audio adapters this worker holds (None: every one the folder has)
    model: str | None = field(default_factory=lambda: (_env("MULTITALK_MODEL") or "").strip().lower() or None)
    adapters: tuple[str, ...] | None = field(default_factory=lambda: _names("MULTITALK_ADAPTERS"))
    # long jobs (jobstate.py): job folders kept on the volume this long; how long a second run of a job waits for
    # the first's lock; stream every window to /stream (a generator handler: the output becomes a list)
    job_state_ttl_s: float = field(default_factory=lambda: _float("JOB_STATE_TTL_HOURS", 24.0) * 3600)
    job_lock_wait_s: float = field(default_factory=lambda: _float("JOB_LOCK_WAIT_SECONDS", 90.0))
    stream: bool = field(default_factory=lambda: _flag("MULTITALK_STREAM"))
    # the window (clip) length and its motion frames (None: the model's, 81 / FlashTalk 33); smaller only for tests
    window_frames: int | None = field(default_factory=lambda: int(_float("MULTITALK_WINDOW_FRAMES", 0)) or None)
    motion_frames: int | None = field(default_factory=lambda: int(_float("MULTITALK_MOTION_FRAMES", 0)) or None)
    # one job on several GPUs (parallel.py): how many processes (GPUs) share each job, "auto" = every GPU; the
    # longest a rank may wait for the others inside a job before the job fails (E_PARALLEL)
    gpus: str = field(default_factory=lambda: (_env("MULTITALK_GPUS", "auto") or "auto").strip().lower())
    parallel_timeout_s: float = field(default_factory=lambda: _float("MULTITALK_PARALLEL_TIMEOUT_SECONDS", 900.0))
    # the original worker's `action: generate` requests that send no image (legacy.py)
    original_worker_image: str | None = field(default_factory=lambda: _env("ORIGINAL_WORKER_IMAGE"))

    def __post_init__(self) -> None:
        import math

        if not (math.isfinite(self.max_duration_s) and 0 < self.max_duration_s <= MAX_JOB_SECONDS):
            raise ValueError(
                f"MAX_DURATION_SECONDS must be more than 0 and at most {MAX_JOB_SECONDS} (a day), "
                f"got {self.max_duration_s:g}"
            )

    def speed_lora_path(self) -> Path | None:
        """``MULTITALK_SPEED_LORA`` resolved as the engine does (``find_speed_lora``)."""
        from ..engine import find_speed_lora

        return find_speed_lora(self.model_path, self.speed_lora)

    @property
    def volume_mounted(self) -> bool:
        return self.volume_path.is_dir()
