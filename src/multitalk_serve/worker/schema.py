"""The job input: one pydantic model, strict (unknown fields are errors, JSON types are not converted), published
as JSON Schema in docs/schema/.

Besides our canonical fields it accepts the names other MultiTalk front ends use, so their clients keep working:
the official JSON (``cond_image``, ``cond_audio{person1,person2}``, ``audio_type``, ``bbox``, ``sample_steps`` ...),
hosted APIs (``image_url``, ``audio_url``, ``first_audio_url``/``second_audio_url``, ``left_audio``/``right_audio``;
for InfiniteTalk fal's ``video_url``, WaveSpeed's ``video`` and ``mask_image``, the official JSON's ``cond_video``)
and the original RunPod worker (``condition_image``/``image_s3_key``, ``audio_1``/``audio_s3_key``,
``output_format``, ``turbo``). A value may be given under one name only.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..engine import MAX_SPEAKERS, MAX_STEPS, SpeechRequest, tagged_speakers
from .config import MAX_JOB_SECONDS

MODELS = ("multitalk", "infinitetalk", "infinitetalk-single", "infinitetalk-multi", "flashtalk")  # MODEL_CHOICES (test)
PRESET_NAMES = ("quality", "balanced", "fast", "realtime")  # the engine's PRESETS (test)
FLASHTALK, REALTIME = "flashtalk", "realtime"  # the distilled one-speaker model and the one preset it runs
IMAGE_FIELDS = ("image", "image_url", "cond_image", "condition_image", "image_s3_key")
VIDEO_FIELDS = ("video", "video_url", "cond_video")
DEFAULT_PROMPT = "A person is talking naturally, facing the camera, with natural facial expressions."
SAFE_PATH = re.compile(r"^[A-Za-z0-9._\-/]*$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9._\-]+$")
DEFAULT_VOICES = ("af_heart", "am_adam")  # text without voice: the official examples' voices for person 1 and 2
TEXT_FIELDS = ("text", "tts_audio", "text_input", "first_text_input", "second_text_input")  # give the speech as text
AUDIO_FIELDS = (
    "audio",
    "audio_url",
    "audio_s3_key",
    "audio_1",
    "audio_2",
    "first_audio_url",
    "second_audio_url",
    "left_audio",
    "right_audio",
    "cond_audio",
)
FAL_TEXT_FIELDS = ("text_input", "first_text_input", "second_text_input", "voice1", "voice2")


class MediaObject(BaseModel):
    """A media input given as an object: exactly one of ``url``, ``base64``, ``path``, ``s3_key``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    url: str | None = Field(None, description="http(s) URL (public addresses only)")
    base64: str | None = Field(None, description="plain base64 or a data URI")
    path: str | None = Field(None, description="path on the network volume (absolute, or relative to it)")
    s3_key: str | None = Field(None, description="object key in the configured bucket")

    @model_validator(mode="after")
    def _one(self) -> MediaObject:
        given = [k for k in ("url", "base64", "path", "s3_key") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of url, base64, path, s3_key (got {given or 'none'})")
        return self


Media = str | MediaObject
MEDIA_DOC = "an http(s) URL, a data URI or plain base64, an absolute path under the network volume, or an object"


class OutputOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal["auto", "s3", "volume", "base64"] = Field(
        "auto", description="auto: per-request s3Config, else the environment's bucket, else the volume, else inline"
    )
    prefix: str | None = Field(None, max_length=200, description="key prefix under the worker's OUTPUT_PREFIX")
    filename: str | None = Field(None, max_length=120, description="file name (letters, digits, . _ -)")
    thumbnail: bool = Field(False, description="also return the first frame as JPEG")
    crf: int = Field(19, ge=0, le=51, description="H.264 quality (lower is better and bigger)")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not SAFE_PATH.match(v) or ".." in v.split("/") or v.startswith("/"):
            raise ValueError("only letters, digits, '.', '_', '-' and '/' segments, no '..', not absolute")
        return v.strip("/") or None

    @field_validator("filename")
    @classmethod
    def _filename(cls, v: str | None) -> str | None:
        if v is not None and (not SAFE_NAME.match(v) or v in (".", "..")):
            raise ValueError("only letters, digits, '.', '_' and '-'")
        return v


class JobInput(BaseModel):
    """What a job's ``input`` may contain. Only the source (``image`` or ``video``) and one or two audio tracks are
    required."""

    # strict: numbers must be JSON numbers (integers for integer fields), booleans JSON booleans, text JSON strings:
    # "40", true for a number, 1 or "yes" for a boolean, boxes as text are refused, never converted; no NaN/Infinity
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, title="MultiTalk job input")

    prompt: str = Field(DEFAULT_PROMPT, min_length=1, max_length=4000, description="what happens in the video")
    image: Media | None = Field(None, description=f"reference image with one or two people: {MEDIA_DOC}")
    video: Media | None = Field(
        None,
        description=f"instead of image: a video to dub (InfiniteTalk; its soundtrack is replaced): {MEDIA_DOC}",
    )
    model: Literal[MODELS] | None = Field(  # type: ignore[valid-type]
        None,
        description="multitalk, infinitetalk (single for one speaker, multi for two), infinitetalk-single, "
        "infinitetalk-multi, or flashtalk (SoulX-FlashTalk: one speaker, an image, preset realtime; a worker of its "
        "own); default: preset realtime's flashtalk, else the worker's MULTITALK_MODEL (with a video: infinitetalk)",
    )
    source_end: Literal["hold", "pingpong"] = Field(
        "hold", description="a video shorter than the audio: hold its last frame, or play it back and forth"
    )
    keep_background: bool = Field(
        False,
        description="keep the rest of the frame: only the speaker regions (boxes, or mask_image) are regenerated, "
        "everything else is the source's",
    )
    mask_image: Media | None = Field(
        None,
        description="keep_background: an image the size of the source, white = the region regenerated (implies "
        f"keep_background): {MEDIA_DOC}",
    )
    feather: float | None = Field(
        None, ge=0, le=256, description="keep_background: edge width in output pixels (default: automatic)"
    )
    audio: list[Media | None] | Media | None = Field(
        None, description=f"one track per speaker (1 or 2; null = silent speaker): {MEDIA_DOC}"
    )
    audio_type: Literal["add", "para"] = Field("add", description="two speakers: add = in turn, para = at once")
    text: str | None = Field(
        None,
        description="instead of audio: the speech as text, spoken by Kokoro-82M (a worker with MODEL/Kokoro-82M): "
        "plain text for one speaker, or a dialogue '(s1) ... (s2) ...' for two (each silent while the other talks); "
        "at most 5000 characters",
    )
    voice: str | MediaObject | list[str | MediaObject] | None = Field(
        None,
        description="with text: one voice per speaker, a name (af_heart, am_adam, bf_emma, ...: the worker's "
        "Kokoro-82M/voices) or a voice file as an object {url | base64 | path | s3_key} (a Kokoro voice tensor "
        "[510, 1, 256], .pt); default af_heart, and am_adam for a second speaker. With text_input: fal's voice name",
    )
    speech_speed: float | None = Field(None, description="with text: speaking rate, 0.5 to 2 (default 1)")
    language: str | None = Field(
        None,
        description="with text: Kokoro's language code (a, b, e, f, h, i, p) or en-us, en-gb, es, fr, hi, it, "
        "pt-br (default: the voice's)",
    )
    boxes: list[list[float]] | None = Field(
        None,
        description="two speakers: [[x_min, y_min, x_max, y_max], ...] in source pixels (x = column); one speaker "
        "with keep_background: one box, the region regenerated",
    )
    bbox: dict[str, list[float]] | None = Field(
        None,
        description="official format: {person1: [y_min, x_min, y_max, x_max], person2: [...]} (person1 alone: "
        "one speaker with keep_background)",
    )
    resolution: Literal["480p", "720p"] = Field("480p", description="resolution bucket")
    mode: Literal["streaming", "clip"] = Field(
        "streaming", description="streaming: as long as the audio; clip: one clip"
    )
    # the schema's ceiling is a day (config.MAX_JOB_SECONDS); the worker's MAX_DURATION_SECONDS (600 s) is the real cap
    duration: float | None = Field(
        None, gt=0, le=MAX_JOB_SECONDS, description="seconds of video (audio cut or silence-padded)"
    )
    num_frames: int | None = Field(
        None, ge=1, le=MAX_JOB_SECONDS * 25, description="frames of video at 25 fps (instead of duration)"
    )
    sampling_steps: int = Field(40, ge=1, le=MAX_STEPS, description="denoising steps")
    text_guide_scale: float = Field(5.0, ge=0, le=20, description="text guidance; 1 switches to 2-pass guidance")
    audio_guide_scale: float = Field(4.0, ge=0, le=20, description="audio guidance")
    shift: float | None = Field(None, gt=0, le=30, description="timestep shift (default 7 at 480p, 11 at 720p)")
    seed: int | None = Field(None, ge=-1, le=2**31 - 1, description="-1 or null: random (always reported)")
    job_key: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="resume key: a run of the same request with the same key continues after its last finished "
        "window (default: the RunPod job id, which RunPod's own retry keeps)",
    )
    negative_prompt: str | None = Field(None, max_length=4000, description="default: the official negative prompt")
    color_correction: float = Field(1.0, ge=0, le=1, description="Lab colour correction towards the reference image")
    use_apg: bool = Field(False, description="adaptive projected guidance")
    preset: Literal[PRESET_NAMES] | None = Field(  # type: ignore[valid-type]
        None,
        description="quality: 40 steps, 3-pass guidance; balanced: + step caching; fast: speed LoRA, 4 steps, 2-pass; "
        "realtime: model flashtalk, 4 steps, 1 pass, no guidance (default: realtime with model flashtalk, else the "
        "worker's MULTITALK_PRESET); fields given explicitly override the preset's values",
    )
    cache_threshold: float | None = Field(
        None, ge=0, le=5, description="step caching (TeaCache) threshold; 0 = off (preset: balanced 0.2, others 0)"
    )
    turbo: bool = Field(False, description="original worker's name for preset=fast")
    width: int | None = Field(None, ge=64, le=2048, multiple_of=16, description="explicit width instead of the bucket")
    height: int | None = Field(
        None, ge=64, le=2048, multiple_of=16, description="explicit height instead of the bucket"
    )
    output: OutputOptions = Field(default_factory=OutputOptions)
    execution_timeout_s: float | None = Field(
        None,
        gt=0,
        le=7 * 24 * 3600,
        description="the execution timeout this job runs under, in seconds (the same as policy.executionTimeout, "
        "which wins when the worker sees it; the local API drops policy): a job estimated not to finish in it is "
        "refused with E_TOO_LONG before sampling",
    )

    # --- accepted names of other front ends -------------------------------------------------------------------
    image_url: Media | None = Field(None, description="alias of image")
    cond_image: Media | None = Field(None, description="alias of image (official JSON)")
    condition_image: Media | None = Field(None, description="alias of image (original worker)")
    video_url: Media | None = Field(None, description="alias of video (fal)")
    cond_video: Media | None = Field(
        None, description="official InfiniteTalk JSON: a video, or an image (then it is the image)"
    )
    image_s3_key: str | None = Field(None, description="image = this key in the configured bucket (original worker)")
    audio_url: Media | None = Field(None, description="alias of audio, one speaker")
    audio_1: Media | None = Field(None, description="speaker 1 (original worker)")
    audio_2: Media | None = Field(None, description="speaker 2")
    audio_s3_key: str | None = Field(
        None, description="speaker 1 = this key in the configured bucket (original worker)"
    )
    first_audio_url: Media | None = Field(None, description="speaker 1 (fal, Replicate)")
    second_audio_url: Media | None = Field(None, description="speaker 2 (fal, Replicate)")
    left_audio: Media | None = Field(None, description="speaker 1 (WaveSpeed)")
    right_audio: Media | None = Field(None, description="speaker 2 (WaveSpeed)")
    cond_audio: dict[str, Media | None] | None = Field(
        None, description="official JSON: {person1, person2}; 'None' = silent"
    )
    tts_audio: dict[str, Any] | None = Field(
        None,
        description="official JSON: {text, human1_voice, human2_voice?} (with cond_audio {}): text instead of audio",
    )
    text_input: str | None = Field(None, description="fal text-to-speech avatar: the text of one speaker (+ voice)")
    first_text_input: str | None = Field(None, description="fal multi-text: speaker 1's text (spoken first)")
    second_text_input: str | None = Field(None, description="fal multi-text: speaker 2's text (spoken second)")
    voice1: str | None = Field(None, description="fal multi-text: speaker 1's voice (ElevenLabs name, default Sarah)")
    voice2: str | None = Field(None, description="fal multi-text: speaker 2's voice (ElevenLabs name, default Roger)")
    sample_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="alias of sampling_steps")
    sample_text_guide_scale: float | None = Field(None, ge=0, le=20, description="alias of text_guide_scale")
    sample_audio_guide_scale: float | None = Field(None, ge=0, le=20, description="alias of audio_guide_scale")
    sample_shift: float | None = Field(None, gt=0, le=30, description="alias of shift")
    color_correction_strength: float | None = Field(None, ge=0, le=1, description="alias of color_correction")
    base_seed: int | None = Field(None, ge=-1, le=2**31 - 1, description="alias of seed")
    output_format: Literal["s3", "base64", "volume"] | None = Field(None, description="alias of output.format")
    # the field names the request used, for messages (``cond_image``, ``cond_audio.person2``, ...)
    _image_field: str = PrivateAttr("image")
    _video_field: str | None = PrivateAttr(None)
    _audio_fields: list[str] = PrivateAttr(default_factory=list)
    _speech: SpeechRequest | None = PrivateAttr(None)  # text instead of audio
    _speech_field: str | None = PrivateAttr(None)
    _voice_fields: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _resolve(self) -> JobInput:
        fields_set = self.model_fields_set
        simple = {
            "sampling_steps": ["sample_steps"],
            "text_guide_scale": ["sample_text_guide_scale"],
            "audio_guide_scale": ["sample_audio_guide_scale"],
            "shift": ["sample_shift"],
            "color_correction": ["color_correction_strength"],
            "seed": ["base_seed"],
        }
        for canonical, aliases in simple.items():
            given = [n for n in (canonical, *aliases) if n in fields_set and getattr(self, n) is not None]
            if len(given) > 1:
                raise ValueError(f"{' and '.join(given)} mean the same thing: give one")
            if given and given[0] != canonical:
                setattr(self, canonical, getattr(self, given[0]))

        sources = [n for n in (*IMAGE_FIELDS, *VIDEO_FIELDS) if getattr(self, n) is not None]
        if len(sources) > 1:
            images = [n for n in sources if n in IMAGE_FIELDS]
            if len(images) == len(sources):
                raise ValueError(f"{' and '.join(images)} all give the image: give one")
            verb = "both give" if len(sources) == 2 else "all give"
            raise ValueError(
                f"{' and '.join(sources)} {verb} the source: give one (an image to animate, or a video to dub)"
            )
        if not sources:
            raise ValueError(
                "image is required (or image_url / cond_image / condition_image / image_s3_key), or a video to dub "
                "(video / video_url / cond_video)"
            )
        field = sources[0]
        if field in VIDEO_FIELDS:
            self._video_field = field
            self.video, self.image = getattr(self, field), None
            if self.model == "multitalk":
                raise ValueError(
                    f"{field}: MultiTalk animates an image; a video needs model infinitetalk (or "
                    "infinitetalk-single / infinitetalk-multi)"
                )
        else:
            self._image_field = field
            self.image = MediaObject(s3_key=self.image_s3_key) if field == "image_s3_key" else getattr(self, field)

        self.audio = self._resolve_speech_or_audio()
        if self.output_format is not None:
            if "output" in fields_set and self.output.format != "auto":
                raise ValueError("output_format and output.format mean the same thing: give one")
            self.output = self.output.model_copy(update={"format": self.output_format})
        if self.duration is not None and self.num_frames is not None:
            raise ValueError("duration and num_frames both set the length: give one")
        if self.boxes is not None and self.bbox is not None:
            raise ValueError("boxes and bbox both give the person boxes: give one")
        self._resolve_keep_background(fields_set)
        one = self.speakers == 1
        if (self.boxes is not None or self.bbox is not None) and one and not self.keep_background:
            raise ValueError(
                "person boxes are for two speakers; this job has one audio track (one box is the region kept "
                "apart with keep_background)"
            )
        people = 1 if one else 2
        if self.boxes is not None and (len(self.boxes) != people or any(len(b) != 4 for b in self.boxes)):
            if one:
                raise ValueError("boxes: one speaker with keep_background takes one [x_min, y_min, x_max, y_max] list")
            raise ValueError("boxes must be two [x_min, y_min, x_max, y_max] lists")
        wanted = {"person1"} if one else {"person1", "person2"}
        if self.bbox is not None and (set(self.bbox) != wanted or any(len(b) != 4 for b in self.bbox.values())):
            if one:
                raise ValueError("bbox: one speaker with keep_background takes {person1: [4 numbers]}")
            raise ValueError("bbox must be {person1: [4 numbers], person2: [4 numbers]}")
        if one and self.mask_image is not None and (self.boxes is not None or self.bbox is not None):
            box = "boxes" if self.boxes is not None else "bbox"
            raise ValueError(f"mask_image and {box} both give the region to regenerate: give one")
        if self.model == "infinitetalk-single" and self.speakers == 2:
            raise ValueError(
                "model: infinitetalk-single was trained for one speaker and this job has two speakers; use "
                "infinitetalk-multi (or infinitetalk, which picks it)"
            )
        if (self.width is None) != (self.height is None):
            raise ValueError("width and height go together")
        if self.preset == REALTIME and self.model not in (None, FLASHTALK):
            raise ValueError(f"preset: realtime runs model flashtalk, and this job names model {self.model}: drop one")
        if self.model == FLASHTALK or self.preset == REALTIME:
            problems = self.flashtalk_problems()
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def flashtalk_problems(self) -> list[str]:
        """What this request asks for that FlashTalk (the distilled one-speaker model, preset realtime) cannot do,
        each naming the field as the request spelt it; empty when it can run. Checked here when the request names
        flashtalk (``model``, or ``preset: realtime``), and by the worker when flashtalk is its default model."""
        given = self.model_fields_set
        problems = []
        if self.turbo:
            problems.append("turbo: means preset fast; FlashTalk runs preset realtime: drop turbo")
        if self.preset not in (None, REALTIME):
            problems.append(
                f"preset: {self.preset} is for MultiTalk and InfiniteTalk; FlashTalk runs its distilled sampler "
                "(4 steps, no guidance): use preset realtime, or leave preset out"
            )
        if self._video_field is not None:
            problems.append(
                f"{self._video_field}: FlashTalk animates an image; a video needs model infinitetalk (a worker that "
                "holds it)"
            )
        if self.speakers > 1:
            what = "speakers" if self._speech is not None else "audio tracks"
            problems.append(
                f"{self.audio_field(1)}: FlashTalk animates one speaker and this job has {self.speakers} {what}; "
                "two speakers need model multitalk or infinitetalk (a worker that holds it)"
            )
        if self.resolution == "720p":
            problems.append("resolution: FlashTalk makes about 768x448 (the 480p class); 720p is not available")
        for canonical, alias in (
            ("text_guide_scale", "sample_text_guide_scale"),
            ("audio_guide_scale", "sample_audio_guide_scale"),
        ):
            value = getattr(self, canonical)
            name = alias if alias in given and getattr(self, alias) is not None else canonical
            if name in given and value != 1.0:
                problems.append(
                    f"{name}: FlashTalk runs without guidance (one forward per step), so it takes only 1, got {value:g}"
                )
        if self.use_apg:
            problems.append("use_apg: FlashTalk runs without guidance, so APG does not apply: drop it")
        if self.cache_threshold:
            problems.append(
                "cache_threshold: step caching is not available with FlashTalk (4 distilled steps): use 0 or drop it"
            )
        return problems

    def _resolve_keep_background(self, fields_set: set[str]) -> None:
        """``mask_image`` implies ``keep_background``; ``feather`` needs it."""
        if self.mask_image is not None:
            if "keep_background" in fields_set and not self.keep_background:
                raise ValueError("mask_image is the region regenerated with keep_background, which is false: drop one")
            self.keep_background = True
        if self.feather is not None and not self.keep_background:
            raise ValueError("feather is the edge width of keep_background: set keep_background true (or drop it)")
        if self.keep_background and self.mask_image is None and self.boxes is None and self.bbox is None:
            raise ValueError(
                "keep_background needs the speaker regions: boxes (one per speaker; or bbox) or mask_image"
            )

    @property
    def image_field(self) -> str:
        """The field that gave the image, as the request spelt it."""
        return self._image_field

    @property
    def video_field(self) -> str | None:
        """The field that gave the video (``video``, ``video_url``, ``cond_video``), or None for an image source."""
        return self._video_field

    @property
    def source_field(self) -> str:
        """The field that gave the source, image or video, as the request spelt it."""
        return self._video_field or self._image_field

    def audio_field(self, i: int) -> str:
        """The field that gave speaker ``i``'s audio, as the request spelt it (``audio[0]``, ``cond_audio.person2``;
        for text: the field of that speaker's voice)."""
        if self._speech is not None:
            return self._voice_fields[i] if i < len(self._voice_fields) else f"{self._speech_field} (speaker {i + 1})"
        return self._audio_fields[i] if i < len(self._audio_fields) else f"audio[{i}]"

    @property
    def speech(self) -> SpeechRequest | None:
        """Text instead of audio (``text``, ``tts_audio``, fal's ``text_input`` ...): what to say, by whom; the
        voices are names, or ``MediaObject`` voice files the worker fetches. None for an audio request."""
        return self._speech

    @property
    def speech_field(self) -> str | None:
        """The field that gave the text, as the request spelt it."""
        return self._speech_field

    def voice_field(self, i: int) -> str:
        return self._voice_fields[i] if i < len(self._voice_fields) else f"voice[{i}]"

    @property
    def speakers(self) -> int:
        """1 or 2: the audio tracks, or the voices of the text."""
        return self._speech.speakers if self._speech is not None else len(self.audio)

    def _resolve_speech_or_audio(self) -> list[Media | None]:
        """Exactly one of audio (any of its names) or text (``text``, ``tts_audio``, fal's ``text_input`` /
        ``first_text_input`` ...); the official JSON's ``cond_audio: {}`` beside ``tts_audio`` counts as no audio."""
        texts = [n for n in TEXT_FIELDS if getattr(self, n) is not None]
        audio_given = [n for n in AUDIO_FIELDS if getattr(self, n) is not None and getattr(self, n) != {}]
        for name in ("voice", "speech_speed", "language"):
            if getattr(self, name) is not None and not texts:
                raise ValueError(
                    f"{name} goes with text (the speech as text instead of audio): add text or drop {name}"
                )
        for name in ("voice1", "voice2"):
            if getattr(self, name) is not None and "first_text_input" not in texts:
                raise ValueError(f"{name}: a voice of fal's first_text_input / second_text_input: add them")
        if not texts:
            return self._resolve_audio()
        if audio_given:
            raise ValueError(
                f"{' and '.join(audio_given)} and {' and '.join(texts)} both give the speech: give one (audio, or text "
                "to speak)"
            )
        if len(texts) > 1 and set(texts) != {"first_text_input", "second_text_input"}:
            raise ValueError(f"{' and '.join(texts)} all give the text to speak: give one")
        self._speech_field = texts[0]
        self._speech = self._speech_request(texts[0])
        return []

    def _speech_request(self, field: str) -> SpeechRequest:
        """The engine's checks on the text (``SpeechInputError``s with their codes propagate: the worker reports
        them under those codes)."""
        import dataclasses

        options = {}
        if self.speech_speed is not None:
            options["speed"] = self.speech_speed
        if self.language is not None:
            options["language"] = self.language
        if field == "tts_audio":
            request = SpeechRequest.from_official(self.tts_audio)
            voices = [f"tts_audio.human{i + 1}_voice" for i in range(request.speakers)]
        elif field == "text":
            voices = self.voice if isinstance(self.voice, list) else [] if self.voice is None else [self.voice]
            if not voices:
                voices = list(DEFAULT_VOICES[: min(2, max(1, tagged_speakers(self.text or "")))])
                self._voice_fields = ["text"] * len(voices)
            else:
                self._voice_fields = (
                    [f"voice[{i}]" for i in range(len(voices))] if isinstance(self.voice, list) else ["voice"]
                )
            request = SpeechRequest.from_text(self.text, voices, field="text", **options)
            return request
        else:
            if isinstance(self.voice, list | MediaObject):
                raise ValueError("voice: with text_input, fal's voice is a name (Aria, Roger, Sarah, ...)")
            if field == "text_input" and "second_text_input" in self.model_fields_set:
                raise ValueError("text_input and second_text_input: one speaker's text_input, or first_ and second_")
            data = {n: getattr(self, n) for n in (*FAL_TEXT_FIELDS, "voice") if getattr(self, n) is not None}
            request = SpeechRequest.from_fal(data)
            voices = ["voice"] if field == "text_input" else ["voice1", "voice2"]
        self._voice_fields = voices
        return dataclasses.replace(request, **options).checked() if options else request

    def _resolve_audio(self) -> list[Media | None]:
        forms: dict[str, list[Media | None]] = {}
        if self.audio is not None:
            forms["audio"] = list(self.audio) if isinstance(self.audio, list) else [self.audio]
        if self.audio_url is not None:
            forms["audio_url"] = [self.audio_url]
        if self.audio_s3_key is not None:
            forms["audio_s3_key"] = [MediaObject(s3_key=self.audio_s3_key)]
        for first, second in (
            ("audio_1", "audio_2"),
            ("first_audio_url", "second_audio_url"),
            ("left_audio", "right_audio"),
        ):
            a, b = getattr(self, first), getattr(self, second)
            if a is not None or b is not None:
                forms[first] = [a] if b is None else [a, b]
        if self.cond_audio is not None:
            unknown = set(self.cond_audio) - {"person1", "person2"}
            if unknown or "person1" not in self.cond_audio:
                raise ValueError("cond_audio must be {person1: ..., person2?: ...}")
            people = (
                [self.cond_audio.get("person1"), self.cond_audio.get("person2")]
                if "person2" in self.cond_audio
                else [self.cond_audio["person1"]]
            )
            forms["cond_audio"] = [None if isinstance(v, str) and v == "None" else v for v in people]
        if len(forms) > 1:
            raise ValueError(f"{' and '.join(forms)} all give the audio: give one")
        if not forms:
            raise ValueError(
                "audio is required: one track per speaker (or audio_url / cond_audio / audio_1 ...), or the speech "
                "as text (text + voice, tts_audio, text_input)"
            )
        form, tracks = next(iter(forms.items()))
        names = {
            "audio": [f"audio[{i}]" for i in range(len(tracks))] if isinstance(self.audio, list) else ["audio"],
            "audio_1": ["audio_1", "audio_2"],
            "first_audio_url": ["first_audio_url", "second_audio_url"],
            "left_audio": ["left_audio", "right_audio"],
            "cond_audio": ["cond_audio.person1", "cond_audio.person2"],
        }
        self._audio_fields = names.get(form, [form])[: len(tracks)]
        if not 1 <= len(tracks) <= MAX_SPEAKERS:
            raise ValueError(f"MultiTalk takes 1 or {MAX_SPEAKERS} speakers, got {len(tracks)} audio tracks")
        if all(t is None for t in tracks):
            raise ValueError("every speaker is silent: at least one audio track is needed")
        return tracks


MEDIA_FIELDS = {
    "voice",
    "tts_audio",
    "image",
    "audio",
    "image_url",
    "cond_image",
    "condition_image",
    "video",
    "video_url",
    "cond_video",
    "mask_image",
    "audio_url",
    "audio_1",
    "audio_2",
    "first_audio_url",
    "second_audio_url",
    "left_audio",
    "right_audio",
    "cond_audio",
}


def describe_errors(exc: ValidationError) -> str:
    """A one-line summary naming each bad field; never echoes media values (they may be megabytes of base64)."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "input"
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field")
            continue
        if (
            (err["loc"] and err["loc"][0] in MEDIA_FIELDS)
            or not isinstance(value, int | float | bool | str)
            or err["loc"] == ()
        ):
            parts.append(f"{loc}: {msg}")
        else:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            parts.append(f"{loc}: {msg} (got {shown})")
    return "; ".join(dict.fromkeys(parts))


def json_schema() -> dict[str, Any]:
    return JobInput.model_json_schema()


SCHEMA_FILE = "docs/schema/job_input.schema.json"


if __name__ == "__main__":  # python -m multitalk_serve.worker.schema > docs/schema/job_input.schema.json
    import json

    print(json.dumps(json_schema(), indent=1))
