"""Our pipeline against the official ``MultiTalkPipeline.generate``, run with the same stand-in networks.

Fixture: ``fixtures/official/official_pipeline.safetensors`` (how it was made: README.md there). Compared:
loudness-normalised, arranged speaker tracks; wav2vec2 features (official wrapper on transformers 4.57, eager;
ours on transformers 5, SDPA); bucket tables and choice; person masks; the audio windows every clip sees; the
timestep grid; every model call's timestep; and the generated frames (guidance, Euler, motion-frame re-noising,
the random draws, the clip schedule, mirror padding, colour correction).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import pipeline_stubs as stubs
from multitalk_serve.engine.pipeline.audio import Wav2Vec2Features
from multitalk_serve.engine.pipeline.conditioning import BUCKETS, Box, choose_bucket
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline
from multitalk_serve.engine.pipeline.sampling import timesteps
from multitalk_serve.tiny import WAV2VEC_DIR

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "official_pipeline.safetensors"
NEGATIVE = "bright tones, overexposed, static"  # what the fixture maker gave the official pipeline


@pytest.fixture(scope="module")
def fixture():
    with safe_open(FIXTURE, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        meta = json.loads(f.metadata()["json"])
    return tensors, meta


class StubTransformer:
    def __init__(self):
        self.log = stubs.CallLog()

    def __call__(self, hidden, timestep, context, clip, audio, masks):
        latent, y = hidden[0, :16], hidden[0, 16:]
        self.log.record(timestep, audio, masks, latent)
        return stubs.velocity(latent, y, timestep, context[0], clip, audio, masks)[None]


class StubVAE:
    encode = staticmethod(stubs.vae_encode)
    decode = staticmethod(stubs.vae_decode)


@pytest.fixture(scope="module")
def audio_encoder(tiny_root):
    return Wav2Vec2Features.from_pretrained(tiny_root / WAV2VEC_DIR)


def run_ours(name: str, audio_encoder, target):
    spec = stubs.SCENARIOS[name]
    transformer = StubTransformer()
    pipe = MultiTalkPipeline(
        transformer=transformer,
        vae=StubVAE(),
        text_encoder=lambda prompts: [stubs.text_features(p) for p in prompts],
        image_encoder=stubs.clip_features,
        audio_encoder=audio_encoder,
        dtype=torch.float32,
    )
    waves = [stubs.speech_like(s, seed=100 + i) for i, s in enumerate(spec["speakers"])]
    boxes = [Box.from_official(spec["bbox"][f"person{i}"]) for i in (1, 2)] if spec["bbox"] else None
    options = GenerateOptions(
        mode=spec["mode"],
        steps=spec["steps"],
        shift=7.0,
        text_scale=spec["text_scale"],
        audio_scale=spec["audio_scale"],
        use_apg=spec["apg"],
        seed=spec["seed"],
        color_correction=spec["color"],
        negative_prompt=NEGATIVE,
        audio_type=spec["audio_type"] or "add",
        frames_per_clip=stubs.FRAME_NUM,
        motion_frames=stubs.MOTION_FRAMES,
        size=target,
    )
    image = Image.fromarray(stubs.scenario_image())
    job = pipe.prepare(image, waves, "two people talk in a car", boxes=boxes, options=options)
    frames = torch.cat(list(pipe.frames(job)), dim=1)
    return job, frames, transformer.log


def test_fixture_was_made_with_this_tiny_wav2vec2(fixture, audio_encoder):
    _, meta = fixture
    ours = float(sum(p.double().abs().sum() for p in audio_encoder.model.parameters()))
    assert ours == pytest.approx(float(meta["wav2vec2_fingerprint"]), rel=1e-9), (
        "tiny wav2vec2 generation changed: regenerate the fixture (tests/fixtures/official/README.md)"
    )


def test_bucket_tables_are_the_official_ones(fixture):
    _, meta = fixture
    for resolution, table in meta["bucket_tables"].items():
        assert {k: list(v) for k, v in BUCKETS[resolution].items()} == table
    small = {k: tuple(v[0]) for k, v in stubs.SMALL_BUCKETS.items()}
    assert choose_bucket(*stubs.IMAGE_SIZE, table=small) == (64, 96)
    for h, w in ((1080, 1920), (1920, 1080), (720, 720), (1000, 1333), (500, 2000), (3000, 700)):
        ratio = h / w
        table = meta["bucket_tables"]["480p"]
        closest = sorted(table, key=lambda k: abs(float(k) - ratio))[0]
        assert choose_bucket(h, w, "480p") == tuple(table[closest])


def test_timestep_grid_is_the_official_one(fixture):
    _, meta = fixture
    for key, expected in meta["timesteps"].items():
        steps, shift = key.split("@")
        torch.testing.assert_close(timesteps(int(steps), float(shift)), torch.tensor(expected), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(stubs.SCENARIOS))
def test_pipeline_matches_official(fixture, audio_encoder, name):
    tensors, meta = fixture
    m = meta["scenarios"][name]
    job, frames, log = run_ours(name, audio_encoder, (m["height"], m["width"]))
    prefix = f"{name}."

    # audio: arranged, normalised tracks and wav2vec2 features
    for i, feats in enumerate(job.features, start=1):
        torch.testing.assert_close(feats.mean(-1), tensors[f"{prefix}features{i}.channel_means"], atol=2e-5, rtol=1e-4)
        if f"{prefix}features{i}" in tensors:
            torch.testing.assert_close(feats, tensors[f"{prefix}features{i}"], atol=1e-4, rtol=1e-4)

    # the clip schedule: same clips, same timesteps and speakers per call, same windows and masks per clip
    assert len(job.clips) == m["clips"]
    assert [c["t"] for c in log.calls] == pytest.approx([c["t"] for c in m["calls"]], abs=1e-3)
    assert [c["speakers"] for c in log.calls] == [c["speakers"] for c in m["calls"]]
    assert [c["audio_sum"] for c in log.calls] == pytest.approx([c["audio_sum"] for c in m["calls"]], rel=1e-4)
    starts = [i for i, c in enumerate(log.calls) if i == 0 or c["t"] > log.calls[i - 1]["t"]]
    for k, idx in enumerate(starts):
        torch.testing.assert_close(
            log.calls[idx]["window_means"], tensors[f"{prefix}clip{k}.window_means"], atol=2e-5, rtol=1e-4
        )
        if f"{prefix}clip{k}.masks" in tensors:
            assert torch.equal(log.calls[idx]["masks"], tensors[f"{prefix}clip{k}.masks"])

    # the video: ours is as long as the audio (streaming) where the official drops the last 3 frames
    official_frames = m["frames"]
    audio_frames = job.features.shape[1]
    expected = min(audio_frames, stubs.FRAME_NUM) if spec_mode(name) == "clip" else audio_frames
    assert frames.shape[1] == expected
    assert official_frames == (expected if spec_mode(name) == "clip" else audio_frames - 3)
    ours = frames[:, :official_frames]
    torch.testing.assert_close(ours.mean(dim=(2, 3)).T, tensors[f"{prefix}video_frame_means"], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours[:, :, 3::8, 3::8], tensors[f"{prefix}video_subsampled"], atol=2e-4, rtol=0)


def spec_mode(name: str) -> str:
    return stubs.SCENARIOS[name]["mode"]


def test_arrangement_and_loudness_match(fixture, audio_encoder):
    """The speaker tracks fed to wav2vec2 (loudness-normalised, then arranged) equal the official ones."""
    tensors, meta = fixture
    pipe = MultiTalkPipeline(None, None, None, None, audio_encoder)
    for name, spec in stubs.SCENARIOS.items():
        waves = [stubs.speech_like(s, seed=100 + i) for i, s in enumerate(spec["speakers"])]
        speech16, _ = pipe.prepare_audio(waves, spec["audio_type"] or "add")
        m = meta["scenarios"][name]
        assert [len(t) for t in speech16.tracks] == m["track_lengths"]
        for i, track in enumerate(speech16.tracks, start=1):
            assert float(np.asarray(track, np.float64).sum()) == pytest.approx(
                m["track_sums"][i - 1], rel=1e-4, abs=1e-3
            )
            torch.testing.assert_close(
                torch.from_numpy(track[::16]).float(), tensors[f"{name}.track{i}.every16"], atol=1e-5, rtol=1e-4
            )
