"""The original worker's requests, recognised at the edge and answered in its shapes.

The original MultiTalk RunPod worker (``berrylands/meigen-multitalk-runpod-serverless``, versions V42 to V154) changed
its request and response shapes many times; its users' scripts still send them. This module turns each old request
into our ``JobInput`` (the job then runs exactly like any other) and turns our result back into the fields that
version's clients read. Our own API is not bent: a request is treated as old only when it carries a name our API
does not have (``action``, ``reference_image``, ``audio_file``, ``fps``, ``s3_output_key``, ``health_check`` ...) or
the original worker's own field names (``audio_1``, ``condition_image``, ``audio_s3_key``, ``image_s3_key``).

Families (docs/api.md, "The original worker's requests", lists every field):

- probes: ``{"health_check": true}`` / ``{"type": "health"}`` (V2.x and the V154 test handler),
  ``{"action": "model_check"}`` (V106-V114, its ``test_input.json``), ``{"action": "model_info"}`` (V115);
- ``stream``: ``action: "generate"`` with ``audio`` (+ optional ``reference_image``, ``duration``, ``fps``, ``width``,
  ``height``, ``output_format``, ``s3_output_key``): the V2.x complete handler that ``examples/multitalk_client.py``,
  ``simple_video_generator.py``, ``s3_video_generator.py`` and ``batch_processor.py`` call. Answer: ``success``,
  ``video`` (base64, or ``s3://bucket/key``), ``output_type``, ``duration``, ``frames``, ``processing_time`` ...;
- ``nested``: ``action: "generate"`` with ``audio_1`` / ``condition_image`` (V106-V114): our result plus the old
  ``output: {status: "completed", video_url | video_base64, s3_key, message}``;
- ``flat``: every other old shape (``audio_1`` / ``condition_image`` / ``*_s3_key`` / ``audio_file`` /
  ``image_file`` / ``reference_image`` ...: V42-V51, V74-V75, V115-V153, ``runpod-multitalk/src/handler.py`` and its
  ``examples/client.py``): our result plus ``status: "success"``, ``success``, ``duration``, ``frames``, ``fps``,
  ``size_mb``, ``s3_key``, ``format``.

A bare file name or key (``"1.wav"``, ``"inputs/face.png"``) names an object in the configured input bucket when
there is one, else a file under ``VOLUME_PATH/inputs/`` (``BARE_NAME_FOLDER``); ``..`` and absolute names are refused.
Failures stay failures: the job is FAILED with ``"<CODE>: <message>"`` as for any request, the message naming the
field as the old request wrote it.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import wave
from dataclasses import dataclass, field
from typing import Any

from .errors import WorkerError

BARE_NAME_FOLDER = "inputs"  # under VOLUME_PATH: where bare names resolve when no input bucket is configured
# a file name or object key: path segments of safe characters, the last with an extension ("1.wav", "in/face.png")
BARE_NAME = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9._ -]*/)*[A-Za-z0-9_][A-Za-z0-9._ -]*\.[A-Za-z0-9]{1,5}$")
DEFAULT_IMAGE_ENV = "ORIGINAL_WORKER_IMAGE"  # the face for old `action: generate` requests that send no image
PCM_RATE = 16_000  # the V2.x handlers read base64 audio without a container as 16 kHz mono 16-bit PCM

# Names only the original worker used: a request holding one is an old request.
OLD_ONLY = frozenset(
    {
        "action",
        "health_check",
        "type",
        "reference_image",
        "audio_file",
        "image_file",
        "audio_key",
        "image_key",
        "audio_data",
        "image_data",
        "fps",
        "s3_output_key",
        "use_teacache",
        "low_vram",
        "guidance_scale",
        "text_guidance_scale",
        "audio_guidance_scale",
        "audio_cfg",
        "video_cfg",
    }
)
# The original worker's names that our API also accepts: they make a request old for the answer's sake only.
OLD_SHARED = frozenset({"audio_1", "condition_image", "audio_s3_key", "image_s3_key"})
# Operator actions of the original worker (model downloads, volume listings): refused with a pointer.
OPERATOR_ACTIONS = frozenset(
    {
        "volume_explore",
        "list_models",
        "load_models",
        "download_models",
        "cache_missing_components",
        "test_offline_operation",
        "verify_network_storage",
        "list_files",
    }
)
# old name -> our name, for settings (media are handled separately, in order of the old handlers' precedence)
SETTINGS = {
    "sampling_steps": "sampling_steps",
    "sample_steps": "sampling_steps",
    "text_guidance_scale": "text_guide_scale",
    "guidance_scale": "text_guide_scale",
    "video_cfg": "text_guide_scale",
    "text_guide_scale": "text_guide_scale",
    "audio_guidance_scale": "audio_guide_scale",
    "audio_cfg": "audio_guide_scale",
    "audio_guide_scale": "audio_guide_scale",
}
IMAGE_NAMES = ("image_s3_key", "condition_image", "reference_image", "image_file", "image_key", "image_data", "image")
AUDIO_NAMES = ("audio_s3_key", "audio_1", "audio_file", "audio_key", "audio_data", "audio")
IGNORED = {"low_vram": "the worker's memory plan decides", "debug": "logs are the worker's"}
MODELS_USED = ["MultiTalk", "Wan2.1-I2V-14B", "chinese-wav2vec2-base", "umt5-xxl", "clip-vit-h-14"]
# containers FFmpeg recognises by their first bytes: anything else in the stream family's audio is raw PCM
AUDIO_MAGIC = (b"RIFF", b"ID3", b"OggS", b"fLaC", b"FORM", b"\x1a\x45\xdf\xa3", b"#!AMR", b"caff", b".snd", b"MThd")


def is_bare_name(value: object) -> bool:
    """A file name or object key, not a URL, a data URI, an absolute path or base64 (which has no '.')."""
    return (
        isinstance(value, str)
        and len(value) <= 1024
        and BARE_NAME.fullmatch(value) is not None
        and ".." not in value.split("/")
    )


def bare_name_media(value: str, has_bucket: bool) -> dict:
    """A bare name as our media object: a key in the input bucket, else a file under ``VOLUME_PATH/inputs``."""
    return {"s3_key": value} if has_bucket else {"path": f"{BARE_NAME_FOLDER}/{value}"}


@dataclass
class LegacyRequest:
    """One old request: its family, and what translating it learned (for the answer and error messages)."""

    raw: dict
    family: str  # "health", "model_check", "model_info", "stream", "nested", "flat"
    written: dict[str, str] = field(default_factory=dict)  # our field -> the name the request used
    warnings: list[str] = field(default_factory=list)
    output_format: str | None = None  # as the old request asked

    @classmethod
    def detect(cls, raw: dict) -> LegacyRequest | None:
        keys = set(raw)
        if not keys & (OLD_ONLY | OLD_SHARED):
            return None
        if raw.get("health_check") or raw.get("type") == "health":
            return cls(raw, "health")
        action = raw.get("action")
        if action is not None and not isinstance(action, str):
            raise WorkerError("E_INPUT", "action: must be a string (generate, model_check, model_info)")
        if action is not None:
            if action in ("model_check", "model_info"):
                return cls(raw, action)
            if action in OPERATOR_ACTIONS:
                raise WorkerError(
                    "E_INPUT",
                    f"action: {action!r} was an operator action of the original worker; this worker does not "
                    "manage models from jobs (fill the volume with `multitalk-serve download`, see docs)",
                )
            if action != "generate":
                raise WorkerError(
                    "E_INPUT", f"action: unknown action {action!r} (generate, model_check, model_info are accepted)"
                )
        old_pair = keys & {"audio_1", "condition_image", "audio_s3_key", "image_s3_key"}
        if "audio" in keys and not old_pair and (action == "generate" or "reference_image" in keys or "fps" in keys):
            return cls(raw, "stream")
        if action == "generate" and keys & {"audio_1", "condition_image"}:
            return cls(raw, "nested")
        return cls(raw, "flat")

    @property
    def probe(self) -> bool:
        return self.family in ("health", "model_check", "model_info")

    # --- request ----------------------------------------------------------------------------------------------
    def translate(
        self, has_bucket: bool, max_input_bytes: int, balanced_cache: float, *, default_image: str | None = None
    ) -> dict:
        """Our ``JobInput`` fields for this old request (validated by ``JobInput`` afterwards, as any request).
        ``default_image``: the operator's ``ORIGINAL_WORKER_IMAGE`` (``WorkerConfig.original_worker_image``)."""
        raw = dict(self.raw)
        for name in ("action", "health_check", "type"):
            raw.pop(name, None)  # (a false health_check or another type: not a probe)
        out: dict[str, Any] = {}

        image_names = [n for n in IMAGE_NAMES if raw.get(n) is not None]
        if image_names:
            first = image_names[0]
            out["image"] = self._media(raw[first], first, has_bucket, s3=first.endswith("s3_key"))
            if first != "image":
                self.written["image"] = first
            self._ignored(image_names[1:], first)
        elif self.family == "stream":
            default = default_image
            if not default:
                raise WorkerError(
                    "E_INPUT",
                    "reference_image: MultiTalk animates a reference image and none was given (the original worker "
                    f"rendered a test pattern without one); send reference_image, or the operator sets "
                    f"{DEFAULT_IMAGE_ENV} to a picture on the volume or in the bucket",
                )
            out["image"] = {"path": default} if default.startswith("/") else bare_name_media(default, has_bucket)
            self.written["image"] = DEFAULT_IMAGE_ENV
        audio_names = [n for n in AUDIO_NAMES if raw.get(n) is not None]
        if audio_names:
            first = audio_names[0]
            value = raw[first]
            if self.family == "stream" and first == "audio":
                value = _pcm_as_wav(value, max_input_bytes)
            values = value if isinstance(value, list) else [value]
            tracks = [self._media(v, first, has_bucket, s3=first.endswith("s3_key")) for v in values]
            if first != "audio":
                self.written["audio[0]"] = first
            if raw.get("audio_2") is not None:
                tracks.append(self._media(raw["audio_2"], "audio_2", has_bucket, s3=False))
                self.written["audio[1]"] = "audio_2"
            out["audio"] = tracks
            self._ignored(audio_names[1:], first)
        for name in (*IMAGE_NAMES, *AUDIO_NAMES, "audio_2"):
            raw.pop(name, None)

        for old, ours in SETTINGS.items():
            if old in raw:
                value = raw.pop(old)
                if ours in out:
                    self.warnings.append(f"{old} ignored: {self.written[ours]} was given")
                    continue
                out[ours] = value
                self.written[ours] = old
        if raw.pop("use_teacache", None) is True:
            out["cache_threshold"] = balanced_cache
            self.written["cache_threshold"] = "use_teacache"
        fps = raw.pop("fps", None)
        if fps is not None and fps != 25:
            self.warnings.append(f"fps {fps} ignored: MultiTalk videos are 25 fps")
        for name, why in IGNORED.items():
            if raw.pop(name, None) is not None:
                self.warnings.append(f"{name} ignored: {why}")

        self.output_format = raw.pop("output_format", None)
        fmt = self.output_format
        if not isinstance(fmt, str | None):
            raise WorkerError("E_INPUT", "output_format: must be a string (s3, base64, url)")
        fmt = {"url": "s3"}.get(fmt, fmt)
        if fmt == "s3" and not has_bucket:
            self.warnings.append("output_format s3 asked, but no bucket is configured: the video is returned inline")
            fmt = None
        if fmt is None:  # its clients read a URL or base64, never a volume path: S3 when there is a bucket, else inline
            fmt = "s3" if has_bucket and self.family != "stream" else "base64"
        output = raw.pop("output", None)
        if output is None or isinstance(output, dict):  # anything else: left for validation to refuse
            output = dict(output or {})
            output["format"] = fmt
            key = raw.pop("s3_output_key", None)
            if key is not None:
                output.update(_output_key(key))
        out["output"] = output
        out.update(raw)  # the rest under our own names (prompt, seed, num_frames, duration, turbo ...): validated
        return out

    def _media(self, value: Any, name: str, has_bucket: bool, s3: bool) -> Any:
        if s3 and isinstance(value, str):
            return {"s3_key": value}
        if is_bare_name(value):
            return bare_name_media(value, has_bucket)
        return value

    def _ignored(self, names: list[str], used: str) -> None:
        for name in names:
            self.warnings.append(f"{name} ignored: {used} was given")

    def rename(self, error: WorkerError) -> WorkerError:
        """The error with the field named as the old request wrote it (``image:`` -> ``condition_image:``)."""
        message = error.message
        for ours, old in self.written.items():
            for shown in (ours, {"audio[0]": "audio of speaker 1", "audio[1]": "audio of speaker 2"}.get(ours)):
                if shown and message.startswith(f"{shown}:"):
                    message = f"{old}:{message[len(shown) + 1 :]}"
                    break
        if message == error.message:
            return error
        return WorkerError(error.code, message, refresh=error.refresh)

    # --- answers ----------------------------------------------------------------------------------------------
    def probe_answer(self, health: dict, facts: dict) -> dict:
        """``health`` is the worker's own probe answer; ``facts`` what the old probes also reported."""
        if self.family == "health":
            return {**health, "message": "MultiTalk worker is healthy", **facts}
        info = {**facts, **{k: v for k, v in health.items() if k != "status"}}
        if self.family == "model_info":
            return {"output": {"status": "success", "model_info": info}}
        message = f"MultiTalk worker ready (multitalk-serve {health.get('version')})"
        return {"output": {"status": "ready", "message": message, "version": health.get("version"), "model_info": info}}

    def answer(self, result: dict, bucket: str | None) -> dict:
        """Our result (``JobOutput`` as a dict) in the shape this old request's clients read."""
        video = result["video"]
        size = video["bytes"]
        warnings = [*result.get("warnings", []), *self.warnings]
        if self.family == "stream":
            return self._stream_answer(result, bucket, warnings)
        out = dict(result)
        out["warnings"] = warnings
        out.update(
            status="success",
            success=True,
            duration=video["duration_s"],
            frames=video["frames"],
            num_frames=video["frames"],
            fps=video["fps"],
            size_mb=round(size / 2**20, 3),
            format="mp4",
            processing_time=f"{result['timings']['total']:.1f}s",
        )
        if result.get("video_s3_key"):
            out["s3_key"] = result["video_s3_key"]
        if self.family == "nested":
            nested: dict[str, Any] = {"status": "completed", "message": "Video generated successfully"}
            for ours, old in (("video_url", "video_url"), ("video_s3_key", "s3_key"), ("video_path", "video_path")):
                if result.get(ours):
                    nested[old] = result[ours]
            if result.get("video_base64"):
                nested["video_base64"] = out.pop("video_base64")  # once in the answer, where V106-V114 read it
            out["output"] = nested
        return out

    def _stream_answer(self, result: dict, bucket: str | None, warnings: list[str]) -> dict:
        video = result["video"]
        resolution = f"{video['width']}x{video['height']}"
        if video["storage"] == "s3":
            shown, kind = f"s3://{bucket}/{result['video_s3_key']}", "s3_url"
        elif video["storage"] == "volume":
            shown, kind = result["video_path"], "volume_path"
        else:
            shown, kind = result["video_base64"], "base64"
        info = {
            "success": True,
            "video_size": video["bytes"],
            "duration": video["duration_s"],
            "fps": video["fps"],
            "resolution": resolution,
            "frames": video["frames"],
            "models_used": MODELS_USED,
        }
        out: dict[str, Any] = {
            "success": True,
            "video": shown,
            "output_type": kind,
            "duration": video["duration_s"],
            "frames": video["frames"],
            "fps": video["fps"],
            "video_info": info,
            "processing_time": f"{result['timings']['total']:.1f}s",
            "models_used": MODELS_USED,
            "parameters": {
                "duration": video["duration_s"],
                "fps": video["fps"],
                "resolution": resolution,
                "video_size": video["bytes"],
                "output_format": self.output_format or "base64",
            },
        }
        if kind == "s3_url":
            out.update(s3_key=result["video_s3_key"], s3_bucket=bucket, video_url=result.get("video_url"))
        out["seed"] = result["seed"]
        out["warnings"] = warnings
        return out


