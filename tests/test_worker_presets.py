"""Presets and speed settings through the worker: what a job asks for, what runs, what is reported."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

import pipeline_stubs as stubs
from media import write_audio
from multitalk_serve.engine import ConfigError
from multitalk_serve.tiny import SPEED_LORA_NAME
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.handler import Worker

SMALL = {"width": 96, "height": 64, "seed": 3, "duration": 0.4}


def request(tmp_path: Path, **fields) -> dict:
    buf = io.BytesIO()
    Image.fromarray(stubs.scenario_image()).save(buf, format="PNG")
    audio = base64.b64encode(write_audio(tmp_path / "a.wav", 0.5).read_bytes()).decode()
    image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"id": "job-1", "input": {"image": image, "audio": audio, **SMALL, **fields}}


def config(root: Path, tmp_path: Path, **fields) -> WorkerConfig:
    base = {"model_path": root, "volume_path": tmp_path / "none", "s3": None, "device": "cpu", "dtype": "fp32"}
    return WorkerConfig(**{**base, **fields})


@pytest.fixture(scope="module")
def worker(tiny_root, tmp_path_factory):
    """A worker started as in production: the speed LoRA found under MODEL_PATH/Lightx2v."""
    return Worker.from_config(config(tiny_root, tmp_path_factory.mktemp("w")))


@pytest.fixture(scope="module")
def plain_worker(tiny_root, tmp_path_factory):
    return Worker.from_config(config(tiny_root, tmp_path_factory.mktemp("p"), speed_lora="none"))


def test_worker_finds_the_speed_lora_and_reports_its_setup(worker):
    health = worker.health()
    assert health["speed_lora"] == Path(SPEED_LORA_NAME).name
    assert (health["attention"], health["memory_plan"], health["default_preset"]) == (
        "native",
        "all resident",
        "quality",
    )


def test_fast_preset_runs_the_speed_lora_recipe(worker, tmp_path):
    out = worker.run(request(tmp_path, preset="fast"))
    assert "error" not in out, out
    params = out["params"]
    assert (params["preset"], params["sampling_steps"], params["speed_lora"], params["shift"]) == ("fast", 4, True, 2.0)
    assert (params["text_guide_scale"], params["audio_guide_scale"]) == (1.0, 2.0)
    assert out["worker"]["speed_lora"] == Path(SPEED_LORA_NAME).name
    assert 0 < out["first_segment_s"] <= out["gpu_seconds"]  # time to first segment, from the job's start


def test_explicit_fields_override_the_preset(worker, tmp_path):
    out = worker.run(request(tmp_path, preset="fast", sampling_steps=2, audio_guide_scale=3.0, shift=3.0))
    params = out["params"]
    assert (params["sampling_steps"], params["audio_guide_scale"], params["shift"]) == (2, 3.0, 3.0)
    assert params["speed_lora"] is True


def test_balanced_preset_caches_steps_and_reports_forwards(worker, tmp_path):
    out = worker.run(request(tmp_path, preset="balanced", sampling_steps=6))
    params = out["params"]
    assert (params["preset"], params["cache_threshold"], params["speed_lora"]) == ("balanced", 0.2, False)
    assert sum(params["forwards"].values()) == 6 * 3
    assert any("step cache" in w for w in out["warnings"])


def test_turbo_is_the_fast_preset_when_a_speed_lora_is_loaded(worker, tmp_path):
    out = worker.run(request(tmp_path, turbo=True))
    assert (out["params"]["preset"], out["params"]["sampling_steps"], out["params"]["turbo"]) == ("fast", 4, True)
    out = worker.run(request(tmp_path, turbo=True, preset="quality"))
    assert out["error"].startswith("E_INPUT: turbo means preset=fast")


def test_without_a_speed_lora_fast_is_refused_and_turbo_keeps_its_old_recipe(plain_worker, tmp_path):
    out = plain_worker.run(request(tmp_path, preset="fast"))
    assert out["error"].startswith("E_INPUT: preset: fast needs a speed LoRA")
    out = plain_worker.run(request(tmp_path, turbo=True))
    assert "error" not in out, out
    assert (out["params"]["preset"], out["params"]["sampling_steps"], out["params"]["speed_lora"]) == (
        "turbo-base",
        16,
        False,
    )
    assert any("no speed LoRA" in w for w in out["warnings"])
    assert plain_worker.run(request(tmp_path, cache_threshold=9))["error"].startswith("E_INPUT: cache_threshold")


def test_bad_speed_settings_fail_the_start(tiny_root, tmp_path):
    with pytest.raises(ConfigError, match="MULTITALK_PRESET must be one of"):
        Worker.from_config(config(tiny_root, tmp_path, preset="ludicrous"))
    with pytest.raises(ConfigError, match="MULTITALK_PRESET=fast needs a speed LoRA"):
        Worker.from_config(config(tiny_root, tmp_path, preset="fast", speed_lora="none"))
    with pytest.raises(ConfigError, match="MULTITALK_FUSE_SPEED_LORA"):
        Worker.from_config(config(tiny_root, tmp_path, fuse_speed_lora=True))
    with pytest.raises(Exception, match="memory plan 'fp4'"):
        Worker.from_config(config(tiny_root, tmp_path, memory_plan="fp4"))
    with pytest.raises(ConfigError, match=r"MULTITALK_SPEED_LORA: .* is not a file"):
        Worker.from_config(config(tiny_root, tmp_path, speed_lora="nowhere.safetensors"))


def test_a_fused_fast_worker_serves_fast_and_refuses_quality(tiny_root, tmp_path):
    fused = Worker.from_config(config(tiny_root, tmp_path, preset="fast", fuse_speed_lora=True))
    out = fused.run(request(tmp_path, sampling_steps=1))
    assert "error" not in out and out["params"]["preset"] == "fast"
    assert fused.run(request(tmp_path, preset="quality"))["error"].startswith(
        "E_INPUT: preset: the speed LoRA is fused"
    )


def test_fp8_worker_with_preset_fast_merges_the_lora_by_itself(tiny_root, tmp_path):
    worker = Worker.from_config(config(tiny_root, tmp_path, preset="fast", memory_plan="fp8", dtype="bf16"))
    assert worker.pipeline.speed_lora_fused and worker.health()["memory_plan"] == "fp8"
    out = worker.run(request(tmp_path, sampling_steps=1))
    assert "error" not in out and out["params"]["speed_lora"] is True
    # the default preset quality on fp8: the LoRA is left out (and said), quality jobs run, fast is refused
    quality = Worker.from_config(config(tiny_root, tmp_path, memory_plan="fp8", dtype="bf16"))
    assert quality.pipeline.speed_lora is None and "not loaded" in quality.pipeline.notes[0]
    assert quality.run(request(tmp_path, preset="fast"))["error"].startswith("E_INPUT: preset: fast needs")
