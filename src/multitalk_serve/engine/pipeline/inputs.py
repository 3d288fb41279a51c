"""Everything about a job that can be checked without a model, checked in well under a second.

``check_inputs`` opens the image (or probes the video: InfiniteTalk's source, ``source.VideoSource``, its first frame
decoded) and decodes every audio track (files exist, the image is an image, the video a video, the audio is audio),
checks the keep-the-rest mask against the source's size, counts the speakers, checks the person boxes against the
source, the options (sizes, steps, ...) and the output paths (their folder exists and takes a file).
``MultiTalkPipeline.generate`` runs the same checks, but only after the models are loaded: a front end (the CLI)
calls this first, so that a mistake costs a second, not the minutes of loading 14B weights. Messages name each
input as the caller wrote it (``InputNames``): ``--image`` for the CLI, ``cond_image`` for an official JSON file,
``image`` for the library.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import AudioError, ImageInputError, InputError, MaskInputError, SpeakerCountError
from ..limits import MAX_SPEAKERS
from .audio import FPS, SAMPLE_RATE, decode_audio
from .conditioning import Box, boxes_overlap, choose_bucket

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")  # containers the MP4 writer (PyAV, chosen by suffix) produces


@dataclass(frozen=True)
class InputNames:
    """How a caller names each input, for messages. ``{n}`` is the speaker / box number (1, 2)."""

    image: str = "image"
    video: str = "video"  # InfiniteTalk's source, instead of the image
    mask: str = "mask"  # keep_background's region
    audio: str = "audio"  # the list as a whole
    speaker: str = "audio of speaker {n}"  # one track
    boxes: str = "boxes"
    box: str = "box of person {n}"
    output: str = "output"
    mask_preview: str = "mask_preview_path"
    thumbnail: str = "thumbnail"
    prompt: str = "prompt"


LIBRARY_INPUT_NAMES = InputNames()


@dataclass(frozen=True)
class CheckedInputs:
    """What the checks learnt: the image's size, the speakers, the audio's length and the video size chosen."""

    width: int
    height: int
    speakers: int
    seconds: float  # length of the video the audio asks for (after arranging the speakers, cut or padded)
    frames: int
    size: tuple[int, int]  # (height, width) of the video


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 box``, ``2 boxes``."""
    if many is None:
        many = one + ("es" if one.endswith(("s", "x")) else "s")
    return f"{count} {one if count == 1 else many}"