def _output_key(key: object) -> dict:
    """``s3_output_key`` as our ``output.prefix`` + ``output.filename`` (the key stays under ``OUTPUT_PREFIX`` and
    the job id, as every output key does; the answer's ``s3_key`` is the key used)."""
    if not isinstance(key, str) or not is_bare_name(key):
        raise WorkerError("E_INPUT", "s3_output_key: a key of letters, digits, '.', '_', '-' and '/' segments")
    prefix, _, name = key.rpartition("/")
    return {"filename": name.replace(" ", "_"), **({"prefix": prefix.replace(" ", "_")} if prefix else {})}


def _pcm_as_wav(value: Any, max_input_bytes: int) -> Any:
    """The V2.x handlers took base64 of bare 16 kHz mono 16-bit samples (``simple_video_generator.py`` sends
    exactly that): wrap such bytes in a WAV header. Anything else is left for the normal media checks."""
    if not isinstance(value, str) or len(value) * 3 // 4 > max_input_bytes or len(value) < 8:
        return value
    text = value.strip()
    if text.startswith(("http://", "https://", "s3://", "data:", "/")) or is_bare_name(text):
        return value
    compact = re.sub(r"\s+", "", text)
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return value
    if _has_container(data) or len(data) % 2:
        return value
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(PCM_RATE)
        out.writeframes(data)
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _has_container(data: bytes) -> bool:
    head = data[:16]
    if head.startswith(AUDIO_MAGIC) or head[4:8] == b"ftyp":
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0  # MPEG audio / ADTS frame sync


def old_probe_facts(config: Any, gpu: str) -> dict:
    """What the original worker's probes reported besides their status (true for this worker)."""
    import torch

    volume, models = config.volume_mounted, config.model_path.is_dir()
    return {
        "volume_mounted": volume,
        "network_volume_mounted": volume,
        "model_path_exists": models,
        "models_directory_exists": models,
        "models_loaded": True,
        "cuda_available": torch.cuda.is_available(),
        "gpu_available": torch.cuda.is_available(),
        "device": gpu,
        "pytorch_version": torch.__version__,
        "worker_id": os.environ.get("RUNPOD_POD_ID", "unknown"),
    }
