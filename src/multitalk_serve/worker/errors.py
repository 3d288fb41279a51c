"""Stable error codes of the worker. Every failure a caller sees is ``"<CODE>: <message>"``.

| code | meaning | retry? |
|---|---|---|
| E_INPUT | malformed request: unknown field, wrong type, out of range, conflicting fields | no, fix it |
| E_DOWNLOAD | an input could not be fetched (HTTP error, timeout, deadline, too large, blocked, missing) | maybe |
| E_IMAGE | the image (or mask_image) is unreadable, too small or too large, or a person box is wrong | no |
| E_VIDEO | the video is unreadable, has no video stream or frames, is too large or long, or is an image | no |
| E_AUDIO | an audio input is unreadable, empty, not finite, has no audio track, or is too long | no |
| E_OOM | the GPU ran out of memory; the message says which settings would fit | with smaller settings |
| E_CUDA | a CUDA fault; the worker is recycled after this job | yes |
| E_CANCELLED | the job was cancelled or timed out, during a download or between sampling steps | - |
| E_TOO_LONG | estimated not to finish within its execution timeout; refused before sampling | with a longer timeout |
| E_UPLOAD | the video could not be stored anywhere (upload failed and no fallback) | yes |
| E_OUTPUT_TOO_LARGE | the video is too large to return inline and no storage is configured | configure S3 |
| E_MODEL | the model files are missing or inconsistent | operator |
| E_BUSY | another run of the same job (same job_key or job id) is still in progress | later: it continues the job |
| E_PARALLEL | a rank of a multi-GPU worker failed or stopped answering; the worker exits to be replaced | yes |
| E_INTERNAL | anything else (a bug): the message names the exception | maybe |
| E_TTS_UNAVAILABLE | text on a worker without Kokoro-82M (``download --tts``) or the tts extra | operator |
| E_TEXT_EMPTY | text to speak: missing or only spaces | no |
| E_TEXT_TOO_LONG | text to speak: over 5000 characters | no |
| E_SPEECH_TOO_LONG | the speech passes MAX_DURATION_SECONDS (found while speaking, turn by turn) | no, shorter text |
| E_UNKNOWN_VOICE | a voice name the worker's Kokoro-82M/voices lacks (the message lists them) | no |
| E_VOICE_FILE | a voice file that is not a Kokoro voice tensor [510, 1, 256] | no |
| E_SPEAKER_TAG | (s3), a tag without a voice, text before the first tag, an empty turn, two voices without tags | no |
| E_UNREADABLE_TEXT | characters the G2P cannot read (other scripts, emoji, control characters), nothing to say | no |
| E_LANGUAGE | a language Kokoro cannot speak here | no |
| E_SPEECH_OPTION | speech_speed outside 0.5-2 | no |
"""

from __future__ import annotations

CODES = (
    "E_INPUT",
    "E_DOWNLOAD",
    "E_IMAGE",
    "E_VIDEO",
    "E_AUDIO",
    "E_OOM",
    "E_CUDA",
    "E_CANCELLED",
    "E_TOO_LONG",
    "E_UPLOAD",
    "E_OUTPUT_TOO_LARGE",
    "E_MODEL",
    "E_BUSY",
    "E_PARALLEL",
    "E_INTERNAL",
    # text to speech: the engine's SpeechInputError codes, and a worker without Kokoro
    "E_TTS_UNAVAILABLE",
    "E_TEXT_EMPTY",
    "E_TEXT_TOO_LONG",
    "E_SPEECH_TOO_LONG",
    "E_UNKNOWN_VOICE",
    "E_VOICE_FILE",
    "E_SPEAKER_TAG",
    "E_UNREADABLE_TEXT",
    "E_LANGUAGE",
    "E_SPEECH_OPTION",
)


class WorkerError(Exception):
    """A failure with a stable code; ``refresh`` asks RunPod to recycle the worker after this job."""

    def __init__(self, code: str, message: str, *, refresh: bool = False):
        if code not in CODES:
            raise ValueError(f"unknown error code {code}")
        super().__init__(message)
        self.code, self.message, self.refresh = code, message, refresh

    def payload(self) -> dict:
        out = {"error": f"{self.code}: {self.message}"}
        if self.refresh:
            out["refresh_worker"] = True
        return out


def classify(exc: BaseException) -> WorkerError:
    """Map an exception from the engine (or anywhere) to a WorkerError."""
    import torch

    from ..engine import (
        AudioError,
        CheckpointError,
        EngineError,
        GenerationCancelled,
        ImageInputError,
        SpeechInputError,
        VideoInputError,
    )

    if isinstance(exc, WorkerError):
        return exc
    if isinstance(exc, GenerationCancelled):
        return WorkerError("E_CANCELLED", "the job was cancelled between sampling steps")
    if isinstance(exc, SpeechInputError):
        code = exc.code if exc.code in CODES else "E_INPUT"
        return WorkerError(code, str(exc))
    if isinstance(exc, VideoInputError):
        return WorkerError("E_VIDEO", str(exc))
    if isinstance(exc, AudioError):
        return WorkerError("E_AUDIO", str(exc))
    if isinstance(exc, ImageInputError):
        return WorkerError("E_IMAGE", str(exc))
    if isinstance(exc, CheckpointError):
        return WorkerError("E_MODEL", str(exc))
    if isinstance(exc, EngineError):
        return WorkerError("E_INPUT", str(exc))
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return WorkerError("E_OOM", "the GPU ran out of memory")
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("CUDA error" in text or "illegal memory access" in text or "CUBLAS" in text):
        return WorkerError("E_CUDA", f"CUDA fault: {text.splitlines()[0]}", refresh=True)
    first = text.splitlines()[0] if text else ""
    return WorkerError("E_INTERNAL", f"{type(exc).__name__}: {first}")
