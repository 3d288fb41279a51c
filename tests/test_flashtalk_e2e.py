"""FlashTalk (``realtime``) end to end through the worker: a job runs the engine's FlashTalk loop, its windows are
delivered as they are made (28 new frames each), and the result reports model flashtalk, preset realtime and the
time to first segment. The first test drives the real pipeline with stand-in networks (``pipeline_stubs.py``) and
the tiny wav2vec2; the second starts a worker as production does (``MULTITALK_ADAPTERS=flashtalk``) on the tiny
FlashTalk folder that ``make-tiny`` writes."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

import pipeline_stubs as stubs
from media import write_audio
from multitalk_serve.engine.pipeline.audio import Wav2Vec2Features
from multitalk_serve.engine.pipeline.generate import MultiTalkPipeline
from multitalk_serve.tiny import WAV2VEC_DIR
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.fitness import FLASHTALK_DIR
from multitalk_serve.worker.handler import Worker

SMALL = {"width": 64, "height": 64, "seed": 3, "prompt": "a person talks"}


def png_uri() -> str:
    buf = io.BytesIO()
    Image.fromarray(stubs.scenario_image()).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> str:
    path = write_audio(tmp_path_factory.mktemp("voice") / "v.wav", 1.5)  # 37.5 frames: 2 windows (28 + 10)
    return base64.b64encode(path.read_bytes()).decode()


def stand_in_pipeline(tiny_root: Path) -> MultiTalkPipeline:
    """The engine's pipeline holding FlashTalk, with stand-in networks and the tiny wav2vec2."""

    def transformer(hidden, timestep, context, clip, audio, masks):
        latent, y = hidden[0, :16], hidden[0, 16:]
        return stubs.velocity(latent, y, timestep, context[0], clip, audio, masks)[None]

    class VAE:
        encode = staticmethod(stubs.vae_encode)
        decode = staticmethod(stubs.vae_decode)

    return MultiTalkPipeline(
        transformer=transformer,
        vae=VAE(),
        text_encoder=lambda prompts: [stubs.text_features(p) for p in prompts],
        image_encoder=stubs.clip_features,
        audio_encoder=Wav2Vec2Features.from_pretrained(tiny_root / WAV2VEC_DIR),
        dtype=torch.float32,
        adapter="flashtalk",
    )


def check_realtime_result(out: dict, items: list[dict]) -> None:
    assert "error" not in out, out
    params = out["params"]
    assert (params["model"], params["preset"], params["sampling_steps"], params["shift"]) == (
        "flashtalk",
        "realtime",
        4,
        5.0,
    )
    assert (params["text_guide_scale"], params["audio_guide_scale"], params["speed_lora"]) == (1.0, 1.0, False)
    assert params["speakers"] == 1 and params["clips"] == 2 and out["video"]["frames"] == 37
    segments = [item for item in items if item.get("type") == "segment"]
    assert [s["frames"] for s in segments] == [28, 9] and [s["start_s"] for s in segments] == [0.0, 1.12]
    assert out["segments"]["published"] == 2
    # time to first segment: after the job's start, before its end; the first window is delivered before the second
    assert 0 < out["first_segment_s"] < out["gpu_seconds"]


def test_a_flashtalk_worker_streams_realtime_windows_and_reports_them(tiny_root, voice, tmp_path):
    config = WorkerConfig(
        model_path=tiny_root, volume_path=tmp_path / "none", s3=None, progress_interval_s=0.0, model=None
    )
    worker = Worker(stand_in_pipeline(tiny_root), config, load_seconds=1.0)
    assert (worker.held, worker.default_model, worker.default_preset) == (["flashtalk"], "flashtalk", "realtime")
    items: list[dict] = []
    out = worker.run({"id": "ft", "input": {"image": png_uri(), "audio": voice, **SMALL}}, emit=items.append)
    check_realtime_result(out, items)
    # the same job asking for another model, or two voices, is refused naming what this worker holds
    other = worker.run({"id": "ft2", "input": {"image": png_uri(), "audio": voice, "model": "multitalk", **SMALL}})
    assert other["error"].startswith("E_INPUT: model: multitalk is not held by this worker; it holds flashtalk")


def test_a_worker_started_with_multitalk_adapters_flashtalk(tiny_root, voice, tmp_path):
    assert (tiny_root / FLASHTALK_DIR / "config.json").is_file()  # make-tiny writes FlashTalk's folder
    config = WorkerConfig(
        model_path=tiny_root,
        volume_path=tmp_path / "none",
        s3=None,
        progress_interval_s=0.0,
        device="cpu",
        dtype="fp32",
        adapters=("flashtalk",),
        model=None,
        preset=None,
    )
    worker = Worker.from_config(config)
    assert worker.health()["models"] == ["flashtalk"] and worker.health()["default_preset"] == "realtime"
    items: list[dict] = []
    out = worker.run({"id": "ft", "input": {"image": png_uri(), "audio": voice, **SMALL}}, emit=items.append)
    check_realtime_result(out, items)
