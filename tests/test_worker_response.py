"""The job result model: published as JSON Schema, ``params`` derived from ``GenerateOptions``, and what the worker
returns validates against it."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import fields
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from runpod.serverless.modules.rp_fastapi import WorkerAPI

import pipeline_stubs as stubs
from media import write_audio
from multitalk_serve.engine import GenerateOptions
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.handler import Worker
from multitalk_serve.worker.response import NOT_REPORTED, PARAM_NAMES, SCHEMA_FILE, JobOutput, JobParams, output_schema


def test_docs_publish_the_current_output_schema():
    published = json.loads((Path(__file__).parents[1] / SCHEMA_FILE).read_text())
    assert published == output_schema(), (
        f"{SCHEMA_FILE} is stale: python -m multitalk_serve.worker.response > {SCHEMA_FILE}"
    )
    assert published["additionalProperties"] is False
    assert {"video", "seed", "params", "timings", "worker", "warnings"} <= set(published["required"])


def test_every_generate_option_is_reported_or_deliberately_not():
    """A new engine option must be given a place in the result (or a reason not to be there)."""
    names = {f.name for f in fields(GenerateOptions)}
    assert names == set(PARAM_NAMES) | set(NOT_REPORTED), names ^ (set(PARAM_NAMES) | set(NOT_REPORTED))
    assert not set(PARAM_NAMES) & set(NOT_REPORTED)


def test_params_come_from_the_options_under_the_api_names():
    options = GenerateOptions(
        steps=7, text_scale=1.0, audio_scale=2.5, shift=3.0, seed=9, size=(64, 96), negative_prompt="blurry"
    )
    params = JobParams.from_options(options, preset="fast", turbo=False, speakers=1, clips=2)
    assert params.model_dump(exclude_unset=True) == {
        "preset": "fast",
        "resolution": "custom",  # an explicit size replaces the bucket
        "mode": "streaming",
        "sampling_steps": 7,
        "text_guide_scale": 1.0,
        "audio_guide_scale": 2.5,
        "use_apg": False,
        "audio_type": "add",
        "color_correction": 1.0,
        "negative_prompt": "custom",
        "turbo": False,
        "cache_threshold": 0.0,
        "speed_lora": False,
        "num_frames": None,
        "size": "96x64",
        "seed": 9,
        "shift": 3.0,
        "speakers": 1,
        "clips": 2,
        "model": "multitalk",
        "source_end": "hold",
        "keep_background": False,
        "feather": None,
    }
    assert (
        JobParams.from_options(
            GenerateOptions(seed=1, shift=7.0), preset="quality", turbo=False, speakers=1, clips=1
        ).size
        == "bucket"
    )


@pytest.fixture(scope="module")
def client(tiny_pipeline, tiny_root, tmp_path_factory):
    volume = tmp_path_factory.mktemp("volume")
    config = WorkerConfig(model_path=tiny_root, volume_path=volume / "missing", s3=None, progress_interval_s=0.0)
    return TestClient(WorkerAPI({"handler": Worker(tiny_pipeline, config).handle}).rp_app)


def test_a_real_result_is_a_job_output(client, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(stubs.scenario_image()).save(buf, format="PNG")
    body = {
        "input": {
            "image": base64.b64encode(buf.getvalue()).decode(),
            "audio": base64.b64encode(write_audio(tmp_path / "a.wav", 1.0).read_bytes()).decode(),
            "width": 96,
            "height": 64,
            "sampling_steps": 2,
            "seed": 3,
            "cache_threshold": 0.5,
            "output": {"thumbnail": True},
        }
    }
    out = client.post("/runsync", json=body).json()["output"]
    parsed = JobOutput.model_validate(out)  # strict: a field the model does not know fails here
    assert parsed.payload() == out
    assert "video_url" not in out and "thumbnail_path" not in out  # what does not apply is absent, not null
    assert out["thumbnail_url"] is None and out["video"]["url"] is None  # ... except where it always was
    assert (out["video"]["content_type"], out["video"]["fps"], out["video"]["has_audio"]) == ("video/mp4", 25, True)
    assert out["params"]["size"] == "96x64" and out["params"]["cache_threshold"] == 0.5
    assert set(out["params"]["forwards"]) == {"computed", "reused"}
