"""The job result: one pydantic model beside ``JobInput``, published as JSON Schema in
``docs/schema/job_output.schema.json`` (regenerate: ``python -m multitalk_serve.worker.response > that file``).

``params`` is derived from the ``GenerateOptions`` the job ran with: every option is either reported (under the
API's name for it, ``PARAM_NAMES``) or deliberately left out (``NOT_REPORTED``); a test fails when an option is
added to the engine without deciding which.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..engine import GenerateOptions
from .delivery import SegmentsSummary

# GenerateOptions field -> the name the API uses for it (its input field's name)
PARAM_NAMES = {
    "resolution": "resolution",
    "mode": "mode",
    "steps": "sampling_steps",
    "text_scale": "text_guide_scale",
    "audio_scale": "audio_guide_scale",
    "use_apg": "use_apg",
    "audio_type": "audio_type",
    "color_correction": "color_correction",
    "negative_prompt": "negative_prompt",
    "cache_threshold": "cache_threshold",
    "speed_lora": "speed_lora",
    "num_frames": "num_frames",
    "size": "size",
    "seed": "seed",
    "shift": "shift",
    "model": "model",
    "source_end": "source_end",
    "keep_background": "keep_background",
    "feather": "feather",
}
# options a job cannot choose through the API, or that are the worker's (reported elsewhere or not at all)
NOT_REPORTED = {
    "apg_momentum": "fixed (official value)",
    "apg_norm_threshold": "fixed (official value)",
    "max_duration_s": "the worker's MAX_DURATION_SECONDS",
    "frames_per_clip": "the model's: 81 (MultiTalk, InfiniteTalk), 33 (FlashTalk)",
    "motion_frames": "the model's: 25 (MultiTalk), 9 (InfiniteTalk), 5 (FlashTalk)",
    "crf": "output.crf, as asked",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoInfo(_Model):
    storage: Literal["s3", "volume", "inline"] = Field(description="where the MP4 is")
    url: str | None = Field(description="presigned GET URL (S3)")
    path: str | None = Field(description="file on the network volume")
    content_type: Literal["video/mp4"] = "video/mp4"
    file_name: str
    bytes: int = Field(description="size of the MP4")
    duration_s: float
    frames: int
    fps: int = 25
    width: int
    height: int
    has_audio: bool = True


class SpeechInfo(_Model):
    """The speech a text request was spoken as (Kokoro-82M): the video's soundtrack, also returned apart (a WAV)."""

    storage: Literal["s3", "volume", "inline", "none"] = Field(
        description="where the WAV is (none: it could not be returned apart; warnings say why)"
    )
    url: str | None = Field(description="presigned GET URL (S3)")
    path: str | None = Field(description="file on the network volume")
    content_type: Literal["audio/wav"] = "audio/wav"
    bytes: int = Field(description="size of the WAV")
    seconds: float = Field(description="its duration: the video's duration")
    sample_rate: int = Field(description="24000 (Kokoro's rate; 16-bit mono)")
    speakers: int
    turns: int = Field(description="turns spoken (a dialogue's (s1) ... (s2) ... parts)")
    voices: list[str] = Field(description="the Kokoro voice of each speaker ('file' for an uploaded voice file)")


class JobParams(_Model):
    """The effective settings (``GenerateOptions`` under the API's names) and what the job found."""

    preset: str = Field(
        description="quality, balanced, fast, realtime (FlashTalk), or turbo-base (turbo without a speed LoRA)"
    )
    resolution: str
    mode: str
    sampling_steps: int
    text_guide_scale: float
    audio_guide_scale: float
    use_apg: bool
    audio_type: str
    color_correction: float
    negative_prompt: Literal["default", "custom"]
    turbo: bool
    cache_threshold: float
    speed_lora: bool
    num_frames: int | None = Field(description="as asked (duration x 25 or num_frames); null: as long as the audio")
    size: str = Field(description="WxH when width/height were given, else 'bucket'")
    seed: int
    shift: float
    speakers: int
    clips: int
    model: str = Field(
        description="the model the job ran: multitalk, infinitetalk-single, infinitetalk-multi or flashtalk"
    )
    source: Literal["image", "video"] = Field("image", description="what the job animated: an image or a video")
    source_end: str = Field("hold", description="a video shorter than the audio: hold or pingpong")
    keep_background: bool = Field(False, description="only the speaker regions were regenerated")
    feather: float | None = Field(None, description="keep_background's edge width in pixels; null: automatic")
    forwards: dict[str, int] | None = Field(None, description="step caching: transformer forwards computed / reused")

    @classmethod
    def from_options(cls, options: GenerateOptions, **extra: Any) -> JobParams:
        """``options`` as run (resolved: seed and shift filled in), plus what is not an option (preset, turbo,
        speakers, clips, forwards) or is known better after the job (``model``: the adapter it ran)."""
        values = asdict(options)
        reported = {PARAM_NAMES[k]: v for k, v in values.items() if k in PARAM_NAMES}
        reported["negative_prompt"] = "default" if options.negative_prompt is None else "custom"
        reported["size"] = f"{options.size[1]}x{options.size[0]}" if options.size else "bucket"
        if options.size:
            reported["resolution"] = "custom"  # width/height replace the bucket
        return cls(**{**reported, **extra})


