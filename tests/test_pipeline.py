"""End to end on the tiny model: image + voices + prompt -> MP4 with sound, read back; bad inputs; cancellation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline_stubs as stubs
from media import write_audio
from multitalk_serve.engine import (
    AudioError,
    Box,
    EngineError,
    GenerateOptions,
    GenerationCancelled,
    ImageInputError,
    MultiTalkPipeline,
)
from multitalk_serve.engine.pipeline.generate import plan_clips
from multitalk_serve.engine.pipeline.video import probe

SMALL = {"size": (64, 96), "steps": 2, "seed": 11}


@pytest.fixture(scope="module")
def pipe(tiny_root):
    return MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "ref.png"
    Image.fromarray(stubs.scenario_image()).save(path)
    return path


def check_mp4(path, frames, seconds):
    info = probe(path)
    assert (info.frames, info.fps, info.width, info.height) == (frames, 25.0, 96, 64)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.audio_codec == "aac" and abs(info.audio_seconds - seconds) < 0.05
    return info


def test_one_speaker_wav(pipe, image_path, tmp_path):
    audio = write_audio(tmp_path / "a.wav", 2.0)
    events = []
    result = pipe.generate(
        image_path,
        [audio],
        "a woman talks",
        tmp_path / "out.mp4",
        options=GenerateOptions(**SMALL),
        callback=events.append,
        thumbnail=tmp_path / "thumb.jpg",
        mask_preview_path=tmp_path / "masks.png",
    )
    assert (result.frames, result.clips, result.speakers, result.seed) == (50, 1, 1, 11)
    check_mp4(result.video_path, 50, 2.0)
    assert Image.open(tmp_path / "thumb.jpg").size == (96, 64)
    assert Image.open(tmp_path / "masks.png").size == (96, 64)
    assert set(result.timings) >= {"audio", "text_encoder", "image_encoders", "sampling", "vae_decode", "encode_mux"}
    sampling = [e for e in events if e.stage == "sampling"]
    assert [e.step for e in sampling] == [1, 2] and sampling[-1].fraction == 1.0
    assert events[0].stage == "audio" and events[-1].stage == "done"


def test_two_speakers_add_from_mp3_and_m4a(pipe, image_path, tmp_path):
    a, b = write_audio(tmp_path / "a.mp3", 1.0), write_audio(tmp_path / "b.m4a", 1.5)
    result = pipe.generate(
        image_path, [a, b], "two people talk", tmp_path / "out.mp4", options=GenerateOptions(**SMALL, audio_type="add")
    )
    assert result.speakers == 2 and 61 <= result.frames <= 64  # 2.5 s (+ codec padding)
    check_mp4(result.video_path, result.frames, result.frames / 25)


def test_two_speakers_para_with_boxes_and_a_silent_speaker(pipe, image_path, tmp_path):
    a = write_audio(tmp_path / "a.flac", 2.0)
    result = pipe.generate(
        image_path,
        [a, None],
        "two people",
        tmp_path / "out.mp4",
        boxes=[Box(20, 20, 240, 280), Box(260, 40, 480, 290)],
        options=GenerateOptions(**SMALL, audio_type="para"),
    )
    assert result.speakers == 2 and result.frames == 50
    check_mp4(result.video_path, 50, 2.0)


def test_long_audio_streams_over_three_clips(pipe, image_path, tmp_path):
    wave = stubs.speech_like(6.0, seed=5)  # 150 frames: clips [0, 81), [56, 137), [112, 193)
    result = pipe.generate(image_path, [wave], "a man talks", tmp_path / "long.mp4", options=GenerateOptions(**SMALL))
    assert (result.frames, result.clips) == (150, 3)
    check_mp4(result.video_path, 150, 6.0)


def test_audio_shorter_than_a_clip_works(pipe, image_path, tmp_path):
    result = pipe.generate(
        image_path, [stubs.speech_like(0.5, 1)], "hi", tmp_path / "s.mp4", options=GenerateOptions(**SMALL, mode="clip")
    )
    assert result.frames == 12
    check_mp4(result.video_path, 12, 0.48)


def test_clip_mode_makes_one_clip(pipe, image_path, tmp_path):
    result = pipe.generate(
        image_path, [stubs.speech_like(5.0, 1)], "hi", tmp_path / "c.mp4", options=GenerateOptions(**SMALL, mode="clip")
    )
    assert (result.frames, result.clips) == (81, 1)


def test_same_seed_same_frames(pipe, image_path):
    wave = stubs.speech_like(1.0, 3)
    runs = []
    for _ in range(2):
        job = pipe.prepare(image_path, [wave], "x", options=GenerateOptions(**SMALL))
        runs.append(torch.cat(list(pipe.frames(job)), dim=1))
    assert torch.equal(*runs)


def test_plan_clips_schedule():
    clips, total = plan_clips(200, "streaming")
    assert [(c.start, c.end, c.keep_from, c.mirror_audio) for c in clips] == [
        (0, 81, 0, False),
        (56, 137, 25, False),
        (112, 193, 25, False),
        (168, 249, 25, True),
    ]
    assert total == 200
    assert [len(plan_clips(n, "streaming")[0]) for n in (1, 81, 82, 137, 138)] == [1, 1, 2, 2, 3]
    assert plan_clips(300, "clip")[1] == 81 and plan_clips(40, "clip")[0][0].mirror_audio


def official_streaming_clips(audio_frames: int, frame_num: int = 81, motion_frame: int = 25, max_frames_num=1000):
    """How many clips the official ``generate`` (``wan/multitalk.py``) runs in streaming mode, its loop control
    restated: ``None`` when it refuses the audio (an embedding of ``<= frame_num`` frames is skipped, then
    ``assert len(full_audio_embs) == HUMAN_NUMBER`` fails, in clip mode too)."""
    if audio_frames <= frame_num:
        return None
    clips, start, last = 0, 0, False
    while True:
        clips += 1  # one clip generated
        if last:
            break
        start += frame_num - motion_frame
        if start + frame_num >= min(max_frames_num, audio_frames):
            last = True
        if max_frames_num <= frame_num:
            break
    return clips


def test_streaming_runs_as_many_clips_as_the_official_for_every_length_it_accepts():
    assert all(official_streaming_clips(n) is None for n in range(1, 82))  # refused: ours runs one mirror-padded clip
    assert {n: official_streaming_clips(n) for n in (82, 137, 138, 193, 194)} == {82: 2, 137: 2, 138: 3, 193: 3, 194: 4}
    for n in range(82, 1001):  # the official stops at 1000 frames; ours refuses what exceeds max_duration_s
        assert len(plan_clips(n, "streaming")[0]) == official_streaming_clips(n), n


def test_cancel_between_steps_removes_the_partial_file(pipe, image_path, tmp_path):
    def cancel(progress):
        if progress.stage == "sampling" and progress.step == 1:
            raise GenerationCancelled("stop")

    with pytest.raises(GenerationCancelled):
        pipe.generate(
            image_path,
            [stubs.speech_like(1.0, 1)],
            "x",
            tmp_path / "x.mp4",
            options=GenerateOptions(**SMALL),
            callback=cancel,
        )
    assert not (tmp_path / "x.mp4").exists()


# --- bad inputs: a clear error that names the problem -----------------------------------------------------------
def run(pipe, image, audio, tmp_path, **kwargs):
    options = kwargs.pop("options", GenerateOptions(**SMALL))
    return pipe.generate(image, audio, "x", tmp_path / "bad.mp4", options=options, **kwargs)


def test_unreadable_audio(pipe, image_path, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is a text file")
    with pytest.raises(AudioError, match="audio of speaker 1: cannot open as audio"):
        run(pipe, image_path, [bad], tmp_path)


def test_empty_and_non_finite_audio(pipe, image_path, tmp_path):
    with pytest.raises(AudioError, match="audio of speaker 1: empty or not finite"):
        run(pipe, image_path, [np.zeros(0, np.float32)], tmp_path)
    with pytest.raises(AudioError, match="audio of speaker 2: empty or not finite"):
        run(pipe, image_path, [stubs.speech_like(1, 1), np.full(16000, np.nan, np.float32)], tmp_path)


def test_image_that_is_not_an_image(pipe, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ImageInputError, match="image: not a readable image"):
        run(pipe, fake, [stubs.speech_like(1, 1)], tmp_path)
    with pytest.raises(ImageInputError, match="too small"):
        run(pipe, Image.new("RGB", (1, 1)), [stubs.speech_like(1, 1)], tmp_path)


def test_boxes_outside_or_inverted(pipe, image_path, tmp_path):
    two = [stubs.speech_like(1, 1), stubs.speech_like(1, 2)]
    with pytest.raises(ImageInputError, match=r"box of person 2: .* outside the 500x300 image"):
        run(pipe, image_path, two, tmp_path, boxes=[Box(0, 0, 100, 100), Box(400, 0, 600, 100)])
    with pytest.raises(ImageInputError, match="box of person 1: inverted"):
        run(pipe, image_path, two, tmp_path, boxes=[Box(100, 0, 50, 100), Box(200, 0, 300, 100)])
    with pytest.raises(ImageInputError, match="boxes are for two speakers"):
        run(pipe, image_path, two[:1], tmp_path, boxes=[Box(0, 0, 50, 50), Box(60, 0, 90, 50)])


def test_more_than_two_speakers(pipe, image_path, tmp_path):
    with pytest.raises(AudioError, match="1 or 2 speakers, got 3"):
        run(pipe, image_path, [stubs.speech_like(1, i) for i in range(3)], tmp_path)


def test_duration_over_the_cap(pipe, image_path, tmp_path):
    with pytest.raises(AudioError, match=r"lasts 3.0 s, over the 2 s limit"):
        run(pipe, image_path, [stubs.speech_like(3, 1)], tmp_path, options=GenerateOptions(**SMALL, max_duration_s=2))


def test_bad_options_name_the_field(pipe, image_path, tmp_path):
    for options, field in [
        ({"steps": 0}, "steps"),
        ({"mode": "loop"}, "mode"),
        ({"size": (60, 96)}, "size"),
        ({"color_correction": 2.0}, "color_correction"),
        ({"text_scale": float("nan")}, "text_scale"),
    ]:
        with pytest.raises(EngineError, match=field):
            run(pipe, image_path, [stubs.speech_like(1, 1)], tmp_path, options=GenerateOptions(**{**SMALL, **options}))
