"""The official repositories' input JSON (MultiTalk's ``generate_multitalk.py --input_json`` and InfiniteTalk's
``generate_infinitetalk.py --input_json``), read for ``generate --input-json``.

Its keys: ``prompt``, ``cond_image`` (MultiTalk) or ``cond_video`` (InfiniteTalk: a video to dub, or an image to
animate, told apart by the file's extension as the official ``is_video`` does; such a file runs InfiniteTalk),
``cond_audio`` ``{person1, person2}`` (``"None"``: a silent speaker),
``audio_type`` (``add`` / ``para``), ``bbox`` ``{person1, person2}`` as ``[y_min, x_min, y_max, x_max]`` (row
first), and ``tts_audio`` ``{text, human1_voice, human2_voice}`` (text to speech with Kokoro-82M instead of
``cond_audio``, which is then ``{}``: the official ``--audio_mode tts``; a voice path such as
``weights/Kokoro-82M/voices/af_heart.pt`` names the voice by its file name; ``JsonJob.speech``). The official script
opens relative paths from the
current folder (its examples are run from the repository root); so do we, then from the JSON file's own folder.
Every message names the field as the file spells it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .engine import Box, InputError, InputNames, SpeechRequest

KEYS = ("prompt", "cond_image", "cond_video", "cond_audio", "audio_type", "bbox", "tts_audio")
# the official InfiniteTalk's ``is_video``: these extensions are videos, anything else is opened as an image
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".flv", ".wmv", ".webm", ".mpeg", ".mpg")
PEOPLE = ("person1", "person2")
JSON_NAMES = InputNames(
    image="cond_image",
    video="cond_video",
    mask="--mask-image",
    audio="cond_audio",
    speaker="cond_audio.person{n}",
    boxes="bbox",
    box="bbox.person{n}",
    output="--out",
    mask_preview="--mask-preview",
    thumbnail="--thumbnail",
    prompt="prompt",
)


@dataclass
class JsonJob:
    path: Path
    prompt: str | None
    image: Path | None  # cond_image, or cond_video naming a picture
    audio: list[Path | None]
    audio_type: str | None
    boxes: list[Box] | None
    video: Path | None = None  # cond_video naming a video
    source_key: str = "cond_image"  # the key that gave the source, for messages
    speech: SpeechRequest | None = None  # tts_audio: speak this instead of cond_audio (``audio`` is then [])

    @property
    def infinitetalk(self) -> bool:
        """An InfiniteTalk file (``cond_video``): it runs InfiniteTalk unless told otherwise."""
        return self.source_key == "cond_video"


def read_input_json(path: str | Path, cwd: str | Path | None = None) -> JsonJob:
    """Read and check an official input JSON; relative paths resolved against ``cwd`` (default: the current
    folder), then the file's folder. ``InputError`` naming the field as written."""
    path = Path(path)
    cwd = Path.cwd() if cwd is None else Path(cwd)
    if not path.is_file():
        raise InputError(f"--input-json: no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"--input-json: {path} is not a text file") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"--input-json: {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"--input-json: {path} must hold a JSON object {{prompt, cond_image, cond_audio, ...}}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InputError(f"{', '.join(unknown)}: not a key of the official input JSON (known: {', '.join(KEYS)})")

    def resolve(value: object, field: str) -> Path:
        if value is None:
            raise InputError(f"{field}: missing")
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{field}: must be a file path (a string), got {json.dumps(value)}")
        given = Path(value).expanduser()
        if given.is_absolute():
            return given
        for base in (cwd, path.parent):
            if (base / given).exists():
                return base / given
        raise InputError(
            f"{field}: {value} not found (a relative path is read from the current folder {cwd.resolve()}, "
            f"then from the JSON file's folder {path.parent.resolve()})"
        )

    audio_in = data.get("cond_audio")
    if audio_in is not None and not isinstance(audio_in, dict):
        raise InputError("cond_audio: must be an object {person1: path, person2: path}")
    speech = None
    audio: list[Path | None] = []
    if "tts_audio" in data:
        if audio_in:
            raise InputError("cond_audio and tts_audio both give the speech: give one (cond_audio {} with tts_audio)")
        speech = SpeechRequest.from_official(data["tts_audio"])
    elif not audio_in:
        raise InputError("cond_audio: missing or empty; give {person1: path} (and person2 for a second speaker)")
    else:
        extra = sorted(set(audio_in) - set(PEOPLE))
        if extra or "person1" not in audio_in:
            raise InputError(f"cond_audio: keys are person1 and person2, got {', '.join(map(str, audio_in))}")
        for person in (p for p in PEOPLE if p in audio_in):
            value = audio_in[person]
            audio.append(None if value == "None" else resolve(value, f"cond_audio.{person}"))
    audio_type = data.get("audio_type")
    if audio_type is not None and audio_type not in ("add", "para"):
        raise InputError(f"audio_type: 'add' (one after the other) or 'para' (at once), got {json.dumps(audio_type)}")

    boxes = None
    if data.get("bbox") is not None:
        bbox = data["bbox"]
        if not isinstance(bbox, dict) or set(bbox) != set(PEOPLE):
            raise InputError("bbox: must be {person1: [y_min, x_min, y_max, x_max], person2: [...]}")
        boxes = []
        for person in PEOPLE:
            numbers = bbox[person]
            if (
                not isinstance(numbers, list)
                or len(numbers) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers)
            ):
                raise InputError(f"bbox.{person}: four numbers [y_min, x_min, y_max, x_max], got {json.dumps(numbers)}")
            boxes.append(Box.from_official([float(v) for v in numbers]))

    prompt = data.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise InputError("prompt: must be a non-empty string")
    if "cond_image" in data and "cond_video" in data:
        raise InputError("cond_image and cond_video both give the source: give one (MultiTalk's or InfiniteTalk's key)")
    if "cond_video" in data:
        source = resolve(data["cond_video"], "cond_video")
        if source.suffix.lower() in VIDEO_EXTENSIONS:
            return JsonJob(
                path, prompt, None, audio, audio_type, boxes, video=source, source_key="cond_video", speech=speech
            )
        return JsonJob(path, prompt, source, audio, audio_type, boxes, source_key="cond_video", speech=speech)
    if data.get("cond_image") is None:
        raise InputError("cond_image: missing (MultiTalk's key for the picture; InfiniteTalk's files use cond_video)")
    return JsonJob(path, prompt, resolve(data["cond_image"], "cond_image"), audio, audio_type, boxes, speech=speech)
