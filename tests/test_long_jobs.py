"""Long jobs in the engine (``segments.py``): window segments, the saved loop state, resume equal to an
uninterrupted run, the final MP4 assembled from the segments, and what a full disk does."""

from __future__ import annotations

import errno

import av
import numpy as np
import pytest
import torch

from multitalk_serve.engine import GenerateOptions, JobPlan, MultiTalkPipeline, Segment
from multitalk_serve.engine.pipeline import segments as segments_module
from multitalk_serve.engine.pipeline.video import probe

# 4 new frames a window at the tiny model's smallest size: many windows for little work
TINY = {"size": (32, 32), "steps": 1, "seed": 3, "frames_per_clip": 5, "motion_frames": 1}


class Crash(Exception):
    """Stands for the worker dying after a window."""


def voice(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def decoded(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


@pytest.fixture(scope="module")
def pipe(tiny_root):
    return MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "face.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def uninterrupted(pipe, image, tmp_path_factory):
    """One job of 8 windows through a job folder, every segment and the plan recorded."""
    root = tmp_path_factory.mktemp("whole")
    seen, plans = [], []
    result = pipe.generate(
        image,
        [voice(1.3)],
        "a person talks",
        root / "whole.mp4",
        options=GenerateOptions(**TINY),
        job_dir=root / "job",
        on_segment=seen.append,
        on_plan=plans.append,
    )
    return result, seen, plans, root


def test_every_window_is_a_playable_segment_and_the_mp4_is_their_join(uninterrupted):
    result, seen, plans, _ = uninterrupted
    assert plans == [JobPlan(8, 32, 32, 32, 1, 3, 5, "multitalk", 1, 0, False, 0.0)]
    assert [s.index for s in seen] == list(range(8)) and result.segments == 8 and result.resumed_from == 0
    assert all(isinstance(s, Segment) and not s.resumed and s.total == 8 and s.seconds > 0 for s in seen)
    assert [s.start_frame for s in seen] == [0, 5, 9, 13, 17, 21, 25, 29]
    assert sum(s.frames for s in seen) == result.frames == 32
    whole = decoded(result.video_path)
    parts = [decoded(s.path) for s in seen]
    assert [len(p) for p in parts] == [s.frames for s in seen]
    assert np.array_equal(np.concatenate(parts), whole)  # the MP4 holds the segments' pictures, not re-encoded
    with av.open(str(seen[3].path)) as c:  # a segment plays on its own: video + its slice of sound
        assert c.format.name == "mpegts" and c.streams.video and c.streams.audio
    info = probe(result.video_path)
    assert info.frames == 32 and info.fps == 25 and abs(info.audio_seconds - 32 / 25) < 0.05


def test_a_job_that_died_continues_from_its_last_window_with_the_same_frames(pipe, image, uninterrupted, tmp_path):
    whole, _, _, _ = uninterrupted
    job = tmp_path / "job"
    options = GenerateOptions(**{**TINY, "seed": None})  # the seed drawn by the first run is kept for the second

    def die_after_third(segment: Segment) -> None:
        if segment.index == 2:
            raise Crash

    with pytest.raises(Crash):
        pipe.generate(
            image,
            [voice(1.3)],
            "a person talks",
            tmp_path / "a.mp4",
            options=options,
            job_dir=job,
            on_segment=die_after_third,
        )
    assert not (tmp_path / "a.mp4").exists() and (job / "state.pt").is_file()
    drawn = torch.load(job / "state.pt", weights_only=True)["seed"]
    seen = []
    again = pipe.generate(
        image, [voice(1.3)], "a person talks", tmp_path / "b.mp4", options=options, job_dir=job, on_segment=seen.append
    )
    assert again.resumed_from == 3 and [s.resumed for s in seen] == [True] * 3 + [False] * 5
    assert again.seed == drawn and any("resumed after window 3" in n for n in again.notes)
    assert again.frames == whole.frames and probe(again.video_path).frames == 32


def test_resume_gives_exactly_the_uninterrupted_segments(pipe, image, uninterrupted, tmp_path):
    whole, _, _, _ = uninterrupted
    job = tmp_path / "job"

    def die(segment: Segment) -> None:
        if segment.index == 4:
            raise Crash

    with pytest.raises(Crash):
        pipe.generate(
            image,
            [voice(1.3)],
            "a person talks",
            tmp_path / "a.mp4",
            options=GenerateOptions(**TINY),
            job_dir=job,
            on_segment=die,
        )
    again = pipe.generate(
        image, [voice(1.3)], "a person talks", tmp_path / "b.mp4", options=GenerateOptions(**TINY), job_dir=job
    )
    assert again.resumed_from == 5
    assert np.array_equal(decoded(again.video_path), decoded(whole.video_path))


def test_a_state_of_another_request_is_not_continued(pipe, image, tmp_path):
    job = tmp_path / "job"

    def die(segment: Segment) -> None:
        raise Crash

    with pytest.raises(Crash):
        pipe.generate(
            image,
            [voice(1.3)],
            "a person talks",
            tmp_path / "a.mp4",
            options=GenerateOptions(**TINY),
            job_dir=job,
            on_segment=die,
        )
    other = pipe.generate(
        image, [voice(1.3)], "someone else talks", tmp_path / "b.mp4", options=GenerateOptions(**TINY), job_dir=job
    )
    assert other.resumed_from == 0 and any("another request" in n for n in other.notes)
    again = pipe.generate(
        image,
        [voice(1.3)],
        "a person talks",
        tmp_path / "c.mp4",
        options=GenerateOptions(**TINY),
        job_dir=job,
        fingerprint="request B",
    )
    assert again.resumed_from == 0  # the caller's own description of the request differs too


def test_a_full_disk_while_saving_state_never_fails_the_job(pipe, image, uninterrupted, tmp_path, monkeypatch):
    whole, _, _, _ = uninterrupted
    calls = {"n": 0}
    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(segments_module.torch, "save", full)
    result = pipe.generate(
        image,
        [voice(1.3)],
        "a person talks",
        tmp_path / "out.mp4",
        options=GenerateOptions(**TINY),
        job_dir=tmp_path / "job",
    )
    assert any("disk is full" in n and "can no longer be resumed" in n for n in result.notes)
    assert np.array_equal(decoded(result.video_path), decoded(whole.video_path))
    assert not (tmp_path / "job" / "state.pt.part").exists()


def test_a_full_disk_while_writing_a_segment_moves_the_job_to_local_disk(
    pipe, image, uninterrupted, tmp_path, monkeypatch
):
    whole, _, _, _ = uninterrupted
    real = segments_module.write_segment
    job = tmp_path / "job"

    def full(path, *args, **kwargs):
        if path.parent == job and path.name >= "seg_00002":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(segments_module, "write_segment", full)
    seen = []
    result = pipe.generate(
        image,
        [voice(1.3)],
        "a person talks",
        tmp_path / "out.mp4",
        options=GenerateOptions(**TINY),
        job_dir=job,
        on_segment=seen.append,
    )
    assert [s.path.parent == job for s in seen] == [True, True] + [False] * 6
    assert np.array_equal(decoded(result.video_path), decoded(whole.video_path))
    assert any("can no longer be resumed" in n for n in result.notes)


def test_refusing_the_plan_stops_before_any_sampling(pipe, image, tmp_path):
    def refuse(plan: JobPlan) -> None:
        raise Crash(plan.windows)

    sampled = []
    with pytest.raises(Crash):
        pipe.generate(
            image,
            [voice(1.3)],
            "a person talks",
            tmp_path / "a.mp4",
            options=GenerateOptions(**TINY),
            job_dir=tmp_path / "job",
            on_plan=refuse,
            callback=lambda p: sampled.append(p.stage),
        )
    assert "sampling" not in sampled and not list((tmp_path / "job").glob("seg_*"))
