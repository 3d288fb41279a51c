"""Ten-minute jobs by default, longer when the worker is configured for it (issue 14): MAX_DURATION_SECONDS is the
only cap on a job's length; the request schema's ceiling (a day) is far above it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from multitalk_serve.cli import build_parser
from multitalk_serve.worker.config import DEFAULT_MAX_DURATION_S, MAX_JOB_SECONDS, WorkerConfig
from multitalk_serve.worker.handler import Worker
from multitalk_serve.worker.schema import JobInput

MEDIA = {"image": "https://example.com/a.png", "audio": "https://example.com/a.wav"}


def test_the_default_cap_is_ten_minutes(monkeypatch):
    monkeypatch.delenv("MAX_DURATION_SECONDS", raising=False)
    assert DEFAULT_MAX_DURATION_S == 600.0
    assert WorkerConfig(s3=None).max_duration_s == 600.0
    args = build_parser().parse_args(
        ["generate", "--model", "m", "--image", "a.png", "--audio", "a.wav", "--out", "a.mp4"]
    )
    assert args.max_duration == 600.0


@pytest.mark.parametrize("value", ["0", "-5", "86401", "inf", "nan"])
def test_a_cap_out_of_range_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("MAX_DURATION_SECONDS", value)
    with pytest.raises(ValueError, match="MAX_DURATION_SECONDS must be more than 0 and at most 86400"):
        WorkerConfig(s3=None)


def test_the_schema_accepts_lengths_up_to_a_day_and_no_more():
    assert JobInput.model_validate({**MEDIA, "duration": MAX_JOB_SECONDS}).duration == MAX_JOB_SECONDS
    assert JobInput.model_validate({**MEDIA, "num_frames": 25 * 7200}).num_frames == 180000
    for over in ({"duration": MAX_JOB_SECONDS + 1}, {"num_frames": 25 * MAX_JOB_SECONDS + 1}):
        with pytest.raises(ValidationError):
            JobInput.model_validate({**MEDIA, **over})


def test_a_worker_configured_above_ten_minutes_takes_a_longer_job(tiny_pipeline, monkeypatch, tmp_path: Path):
    """MAX_DURATION_SECONDS=1800: a 20-minute job passes the length check and the engine gets the worker's cap (the
    source-video limit follows it: ``video_limit``); 31 minutes is refused, naming the field and the variable."""
    from multitalk_serve.engine.pipeline.source import video_limit

    monkeypatch.setenv("MAX_DURATION_SECONDS", "1800")
    config = WorkerConfig(model_path=tmp_path, volume_path=tmp_path, s3=None)
    worker = Worker(tiny_pipeline, config)
    options, _ = worker._options(JobInput.model_validate({**MEDIA, "duration": 1200}), [])
    assert (options.num_frames, options.max_duration_s) == (30000, 1800.0)
    assert video_limit(options.max_duration_s) == 1800.0
    result = worker.run({"id": "long", "input": {**MEDIA, "duration": 1860}})
    assert result["error"] == "E_INPUT: duration: 1860 s is over this worker's 1800 s limit (MAX_DURATION_SECONDS)"
