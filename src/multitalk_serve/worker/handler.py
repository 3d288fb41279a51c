"""The RunPod handler: validate -> fetch media -> ``MultiTalkPipeline.generate`` -> store -> result.

The pipeline is loaded once per worker. Jobs run one at a time in a worker thread so the SDK's event loop keeps
polling for stop signals; a cancelled or timed-out job stops its download at once (``media.py``) or its generation
between sampling steps, its temporary files are removed and its GPU memory released before the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from pydantic import ValidationError

from .. import __version__
from ..engine import (
    DTYPES,
    FPS,
    WORKER_NAMES,
    Box,
    ConfigError,
    EngineError,
    GenerateOptions,
    GenerationCancelled,
    InputNames,
    MultiTalkPipeline,
    Progress,
    ProgressClock,
    check_loaded,
    choose_preset,
    default_dtype,
    parse_plan,
    plan_speed_setup,
    preset_values,
    sniff_media,
)
from .config import S3Settings, WorkerConfig
from .delivery import SegmentPublisher, SegmentsSummary
from .errors import WorkerError, classify
from .estimate import JobTimer, TimingHistory, check_env, execution_timeout_with_source
from .fitness import FLASHTALK, INFINITETALK, default_preset_for, plan_models
from .jobstate import LOCK, JobFolders, JobLock
from .legacy import LegacyRequest, old_probe_facts
from .logs import install as install_log_scrubbing
from .media import MediaFetcher
from .response import JobOutput, JobParams, SpeechInfo, VideoInfo, WorkerInfo
from .schema import REALTIME, JobInput, MediaObject, describe_errors
from .storage import Storage

log = logging.getLogger("multitalk_serve.worker")

OOM_HELD_BYTES = 1 << 30  # GPU memory still held after an out-of-memory failure that makes us recycle the worker
HEALTH_PROBES = ({"test": "health_check"}, {"healthcheck": True})


def _device_and_dtype(config: WorkerConfig) -> tuple[str, torch.dtype]:
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if config.dtype is not None and config.dtype not in DTYPES:
        raise ConfigError(f"MULTITALK_DTYPE must be one of {sorted(DTYPES)}, got {config.dtype!r}")
    dtype = DTYPES[config.dtype] if config.dtype else default_dtype(device)
    return device, dtype


def _adapter_of(pipeline: MultiTalkPipeline) -> str:
    """The adapter a pipeline without an adapter list holds (its transformer's, else MultiTalk)."""
    return getattr(getattr(pipeline, "transformer", None), "audio_adapter", None) or "multitalk"


def _window(config: WorkerConfig) -> dict:
    """``frames_per_clip`` when ``MULTITALK_WINDOW_FRAMES`` sets it; unset, the model's (81, FlashTalk 33)."""
    return {"frames_per_clip": config.window_frames} if config.window_frames is not None else {}


def _request_fingerprint(request: JobInput, media: list[bytes | None]) -> str:
    """What a saved job state must match: the request's settings (the media by their bytes, not their URLs, which
    a client may re-sign; where the video goes does not matter) and the media."""
    media_fields = {n for n, f in JobInput.model_fields.items() if "Media" in str(f.annotation)}
    settings = request.model_dump(mode="json", exclude={"job_key", "output", *media_fields})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for data in media:
        digest.update(hashlib.sha256(data).digest() if data is not None else b"-")
    return digest.hexdigest()


def _empty(folder: Path, keep: str) -> None:
    """Remove what a folder holds except ``keep``."""
    for entry in folder.iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _is_image(data: bytes) -> bool:
    """Whether fetched bytes are a picture (the official JSON's ``cond_video`` may name one) rather than a video:
    from the file's signature (``sniff_media``), nothing decoded."""
    return sniff_media(data) == "image"


def load_speech(config: WorkerConfig, device: str):
    """Kokoro-82M for text requests, loaded once at start when ``MODEL_PATH/Kokoro-82M`` is there and the ``tts``
    extra imports: (synthesiser, None), else (None, why: the message of a text request's ``E_TTS_UNAVAILABLE``).
    A folder that is there but broken fails the start (``E_MODEL``), as any other component."""
    from ..engine import KOKORO_DIR

    folder = config.model_path / KOKORO_DIR
    if not folder.is_dir():
        return None, (
            f"text to speech is not available on this worker: {folder} is missing (Kokoro-82M, hexgrad/Kokoro-82M; "
            "provision it with `multitalk-serve download --tts`); send audio instead"
        )
    try:
        import kokoro  # noqa: F401  (the tts extra)
    except ImportError as exc:
        log.warning("%s is there but the tts extra is not installed (%s): text requests are refused", folder, exc)
        return None, (
            "text to speech is not available on this worker: the tts extra is not installed "
            "(pip install 'multitalk-serve[tts]'); send audio instead"
        )
    from ..engine import SpeechSynthesizer

    start = time.perf_counter()
    synth = SpeechSynthesizer.from_pretrained(config.model_path, device=device)
    log.info(
        "Kokoro-82M loaded from %s in %.1f s: text requests (voices %s)",
        folder,
        time.perf_counter() - start,
        ", ".join(synth.voices),
    )
    return synth, None


LOCAL_TEST_ID = "local_test"  # the RunPod SDK's id for every ``--test_input`` run


def job_id_of(job: dict) -> str:
    """The job's id; local ``--test_input`` runs all share one, so each gets a time stamp (their outputs would
    otherwise overwrite each other)."""
    job_id = str(job.get("id") or "job")
    if job_id == LOCAL_TEST_ID:
        job_id = f"{LOCAL_TEST_ID}-{time.strftime('%Y%m%d-%H%M%S')}-{time.perf_counter_ns() % 1_000_000:06d}"
    return job_id


class ProgressReporter:
    """Sends throttled ``progress_update``s (stage changes always; sampling steps at most every ``interval`` s)
    and turns a set cancel flag into ``GenerationCancelled`` between steps."""

    def __init__(self, job: dict, cancel: threading.Event, interval: float, send=None, emit=None):
        self.job, self.cancel, self.interval = job, cancel, interval
        self.emit = emit  # stream mode: every body sent is also a streamed item
        self.segment: dict | None = None  # the latest delivered segment, repeated in the progress bodies
        self.send = send if send is not None else _runpod_progress
        self.start = time.monotonic()
        self.clock = ProgressClock(time.monotonic)  # time left with the VAE counted, not only the sampling steps
        self.last_sent = -1e9
        self.last_stage = None
        self.last_eta: float | None = None
        self.sent: list[dict] = []

    def __call__(self, progress: Progress) -> None:
        if self.cancel.is_set():
            raise GenerationCancelled("cancelled")
        _, left = self.clock.update(progress)
        now = time.monotonic()
        changed = progress.stage != self.last_stage
        if not changed and now - self.last_sent < self.interval:
            return
        elapsed = now - self.start
        pct = round(100 * progress.fraction, 1)  # of the sampling steps; eta_s counts the VAE too
        body = {"stage": progress.stage, "pct": pct, "elapsed_s": round(elapsed, 1)}
        if progress.total_steps:
            body.update(
                step=progress.step,
                total_steps=progress.total_steps,
                clip=progress.clip,
                total_clips=progress.total_clips,
            )
        if progress.total:
            body.update(done=progress.done, total=progress.total)
        if left is not None and progress.stage != "done":
            body["eta_s"] = round(left, 1)
        self.last_eta = body.get("eta_s")
        self.last_sent, self.last_stage = now, progress.stage
        self._deliver({"type": "progress", **body})

    def segment_ready(self, event: dict) -> None:
        """A window's segment is delivered: streamed at once, and in every progress body from now on (for /status)."""
        if self.last_eta is not None and "eta_s" not in event:
            event = {**event, "eta_s": self.last_eta}
        # repeated in /status progress bodies without its data (inline segments travel in the stream only)
        self.segment = {k: v for k, v in event.items() if k != "base64"}
        if self.emit is not None:
            self._emit(event)
        self._send({"type": "progress", "stage": "segment", "elapsed_s": round(time.monotonic() - self.start, 1)})

    def _deliver(self, body: dict) -> None:
        if self.emit is not None:
            self._emit(body)
        self._send(body)

    def _send(self, body: dict) -> None:
        if self.segment is not None:
            body = {**body, "segment": self.segment}
        self.sent.append(body)
        try:
            self.send(self.job, body)
        except Exception as exc:  # progress must never fail a job
            log.debug("progress update failed: %s", type(exc).__name__)

    def _emit(self, item: dict) -> None:
        try:
            self.emit(item)
        except Exception as exc:
            log.debug("stream item not sent: %s", type(exc).__name__)


def _runpod_progress(job: dict, body: dict) -> None:
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return  # local modes have nowhere to send progress
    import runpod

    runpod.serverless.progress_update(job, body)


class Worker:
    """One per process: holds the loaded pipeline and turns RunPod jobs into results."""

    def __init__(
        self,
        pipeline: MultiTalkPipeline,
        config: WorkerConfig,
        load_seconds: float = 0.0,
        default_model: str | None = None,
        speech=None,
        speech_missing: str | None = None,
    ):
        self.pipeline = pipeline
        self.config = config
        # text to speech: Kokoro-82M (a SpeechSynthesizer) loaded once, or None and why (for E_TTS_UNAVAILABLE)
        self.speech = speech
        self.speech_missing = speech_missing
        # the adapters the pipeline holds, and the model a request gets when it names none
        self.held = list(getattr(pipeline, "adapters", None) or [_adapter_of(pipeline)])
        fallback = "multitalk" if "multitalk" in self.held else FLASHTALK if FLASHTALK in self.held else "infinitetalk"
        self.default_model = default_model or config.model or fallback
        # the preset of a job that names none: MULTITALK_PRESET, else the default model's (FlashTalk: realtime)
        self.default_preset = config.preset or default_preset_for(self.default_model)
        self.load_seconds = load_seconds
        self.jobs_done = 0
        self.gpu = torch.cuda.get_device_name(pipeline.device) if pipeline.device.type == "cuda" else "cpu"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="multitalk-job")
        volume = config.volume_path if config.volume_mounted else None
        self.folders = JobFolders(volume, config.job_state_ttl_s, config.job_lock_wait_s)  # resume (jobstate.py)
        self.folders.sweep()
        self.timing_history = TimingHistory.on_volume(config.volume_path, config.volume_mounted)  # estimate.py
        self._baseline_allocated = self._allocated()  # GPU memory held by the loaded models
        install_log_scrubbing()

    @classmethod
    def from_config(cls, config: WorkerConfig | None = None) -> Worker:
        config = config or WorkerConfig()
        check_env()  # a bad GPU_PRICE_PER_HOUR / EXECUTION_TIMEOUT_SECONDS fails the start, not a job
        # MULTITALK_ADAPTERS / MULTITALK_MODEL, files present; MULTITALK_PRESET fits the model (realtime: FlashTalk)
        adapters, default_model = plan_models(config)
        default_preset = default_preset_for(default_model, config.preset)
        device, dtype = _device_and_dtype(config)
        start = time.perf_counter()
        speed = plan_speed_setup(
            default_preset, config.speed_lora_path(), config.speed_lora_scale, config.fuse_speed_lora, WORKER_NAMES
        )
        # MULTITALK_WINDOW_FRAMES / MULTITALK_MOTION_FRAMES: wrong values for the default model fail the start
        window = GenerateOptions.from_preset(
            default_preset, model=default_model, motion_frames=config.motion_frames, **_window(config)
        )
        try:
            window.validate()
        except EngineError as exc:
            raise ConfigError(f"MULTITALK_WINDOW_FRAMES / MULTITALK_MOTION_FRAMES: {exc}") from None
        if config.memory_plan not in (None, "auto"):
            parse_plan(config.memory_plan, gguf_bytes=0)  # a wrong MULTITALK_MEMORY_PLAN fails the start, not a job
        pipeline = MultiTalkPipeline.from_pretrained(
            config.model_path,
            transformer=config.transformer,
            device=device,
            dtype=dtype,
            memory_plan=config.memory_plan,
            plan_resolution=config.max_resolution,
            attention=config.attention,
            speed=speed,
            setting_names=WORKER_NAMES,
            compile=config.compile,
            **({"adapters": adapters} if adapters is not None else {}),
        )
        seconds = time.perf_counter() - start
        for note in pipeline.notes:
            log.warning(note)
        check_loaded(speed, pipeline.speed_lora, pipeline.notes, WORKER_NAMES)
        plan = pipeline.memory_plan.name if pipeline.memory_plan else f"all resident ({dtype})"
        log.info(
            "pipeline loaded from %s on %s in %.1f s: memory plan %s, attention %s, speed LoRA %s, models %s "
            "(default %s)",
            config.model_path,
            device,
            seconds,
            plan,
            pipeline.attention_backend,
            speed.speed_lora or "none",
            ", ".join(getattr(pipeline, "adapters", None) or [_adapter_of(pipeline)]),
            default_model,
        )
        if config.warmup:
            log.info("warm-up generation done in %.1f s (MULTITALK_WARMUP)", pipeline.warm_up())
        speech, missing = load_speech(config, device)
        return cls(pipeline, config, seconds, default_model, speech=speech, speech_missing=missing)

    # --- RunPod entry points -----------------------------------------------------------------------------------
    async def handle_stream(self, job: dict):
        """The generator handler (``MULTITALK_STREAM``): yields progress and segment items as the job makes them,
        then ``{"type": "result", ...}`` (or the ``{"error": ...}`` that fails the job)."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: dict) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        future = loop.run_in_executor(self._executor, self.run, job, cancel, emit)
        try:
            while not future.done():
                getter = asyncio.ensure_future(items.get())
                done, _ = await asyncio.wait({getter, future}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
            while not items.empty():  # what the job emitted before it returned
                yield items.get_nowait()
            output = future.result()
            yield output if "error" in output else {"type": "result", **output}
        except (asyncio.CancelledError, GeneratorExit):
            cancel.set()
            log.info("job %s: stop requested", job.get("id"))
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(future), timeout=120)
            raise

    async def handle(self, job: dict) -> dict:
        """The async handler given to ``runpod.serverless.start``."""
        cancel = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(self._executor, self.run, job, cancel)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()  # stops between sampling steps; the job's files and GPU memory are released
            log.info("job %s: stop requested", job.get("id"))
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(future), timeout=120)
            raise

    def run(self, job: dict, cancel: threading.Event | None = None, emit=None) -> dict:
        """Process one job synchronously; always returns a result dict (errors as ``{"error": "CODE: ..."}``).
        ``emit``: called with every progress and segment item (stream mode)."""
        cancel = cancel or threading.Event()
        job_id = job_id_of(job)
        started = time.perf_counter()
        workdir = Path(tempfile.mkdtemp(prefix="multitalk-job-"))
        legacy = None
        try:
            raw = job.get("input")
            if not isinstance(raw, dict):
                raise WorkerError("E_INPUT", "input must be a JSON object")
            if raw in HEALTH_PROBES:
                return self.health()
            legacy = LegacyRequest.detect(raw)  # the original worker's request shapes (legacy.py)
            if legacy is not None and legacy.probe:
                return legacy.probe_answer(self.health(), old_probe_facts(self.config, self.gpu))
            request_s3 = S3Settings.from_request(job["s3Config"]) if job.get("s3Config") else None
            bucket = request_s3 or self.config.s3
            if legacy is not None:
                raw = legacy.translate(
                    bucket is not None,
                    self.config.max_input_bytes,
                    preset_values("balanced")["cache_threshold"],
                    default_image=self.config.original_worker_image,
                )
            try:
                request = JobInput.model_validate(raw)
            except ValidationError as exc:
                raise WorkerError("E_INPUT", describe_errors(exc)) from None
            output = self._generate(job, job_id, request, request_s3, workdir, cancel, started, emit).payload()
            if legacy is not None:
                output = legacy.answer(output, bucket.bucket if bucket is not None else None)
            self.jobs_done += 1
            return output
        except BaseException as exc:
            error = classify(exc)
            if error.code == "E_OOM":
                error = self._after_oom(job)
            if legacy is not None:
                error = legacy.rename(error)
            log.warning("job %s failed: %s: %s", job_id, error.code, error.message)
            return error.payload()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if self.pipeline.device.type == "cuda":
                torch.cuda.empty_cache()

    # --- one generation ---------------------------------------------------------------------------------------
    def _speak(self, request: JobInput, fetcher: MediaFetcher, reporter, timings: dict) -> tuple[list[bytes], object]:
        """Text instead of audio: the voices (names, or voice files fetched like any media), then the speech
        (Kokoro-82M), before any other download. Returns one WAV a speaker (``audio_type`` para) and the speech."""
        if self.speech is None:
            raise WorkerError("E_TTS_UNAVAILABLE", f"{request.speech_field}: {self.speech_missing}")
        t = time.perf_counter()
        voices = [
            fetcher.fetch(v, request.voice_field(i), "voice") if isinstance(v, MediaObject) else v
            for i, v in enumerate(request.speech.voices)
        ]
        timings["download"] = time.perf_counter() - t
        reporter(Progress(stage="speech"))
        t = time.perf_counter()
        speech = self.speech.synthesize(
            dataclasses.replace(request.speech, voices=tuple(voices)), max_seconds=self.config.max_duration_s
        )
        timings["speech"] = time.perf_counter() - t
        return speech.track_wavs(), speech

    def _generate(
        self, job, job_id, request: JobInput, request_s3, workdir: Path, cancel, started, emit=None
    ) -> JobOutput:
        timings: dict[str, float] = {}
        warnings: list[str] = []
        cold = self.jobs_done == 0

        options, preset = self._options(request, warnings)  # every check of the request comes before any fetch
        reporter = ProgressReporter(job, cancel, self.config.progress_interval_s, emit=emit)
        fetcher = MediaFetcher(self.config, request_s3 or self.config.s3, cancel)  # bounded in time, cancellable
        speech = None
        if request.speech is not None:  # text: spoken first (its errors come before the other downloads)
            audio, speech = self._speak(request, fetcher, reporter, timings)
            options = dataclasses.replace(options, audio_type=speech.audio_type)

        t = time.perf_counter()
        image = source_video = mask = None
        if request.video_field is None:
            image = fetcher.fetch(request.image, request.image_field, "image")
        elif request.video_field == "cond_video":  # the official JSON's: a video, or an image
            data = fetcher.fetch(request.video, request.video_field, "source")
            image, source_video = (data, None) if _is_image(data) else (None, data)
        else:
            source_video = fetcher.fetch(request.video, request.video_field, "video")
        if request.mask_image is not None:
            mask = fetcher.fetch(request.mask_image, "mask_image", "image")
        if speech is None:
            audio = [
                None if a is None else fetcher.fetch(a, request.audio_field(i), "audio")
                for i, a in enumerate(request.audio)
            ]
        timings["download"] = timings.get("download", 0.0) + time.perf_counter() - t

        boxes = None
        if request.boxes is not None:
            boxes = [Box(*b) for b in request.boxes]
        elif request.bbox is not None:
            boxes = [Box.from_official(request.bbox[p]) for p in ("person1", "person2") if p in request.bbox]
        if image is not None and "source_end" in request.model_fields_set:
            warnings.append("source_end: applies to a video source; this job animates an image")
        # messages from the engine name each input as this request sent it (image_url, cond_video, ...)
        names = InputNames(
            image=request.source_field if image is not None else "image",
            video=request.video_field or "video",
            mask="mask_image",
            boxes="bbox" if request.bbox is not None and request.boxes is None else "boxes",
            box="bbox.person{n}" if request.bbox is not None and request.boxes is None else "boxes: person {n}",
        )
        extra = {"video": source_video} if source_video is not None else {}
        if mask is not None:
            extra["mask"] = mask

        video = workdir / "video.mp4"
        thumbnail = workdir / "thumbnail.jpg" if request.output.thumbnail else None
        # the job folder: segments and the loop's state, kept on the volume under the job's key (resume)
        key = request.job_key or job_id
        fingerprint = _request_fingerprint(request, [image, source_video, mask, *audio])
        self.folders.sweep()
        job_dir = self.folders.folder(key, workdir)
        lock = None
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            if self.folders.persistent:
                lock = JobLock(job_dir)
                lock.acquire(self.config.job_lock_wait_s, cancel, key)
        except OSError as exc:  # the volume cannot hold the job's state: the job runs, without resume
            warnings.append(f"the job's state cannot be kept on the volume ({exc.strerror or exc}): no resume")
            job_dir = workdir / "job"
        timeout, timeout_source = execution_timeout_with_source(job, request.execution_timeout_s)
        memory_plan = self._setup()["memory_plan"]
        timer = JobTimer(self.timing_history, self.gpu, memory_plan, timeout, started, source=timeout_source, cold=cold)
        try:
            publisher = SegmentPublisher(  # under the job's key: a resend with job_key finds what was delivered
                self.config, request_s3, key, request.output, already=self.folders.published(job_dir)
            )

            def on_segment(segment) -> None:
                timer.on_segment(segment)  # the window's time, for later estimates
                reporter.segment_ready(publisher.publish(segment))
                timer.on_delivered()  # the first one: the job's time to first segment
                if lock is not None:
                    self.folders.save_published(job_dir, publisher.published_events())

            result = self.pipeline.generate(
                image,
                audio,
                request.prompt,
                video,
                boxes=boxes,
                options=options,
                callback=reporter,
                thumbnail=thumbnail,
                names=names,
                job_dir=job_dir,
                fingerprint=fingerprint,
                on_segment=on_segment,
                on_plan=timer.on_plan,  # the time and cost estimate; E_TOO_LONG before any sampling
                **extra,
            )
            delivered = publisher.finish()
            timings["segments"] = delivered["seconds"]
            warnings += publisher.warnings()
            for stage, seconds in result.timings.items():
                if stage != "total":
                    timings[stage] = seconds

            speech_file = None
            if speech is not None:  # the speech goes where the video goes (the video's name with .wav)
                speech_file = workdir / "speech.wav"
                speech_file.write_bytes(speech.wav())
            t = time.perf_counter()
            stored = Storage(self.config, request_s3).store(job_id, video, thumbnail, request.output, speech_file)
            timings["upload"] = time.perf_counter() - t
            timings["total"] = time.perf_counter() - started
            warnings += stored.warnings
            if lock is not None:  # stored: the job's state is no longer needed
                _empty(job_dir, keep=LOCK)
        finally:
            timer.record()  # also from a job that failed after some windows
            if lock is not None:
                lock.release()
                with contextlib.suppress(OSError):
                    job_dir.rmdir()  # gone when the job finished (else its state stays for a resume)

        where = {"video_url": stored.url, "video_s3_key": stored.key, "video_path": stored.path}
        where["video_base64"] = stored.base64
        thumbnails = {}
        if thumbnail is not None:
            thumbnails = {"thumbnail_url": stored.thumbnail_url, "thumbnail_path": stored.thumbnail_path}
            thumbnails["thumbnail_base64"] = stored.thumbnail_base64
            thumbnails = {k: v for k, v in thumbnails.items() if v or k == "thumbnail_url"}
        output = JobOutput(
            **{k: v for k, v in where.items() if v},
            **self._speech_fields(request, speech, speech_file, stored),
            video=VideoInfo(
                storage=stored.storage,
                url=stored.url,
                path=stored.path,
                file_name=Path(stored.key or stored.path or f"{job_id}.mp4").name,
                bytes=video.stat().st_size,
                duration_s=round(result.seconds, 3),
                frames=result.frames,
                width=result.width,
                height=result.height,
            ),
            **thumbnails,
            seed=result.seed,
            params=JobParams.from_options(
                GenerateOptions(**result.options),
                preset=preset,
                turbo=request.turbo,
                speakers=result.speakers,
                clips=result.clips,
                model=getattr(result, "model", None) or options.model,
                source="image" if image is not None else "video",
                **({"forwards": result.forwards} if result.forwards else {}),
            ),
            timings={k: round(v, 3) for k, v in timings.items()},
            worker=WorkerInfo(
                gpu=self.gpu,
                cold_start=cold,
                model_load_s=round(self.load_seconds, 2),
                version=__version__,
                **self._setup(),
            ),
            warnings=warnings + result.notes,
            segments=SegmentsSummary(**delivered),
            **timer.result(),
        )
        log.info(
            "job %s done: %d frames %dx%d, %d speaker(s), %d clip(s), %.1f s, stored: %s",
            job_id,
            result.frames,
            result.width,
            result.height,
            result.speakers,
            result.clips,
            timings["total"],
            stored.storage,
        )
        return output

    @staticmethod
    def _speech_fields(request: JobInput, speech, speech_file: Path | None, stored) -> dict:
        """The result's speech fields of a text request (where the WAV went, its duration); {} for audio."""
        if speech is None:
            return {}
        where = {"speech_url": stored.speech_url, "speech_s3_key": stored.speech_key}
        where |= {"speech_path": stored.speech_path, "speech_base64": stored.speech_base64}
        storage = "none"
        if stored.speech_url or stored.speech_base64 or stored.speech_path:
            storage = "s3" if stored.speech_url else "volume" if stored.speech_path else "inline"
        voices = [v if isinstance(v, str) else "file" for v in request.speech.voices]
        info = SpeechInfo(
            storage=storage,
            url=stored.speech_url,
            path=stored.speech_path,
            bytes=speech_file.stat().st_size,
            seconds=round(speech.seconds, 3),
            sample_rate=speech.rate,
            speakers=len(speech.tracks),
            turns=len(speech.turns),
            voices=[Path(v).name.removesuffix(".pt") for v in voices],
        )
        return {**{k: v for k, v in where.items() if v}, "speech": info, "speech_seconds": round(speech.seconds, 3)}

    def _preset(self, request: JobInput, model: str, warnings: list[str]) -> tuple[str, dict]:
        """The preset this job starts from, and its values (the engine's preset policy): the request's, else
        realtime for FlashTalk (the only one it runs), else the worker's default."""
        default = REALTIME if model == FLASHTALK else self.default_preset
        try:
            return choose_preset(
                request.preset,
                default,
                lora_loaded=self.pipeline.speed_lora is not None,
                lora_fused=self.pipeline.speed_lora_fused,
                turbo=bool(request.turbo),
                warnings=warnings,
            )
        except EngineError as exc:
            raise WorkerError("E_INPUT", str(exc)) from exc

    def _options(self, request: JobInput, warnings: list[str]) -> tuple[GenerateOptions, str]:
        given = request.model_fields_set
        model = self._model(request)  # a model this worker does not hold is refused first
        if model == FLASHTALK:  # the worker's default (a request naming flashtalk was checked by the schema)
            problems = request.flashtalk_problems()
            if problems:
                held = ", ".join(self.held)
                raise WorkerError(
                    "E_INPUT", "; ".join(problems) + f"; this worker holds only {held} (MULTITALK_ADAPTERS)"
                )
            if request.negative_prompt is not None:
                warnings.append("negative_prompt: FlashTalk runs without guidance, so no negative prompt is used")
        preset, values = self._preset(request, model, warnings)
        if (model == FLASHTALK) != (preset == REALTIME):
            raise WorkerError("E_INPUT", f"preset: {preset} does not run model {model}; realtime runs flashtalk only")

        def chosen(field: str, *aliases: str, key: str):
            explicit = any(n in given for n in (field, *aliases))
            return getattr(request, field) if explicit else values[key]

        steps = chosen("sampling_steps", "sample_steps", key="steps")
        text_scale = chosen("text_guide_scale", "sample_text_guide_scale", key="text_scale")
        audio_scale = chosen("audio_guide_scale", "sample_audio_guide_scale", key="audio_scale")
        shift = chosen("shift", "sample_shift", key="shift")
        cache_threshold = request.cache_threshold if request.cache_threshold is not None else values["cache_threshold"]
        frames = request.num_frames
        if request.duration is not None:
            frames = max(1, round(request.duration * FPS))
        self._check_length_and_speakers(request, frames, warnings)
        seed = None if request.seed in (None, -1) else request.seed
        options = GenerateOptions(
            resolution=request.resolution,
            mode=request.mode,
            steps=steps,
            shift=shift,
            text_scale=text_scale,
            audio_scale=audio_scale,
            use_apg=request.use_apg,
            seed=seed,
            negative_prompt=request.negative_prompt,
            audio_type=request.audio_type,
            color_correction=request.color_correction,
            max_duration_s=self.config.max_duration_s,
            crf=request.output.crf,
            size=(request.height, request.width) if request.width else None,
            num_frames=frames,
            cache_threshold=cache_threshold,
            speed_lora=bool(values["speed_lora"]),
            model=model,
            source_end=request.source_end,
            keep_background=request.keep_background,
            feather=request.feather,
            motion_frames=self.config.motion_frames,
            **_window(self.config),
        )
        return options, preset

    def _model(self, request: JobInput) -> str:
        """The audio adapter this job runs: the request's ``model`` (``infinitetalk``: single for one speaker,
        multi for two), else the worker's default (a video: InfiniteTalk). ``E_INPUT`` naming ``model`` and the
        models this worker holds when it does not hold the one needed; checked before anything is fetched."""
        held = self.held
        asked, how = request.model, "model"
        if asked is None and request.preset == REALTIME:
            asked, how = FLASHTALK, "model (not given; preset realtime runs flashtalk)"
        if asked is None:
            asked, how = self.default_model, "model (not given; the worker's default, MULTITALK_MODEL)"
            if asked in ("multitalk", FLASHTALK) and request.video_field is not None:
                asked, how = "infinitetalk", f"model (not given; {request.video_field} needs InfiniteTalk)"
        adapter = asked
        if asked == "infinitetalk":
            adapter = INFINITETALK[0] if request.speakers == 1 else INFINITETALK[1]
        if adapter not in held:
            chosen = asked if adapter == asked else f"{asked} with {request.speakers} speaker(s) ({adapter})"
            raise WorkerError(
                "E_INPUT",
                f"{how}: {chosen} is not held by this worker; it holds {', '.join(held)} (MULTITALK_ADAPTERS)",
            )
        return adapter

    def _check_length_and_speakers(self, request: JobInput, frames: int | None, warnings: list[str]) -> None:
        """An explicit length over the cap is refused before anything is fetched; ``para`` with one speaker is
        reported (it only arranges two tracks)."""
        cap = self.config.max_duration_s
        if frames is not None and frames / FPS > cap:
            if request.duration is not None:
                field, asked = "duration", f"{request.duration:g} s"
            else:
                field, asked = (
                    "num_frames",
                    f"{request.num_frames} frames ({request.num_frames / FPS:g} s at {FPS} fps)",
                )
            raise WorkerError(
                "E_INPUT", f"{field}: {asked} is over this worker's {cap:g} s limit (MAX_DURATION_SECONDS)"
            )
        if request.speech is not None:
            if request.speakers == 2 and "audio_type" in request.model_fields_set and request.audio_type == "add":
                warnings.append("audio_type: a dialogue's tracks are laid out turn by turn already; it runs as para")
        elif request.audio_type == "para" and sum(track is not None for track in request.audio) == 1:
            warnings.append("audio_type: para arranges two voices at once; with one audio track it has no effect")

    def _allocated(self) -> int:
        return torch.cuda.memory_allocated(self.pipeline.device) if self.pipeline.device.type == "cuda" else 0

    def _after_oom(self, job: dict) -> WorkerError:
        """Release what the failed job held; if GPU memory stays held beyond the models, ask RunPod to recycle the
        worker after this job (its state is no longer trustworthy) rather than fail the next jobs too."""
        import gc

        gc.collect()
        if self.pipeline.device.type == "cuda":
            torch.cuda.empty_cache()
        held = self._allocated() - self._baseline_allocated
        advice = self._oom_advice(job)
        if held > OOM_HELD_BYTES:
            return WorkerError(
                "E_OOM",
                f"{advice}. {held / 2**30:.1f} GB stayed allocated after the failure: the worker restarts after "
                "this job",
                refresh=True,
            )
        return WorkerError("E_OOM", advice)

    def _oom_advice(self, job: dict) -> str:
        raw = job.get("input") if isinstance(job.get("input"), dict) else {}
        total = (
            torch.cuda.get_device_properties(self.pipeline.device).total_memory / 2**30
            if torch.cuda.is_available()
            else 0
        )
        hints = []
        if raw.get("resolution") == "720p":
            hints.append("resolution 480p")
        if raw.get("width"):
            hints.append("a smaller width/height")
        plan = self.pipeline.memory_plan.name if self.pipeline.memory_plan else "bf16, all resident"
        if "group-offload" not in plan:
            hints.append("a worker with a smaller memory plan (MULTITALK_MEMORY_PLAN=fp8+t5-offload+group-offload)")
        hints.append("a GPU with more memory")
        return (
            f"the GPU ran out of memory ({total:.0f} GB card, memory plan {plan}); settings that would fit: "
            + ", or ".join(hints)
        )

    def _setup(self) -> dict:
        """How the models are set up on this worker (reported with every result and by the health probe)."""
        pipe = self.pipeline
        return {
            "attention": str(pipe.attention_backend),
            "memory_plan": pipe.memory_plan.name if pipe.memory_plan else "all resident",
            "speed_lora": pipe.speed_lora.name if pipe.speed_lora else None,
            "default_preset": self.default_preset,
            "models": list(self.held),
            "default_model": self.default_model,
            "tts": self.speech is not None,
        }

    def health(self) -> dict:
        """Answer to the health probe: the worker is up and what it runs; no generation."""
        info = {
            "status": "healthy",
            "model_path": str(self.config.model_path),
            "gpu": self.gpu,
            "model_load_s": round(self.load_seconds, 2),
            "jobs_done": self.jobs_done,
            "version": __version__,
            **self._setup(),
        }
        if self.pipeline.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.pipeline.device)
            info["gpu_memory_free_gb"] = round(free / 1e9, 2)
            info["gpu_memory_total_gb"] = round(total / 1e9, 2)
        return info