def check_output_path(path: str | Path, name: str = "output", suffixes: tuple[str, ...] | None = None) -> Path:
    """The folder of ``path`` exists and a file can be created there; ``path`` is not a folder; its suffix is one of
    ``suffixes``. Creates (and removes) a temporary file in the folder: read-only mounts fail here, not at the end."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{name}: {path} is a folder; give a file name in it")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InputError(f"{name}: {path} should end in {' or '.join(suffixes)} (the suffix sets the file format)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{name}: the folder {folder} does not exist (create it first)")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".multitalk-check-"):
            pass
    except OSError as exc:
        raise InputError(f"{name}: cannot write in {folder} ({exc.strerror or exc})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{name}: {path} exists and cannot be overwritten")
    return path


def _image_suffixes() -> tuple[str, ...]:
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE))


def _exists(source: object, name: str) -> None:
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{name}: no such file: {source}")
        if path.is_dir():
            raise InputError(f"{name}: {source} is a folder, not a file")


def check_inputs(
    image: str | Path | bytes | Image.Image | None,
    audio: list[str | Path | bytes | np.ndarray | None],
    prompt: str = "a person talks",
    output: str | Path | None = None,
    *,
    boxes: list[Box] | None = None,
    options=None,
    mask_preview_path: str | Path | None = None,
    thumbnail: str | Path | None = None,
    names: InputNames = LIBRARY_INPUT_NAMES,
    video: str | Path | bytes | None = None,
    mask: str | Path | bytes | Image.Image | None = None,
) -> CheckedInputs:
    """Check a job without any model: raises an ``InputError`` (``AudioError``, ``ImageInputError``,
    ``VideoInputError``, ``MaskInputError``, ``SpeakerCountError``) naming the input as ``names`` spells it.
    ``options``: a ``GenerateOptions`` (default: the defaults). Exactly one of ``image`` and ``video`` (InfiniteTalk
    only); ``mask``: keep_background's region, the source's size. Decodes the audio once (a second for minutes of
    audio); the image is opened and decoded, the video probed and its first frame decoded."""
    from .generate import GenerateOptions, load_image  # light: generate.py's heavy imports are torch's own

    opts = options if options is not None else GenerateOptions()
    try:
        opts.validate()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(str(exc)) from None
    # outputs first: the cheapest mistake to find, and the most expensive to find last
    if output is not None:
        check_output_path(output, names.output, VIDEO_SUFFIXES)
    for path, name in ((mask_preview_path, names.mask_preview), (thumbnail, names.thumbnail)):
        if path is not None:
            check_output_path(path, name, _image_suffixes())
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{names.prompt}: empty; describe the scene in a sentence")

    if not isinstance(audio, list | tuple):
        raise AudioError(f"{names.audio}: a list with one entry per speaker")
    if not 1 <= len(audio) <= MAX_SPEAKERS:
        raise SpeakerCountError(
            f"{names.audio}: MultiTalk takes 1 or {MAX_SPEAKERS} speakers, got {plural(len(audio), 'audio track')}"
        )
    if all(a is None for a in audio):
        raise AudioError(f"{names.audio}: every speaker is silent; at least one audio track is needed")
    if (image is None) == (video is None):
        raise InputError(f"give exactly one of {names.image} (a picture to animate) and {names.video} (a video to dub)")
    if video is not None and opts.model == "multitalk":
        raise InputError(
            f"{names.video}: MultiTalk animates an image; a video needs an InfiniteTalk model (infinitetalk, "
            "infinitetalk-single, infinitetalk-multi)"
        )
    keep_background = bool(opts.keep_background)
    if keep_background and boxes is None and mask is None:
        raise ImageInputError(
            f"keep_background needs the speaker regions: {names.boxes} (one per speaker) or {names.mask}"
        )
    _exists(image if video is None else video, names.image if video is None else names.video)
    if mask is not None and not isinstance(mask, Image.Image):
        _exists(mask, names.mask)
    for i, source in enumerate(audio):
        _exists(source, names.speaker.format(n=i + 1))

    if video is None:
        picture = load_image(image, names.image)
        width, height = picture.width, picture.height
    else:
        from .source import VideoSource, video_limit

        with VideoSource(
            video, name=names.video, source_end=opts.source_end, max_seconds=video_limit(opts.max_duration_s)
        ) as clip:
            width, height = clip.width, clip.height
    if mask is not None:
        if not keep_background:
            raise MaskInputError(f"{names.mask}: a mask is the region regenerated with keep_background, which is off")
        try:
            region = load_image(mask, names.mask)
        except ImageInputError as exc:
            raise MaskInputError(str(exc)) from None
        if region.size != (width, height):
            source_name = names.image if video is None else names.video
            raise MaskInputError(
                f"{names.mask}: {region.width}x{region.height}, but {source_name} is {width}x{height}; the mask must "
                "be the source's size"
            )
    speakers = len(audio)
    if boxes is not None and keep_background and speakers == 1:
        if len(boxes) != 1:
            raise ImageInputError(
                f"{names.boxes}: one speaker with keep_background takes one box (the region regenerated), got "
                f"{plural(len(boxes), 'box')}"
            )
        boxes[0].validate(width, height, names.box.format(n=1))
    elif boxes is not None:
        if speakers != MAX_SPEAKERS:
            raise ImageInputError(
                f"{names.boxes}: person boxes are for two speakers, and {plural(speakers, 'audio track')} "
                "was given (add the second speaker's audio, or 'none' for a silent second person)"
            )
        if len(boxes) != MAX_SPEAKERS:
            raise ImageInputError(f"{names.boxes}: two speakers need two boxes, got {plural(len(boxes), 'box')}")
        for i, box in enumerate(boxes):
            box.validate(width, height, names.box.format(n=i + 1))
        boxes_overlap(boxes, width, height, names.box.format(n=1), names.box.format(n=2))

    lengths = []
    cap, cut = float(opts.max_duration_s), opts.num_frames is not None
    for i, source in enumerate(audio):
        name = names.speaker.format(n=i + 1)
        if source is None:
            lengths.append(0)
        elif isinstance(source, np.ndarray):
            wave = np.asarray(source, np.float32).reshape(-1)
            if wave.size == 0 or not np.isfinite(wave).all():
                raise AudioError(f"{name}: empty or not finite")
            lengths.append(wave.size)
        else:
            lengths.append(decode_audio(source, name, max_seconds=cap, cut=cut).size)
    samples = sum(lengths) if opts.audio_type == "add" else max(lengths)
    frames = opts.num_frames if cut else int(samples / SAMPLE_RATE * FPS)
    seconds = frames / FPS
    if seconds > cap:
        what = "the video asked for" if cut else f"the audio ({opts.audio_type}: {_arrangement(opts.audio_type)})"
        raise AudioError(f"{names.audio}: {what} lasts {seconds:.1f} s, over the {cap:g} s limit")
    if frames < 1:
        raise AudioError(f"{names.audio}: shorter than one video frame (40 ms)")
    size = tuple(opts.size) if opts.size else choose_bucket(height, width, opts.resolution)
    return CheckedInputs(width, height, speakers, seconds, frames, size)


def _arrangement(audio_type: str) -> str:
    return "one speaker after the other" if audio_type == "add" else "both at once"