class WorkerInfo(_Model):
    gpu: str
    cold_start: bool = Field(description="the first job of this worker")
    model_load_s: float
    version: str
    attention: str = Field(description="attention kernel in use")
    memory_plan: str
    speed_lora: str | None = Field(description="speed LoRA file name, or null")
    default_preset: str
    models: list[str] = Field(description="the audio adapters this worker holds (MULTITALK_ADAPTERS)")
    default_model: str = Field(description="the model of a job that names none (MULTITALK_MODEL)")
    tts: bool = Field(False, description="text instead of audio is available (Kokoro-82M loaded)")


class EstimateInfo(_Model):
    """The time and cost the worker estimated before sampling (``worker/estimate.py``)."""

    windows: int = Field(description="windows (clips) in the job")
    windows_left: int = Field(description="windows to generate (an earlier run's are done)")
    per_window_s: float = Field(description="seconds per window, from windows measured earlier on this GPU")
    seconds: float = Field(description="estimated seconds from the estimate to the result")
    cost_usd: float | None = Field(description="seconds x the GPU's price per second; null when unknown")
    basis: str = Field(description="the setup measured and how (same settings, or scaled by work per window)")
    samples: int = Field(description="windows measured")
    scaled: bool = Field(description="scaled from other settings (size, frames per window, steps, passes)")


class JobOutput(_Model):
    """What a successful job returns (``output``). Optional fields are absent, not null, when they do not apply."""

    model_config = ConfigDict(extra="forbid", title="MultiTalk job output")

    video_url: str | None = Field(None, description="presigned GET URL (S3)")
    video_s3_key: str | None = Field(None, description="object key (S3)")
    video_path: str | None = Field(None, description="file on the network volume")
    video_base64: str | None = Field(None, description="the MP4, base64 (inline)")
    video: VideoInfo
    thumbnail_url: str | None = Field(None, description="first frame, JPEG (S3), when output.thumbnail")
    thumbnail_path: str | None = Field(None, description="first frame on the volume, when output.thumbnail")
    thumbnail_base64: str | None = Field(None, description="first frame inline, when output.thumbnail")
    speech_url: str | None = Field(None, description="text requests: the speech, WAV (S3)")
    speech_s3_key: str | None = Field(None, description="text requests: the speech's object key (S3)")
    speech_path: str | None = Field(None, description="text requests: the speech on the network volume")
    speech_base64: str | None = Field(None, description="text requests: the speech inline, WAV base64")
    speech: SpeechInfo | None = Field(None, description="text requests: the synthesised speech")
    speech_seconds: float | None = Field(None, description="text requests: seconds of speech (= the video's)")
    seed: int
    params: JobParams
    timings: dict[str, float] = Field(description="seconds per stage (download, audio, ..., upload, total)")
    worker: WorkerInfo
    warnings: list[str]
    gpu_seconds: float | None = Field(
        None, description="seconds the job held the GPU worker, from its start to its result (what is billed)"
    )
    first_segment_s: float | None = Field(
        None,
        description="time to first segment: seconds from the job's start on the worker to the first segment "
        "delivered (segments.storage says where); absent when no segment was delivered",
    )
    estimate: EstimateInfo | None = Field(
        None, description="the time and cost estimated before sampling; absent without measured windows on this GPU"
    )
    segments: SegmentsSummary | None = Field(
        None, description="the segments delivered while the job ran, as they were streamed (worker/delivery.py)"
    )

    def payload(self) -> dict:
        """The job's ``output``: optional fields (default ``None``) that were not given are left out."""
        return _present(self)


def _present(model: BaseModel) -> dict:
    out = {}
    for name, info in type(model).model_fields.items():
        if info.default is None and name not in model.model_fields_set:
            continue
        value = getattr(model, name)
        out[name] = _present(value) if isinstance(value, BaseModel) else value
    return out


def output_schema() -> dict[str, Any]:
    return JobOutput.model_json_schema()


SCHEMA_FILE = "docs/schema/job_output.schema.json"


if __name__ == "__main__":  # python -m multitalk_serve.worker.response > docs/schema/job_output.schema.json
    import json

    print(json.dumps(output_schema(), indent=1))
