"""The job input schema: canonical fields, other front ends' names, and errors that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from multitalk_serve.worker.schema import JobInput, MediaObject, describe_errors, json_schema

IMG, A1, A2 = "https://example.com/face.png", "https://example.com/a.wav", "https://example.com/b.wav"


def parse(**kwargs) -> JobInput:
    return JobInput.model_validate(kwargs)


def error(**kwargs) -> str:
    with pytest.raises(ValidationError) as exc:
        JobInput.model_validate(kwargs)
    return describe_errors(exc.value)


def test_minimal_and_defaults():
    job = parse(image=IMG, audio=A1)
    assert job.audio == [A1] and job.image == IMG
    assert (job.resolution, job.mode, job.sampling_steps, job.text_guide_scale, job.audio_guide_scale) == (
        "480p",
        "streaming",
        40,
        5.0,
        4.0,
    )
    assert job.output.format == "auto" and job.prompt


@pytest.mark.parametrize(
    ("given", "image", "audio"),
    [
        ({"cond_image": IMG, "cond_audio": {"person1": A1, "person2": A2}}, IMG, [A1, A2]),
        ({"cond_image": IMG, "cond_audio": {"person1": A1, "person2": "None"}}, IMG, [A1, None]),
        ({"image_url": IMG, "audio_url": A1}, IMG, [A1]),
        ({"image_url": IMG, "first_audio_url": A1, "second_audio_url": A2}, IMG, [A1, A2]),
        ({"image": IMG, "left_audio": A1, "right_audio": A2}, IMG, [A1, A2]),
        ({"condition_image": IMG, "audio_1": A1}, IMG, [A1]),
        (
            {"image_s3_key": "in/face.png", "audio_s3_key": "in/a.wav"},
            MediaObject(s3_key="in/face.png"),
            [MediaObject(s3_key="in/a.wav")],
        ),
    ],
)
def test_other_front_ends_names(given, image, audio):
    job = parse(**given)
    assert job.image == image and job.audio == audio


def test_official_knobs_and_original_worker_fields():
    job = parse(
        image=IMG,
        audio=A1,
        sample_steps=8,
        sample_text_guide_scale=1.0,
        sample_audio_guide_scale=2.0,
        sample_shift=2.0,
        color_correction_strength=0.5,
        base_seed=7,
        output_format="base64",
        turbo=True,
    )
    assert (job.sampling_steps, job.text_guide_scale, job.audio_guide_scale, job.shift) == (8, 1.0, 2.0, 2.0)
    assert (job.color_correction, job.seed, job.output.format, job.turbo) == (0.5, 7, "base64", True)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"image": IMG, "audio": A1, "steps": 4}, "steps: unknown field"),
        (
            {"image": IMG, "audio": A1, "sampling_steps": 500},
            "sampling_steps: Input should be less than or equal to 100 (got 500)",
        ),
        ({"image": IMG, "audio": A1, "sampling_steps": "many"}, "sampling_steps: Input should be a valid integer"),
        ({"image": IMG, "audio": A1, "resolution": "1080p"}, "resolution: Input should be '480p' or '720p'"),
        ({"image": IMG, "audio": A1, "mode": "loop"}, "mode: Input should be 'streaming' or 'clip'"),
        ({"audio": A1}, "image is required"),
        ({"image": IMG}, "audio is required"),
        ({"image": IMG, "image_url": IMG, "audio": A1}, "image and image_url all give the image"),
        ({"image": IMG, "audio": A1, "audio_url": A2}, "audio and audio_url all give the audio"),
        ({"image": IMG, "audio": [A1, A2, A1]}, "1 or 2 speakers, got 3"),
        ({"image": IMG, "audio": [None, None]}, "every speaker is silent"),
        (
            {"image": IMG, "audio": A1, "sampling_steps": 4, "sample_steps": 8},
            "sampling_steps and sample_steps mean the same",
        ),
        ({"image": IMG, "audio": A1, "boxes": [[0, 0, 1, 1], [1, 1, 2, 2]]}, "person boxes are for two speakers"),
        ({"image": IMG, "audio": [A1, A2], "boxes": [[0, 0, 1]]}, "boxes must be two"),
        ({"image": IMG, "audio": [A1, A2], "bbox": {"left": [0, 0, 1, 1]}}, "bbox must be {person1"),
        ({"image": IMG, "audio": A1, "duration": 3, "num_frames": 75}, "duration and num_frames both"),
        ({"image": IMG, "audio": A1, "duration": -1}, "duration: Input should be greater than 0"),
        ({"image": IMG, "audio": A1, "width": 100, "height": 64}, "width: Input should be a multiple of 16"),
        ({"image": IMG, "audio": A1, "width": 96}, "width and height go together"),
        ({"image": IMG, "audio": A1, "prompt": "x" * 100_000}, "prompt: String should have at most 4000 characters"),
        ({"image": IMG, "audio": A1, "output": {"prefix": "../../etc"}}, "output.prefix: only letters"),
        ({"image": IMG, "audio": A1, "output": {"filename": "a/b.mp4"}}, "output.filename"),
        ({"image": IMG, "audio": A1, "output": {"format": "ftp"}}, "output.format"),
        ({"image": {"url": IMG, "base64": "aGk="}, "audio": A1}, "give exactly one of url, base64, path, s3_key"),
        ({"image": IMG, "audio": A1, "seed": 2**40}, "seed: Input should be less than or equal to"),
        ({"image": IMG, "audio": A1, "use_apg": "maybe"}, "use_apg: Input should be a valid boolean"),
    ],
)
def test_errors_name_the_field(given, message):
    assert message in error(**given)


def test_errors_never_echo_media():
    secret = "QUJD" * 1000
    text = error(image=secret, audio=A1, sampling_steps=0)
    assert secret not in text and "QUJD" not in text


def test_json_schema_is_published():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert {"image", "audio", "prompt", "output", "cond_audio", "image_url", "first_audio_url"} <= set(
        schema["properties"]
    )


def test_docs_publish_the_current_schema():
    import json
    from pathlib import Path

    from multitalk_serve.worker.schema import SCHEMA_FILE

    published = json.loads((Path(__file__).parents[1] / SCHEMA_FILE).read_text())
    assert published == json_schema(), (
        f"{SCHEMA_FILE} is stale: python -m multitalk_serve.worker.schema > {SCHEMA_FILE}"
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"sampling_steps": True}, "sampling_steps: Input should be a valid integer (got True)"),
        ({"sampling_steps": "40"}, "sampling_steps: Input should be a valid integer (got '40')"),
        ({"sampling_steps": 40.0}, "sampling_steps: Input should be a valid integer (got 40.0)"),
        ({"sample_steps": "8"}, "sample_steps: Input should be a valid integer (got '8')"),
        ({"seed": "7"}, "seed: Input should be a valid integer (got '7')"),
        ({"text_guide_scale": "5"}, "text_guide_scale: Input should be a valid number (got '5')"),
        ({"audio_guide_scale": False}, "audio_guide_scale: Input should be a valid number (got False)"),
        ({"duration": "3"}, "duration: Input should be a valid number (got '3')"),
        ({"shift": float("nan")}, "shift: Input should be a finite number"),
        ({"use_apg": 1}, "use_apg: Input should be a valid boolean (got 1)"),
        ({"turbo": "true"}, "turbo: Input should be a valid boolean (got 'true')"),
        ({"output": {"thumbnail": "yes"}}, "output.thumbnail: Input should be a valid boolean (got 'yes')"),
        ({"output": {"crf": "19"}}, "output.crf: Input should be a valid integer (got '19')"),
        ({"audio": [A1, A2], "boxes": ["0,0,1,1", "1,1,2,2"]}, "boxes.0: Input should be a valid list"),
        ({"audio": [A1, A2], "boxes": [["0", 0, 1, 1], [1, 1, 2, 2]]}, "boxes.0.0: Input should be a valid number"),
        ({"audio": [A1, A2], "bbox": {"person1": ["0", 0, 1, 1], "person2": [1, 1, 2, 2]}}, "bbox.person1.0"),
        ({"width": "64", "height": 64}, "width: Input should be a valid integer (got '64')"),
    ],
)
def test_json_types_are_not_converted(given, message):
    """A number must be a JSON number (an integer where an integer is meant), a boolean a JSON boolean: before,
    ``true`` ran one step and ``"40"`` forty, boxes given as text were accepted."""
    text = error(**{"image": IMG, "audio": A1, **given})
    assert message in text, text


def test_documented_names_and_json_numbers_keep_working():
    job = parse(
        cond_image=IMG,
        cond_audio={"person1": A1, "person2": "None"},
        bbox={"person1": [0, 0, 300, 250], "person2": [0, 250, 300, 500.5]},
        sample_steps=8,
        sample_text_guide_scale=5,  # an integer where a number is meant: a JSON number
        sample_audio_guide_scale=4.5,
        sample_shift=3,
        color_correction_strength=1,
        base_seed=-1,
        duration=2,
        turbo=False,
        output_format="base64",
    )
    assert (job.sampling_steps, job.text_guide_scale, job.shift, job.color_correction, job.duration) == (8, 5, 3, 1, 2)
    assert job.audio == [A1, None] and job.bbox["person2"][3] == 500.5 and job.output.format == "base64"
    job = parse(image={"url": IMG}, audio_1=A1, use_apg=True, boxes=None, output={"thumbnail": True, "crf": 20})
    assert job.audio == [A1] and job.use_apg is True
