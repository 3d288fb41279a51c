"""Our InfiniteTalk loop against the official ``InfiniteTalkPipeline.generate_infinitetalk``, run with the same
stand-in networks (``pipeline_stubs.py``).

Fixture: ``fixtures/official/official_infinitetalk_pipeline.safetensors`` (how it was made: README.md there).
Two scenarios, three 81-frame windows each (starting at frames 0, 72, 144; 9 motion frames): one speaker on an
image with colour correction, and two speakers on a 25 fps video (the reference frame is re-read from the source at
every window start, the last window past the video's end holds its last frame). Compared per window: the reference
frame and the CLIP input (pixels), the ``y`` condition (mask channels: only frame 0 marked; VAE of the reference and
80 zero frames), the clean motion latents written into the latent (the reference's latent in window 1, the VAE of
the last 9 generated frames after), the audio windows and masks; per model call the timestep, the speakers, the
audio checksum and the latent's checksum (which also follows the seeded random draws, the official dead motion
re-noising's included); the frames (guidance, Euler, decoding, colour correction) and the trimmed length.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import pipeline_stubs as stubs
from multitalk_serve.engine.pipeline.audio import Wav2Vec2Features
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline
from multitalk_serve.engine.pipeline.source import ImageSource
from multitalk_serve.tiny import WAV2VEC_DIR

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "official_infinitetalk_pipeline.safetensors"
NEGATIVE = "bright tones, overexposed, static"  # what the fixture maker gave the official pipeline (make_pipeline)
PROMPT = "two people talk in a car"


@pytest.fixture(scope="module")
def fixture():
    with safe_open(FIXTURE, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        meta = json.loads(f.metadata()["json"])
    return tensors, meta


class Recorder:
    """What the stand-in networks saw on our side (the same records as the fixture maker's)."""

    def __init__(self):
        self.log = stubs.CallLog()
        self.latents: list[torch.Tensor] = []
        self.ys: list[torch.Tensor] = []
        self.clip_inputs: list[torch.Tensor] = []
        self.encoded: list[torch.Tensor] = []


class StubTransformer:
    def __init__(self, rec: Recorder):
        self.rec = rec

    def __call__(self, hidden, timestep, context, clip, audio, masks):
        latent, y = hidden[0, :16], hidden[0, 16:]
        self.rec.latents.append(latent.clone())
        self.rec.ys.append(y.clone())
        self.rec.log.record(timestep, audio, masks, latent)
        return stubs.velocity(latent, y, timestep, context[0], clip, audio, masks)[None]


class StubVAE:
    def __init__(self, rec: Recorder):
        self.rec = rec

    def encode(self, video, progress=None):
        self.rec.encoded.append(video.clone())
        return stubs.vae_encode(video)

    decode = staticmethod(stubs.vae_decode)


@pytest.fixture(scope="module")
def audio_encoder(tiny_root):
    return Wav2Vec2Features.from_pretrained(tiny_root / WAV2VEC_DIR)


def run_ours(name: str, audio_encoder, size: tuple[int, int], work: Path):
    spec = stubs.ITK_SCENARIOS[name]
    rec = Recorder()

    def image_encoder(frame):
        rec.clip_inputs.append(frame.clone())
        return stubs.clip_features(frame)

    pipe = MultiTalkPipeline(
        transformer=StubTransformer(rec),
        vae=StubVAE(rec),
        text_encoder=lambda prompts: [stubs.text_features(p) for p in prompts],
        image_encoder=image_encoder,
        audio_encoder=audio_encoder,
        dtype=torch.float32,
        adapter=spec["adapter"],
    )
    waves = [stubs.speech_like(s, seed=100 + i) for i, s in enumerate(spec["speakers"])]
    options = GenerateOptions(
        model="infinitetalk",
        mode="streaming",
        steps=spec["steps"],
        shift=7.0,
        text_scale=spec["text_scale"],
        audio_scale=spec["audio_scale"],
        seed=spec["seed"],
        color_correction=spec["color"],
        negative_prompt=NEGATIVE,
        audio_type=spec["audio_type"] or "add",
        frames_per_clip=stubs.ITK_FRAME_NUM,
        motion_frames=stubs.ITK_MOTION_FRAMES,
        size=size,
    )
    if spec["source"] == "image":
        job = pipe.prepare(Image.fromarray(stubs.scenario_image()), waves, PROMPT, options=options)
    else:
        video = work / f"{name}.mp4"
        stubs.write_source_video(video)
        job = pipe.prepare(None, waves, PROMPT, video=video, options=options)
    frames = torch.cat(list(pipe.frames(job)), dim=1)
    return job, frames, rec


def to_pixels(frame: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [-1, 1] -> the uint8 pixels it was made from (the fixture stores reference frames so)."""
    pixels = ((frame.double() / 2 + 0.5) * 255).round()
    assert torch.allclose(pixels, (frame.double() / 2 + 0.5) * 255, atol=1e-3), "not a uint8 image"
    return pixels.to(torch.uint8)


def test_fixture_was_made_with_this_tiny_wav2vec2_and_source(fixture, audio_encoder):
    _, meta = fixture
    ours = float(sum(p.double().abs().sum() for p in audio_encoder.model.parameters()))
    assert ours == pytest.approx(float(meta["wav2vec2_fingerprint"]), rel=1e-9), (
        "tiny wav2vec2 generation changed: regenerate the fixture (tests/fixtures/official/README.md)"
    )
    video_sum = sum(int(stubs.source_video_frame(i).sum()) for i in range(stubs.SOURCE_VIDEO_FRAMES))
    assert video_sum == meta["source_video_sum"], "the source video changed: regenerate the fixture"


@pytest.mark.parametrize("name", list(stubs.ITK_SCENARIOS))
def test_infinitetalk_pipeline_matches_official(fixture, audio_encoder, tmp_path, name):
    tensors, meta = fixture
    m = meta["scenarios"][name]
    # the official code read the source at the window starts (0, 72, 144; 144 is past the video's 130 frames)
    assert m["source_frame_ids"] == [0, 72, 144] and m["windows"] == 3
    job, frames, rec = run_ours(name, audio_encoder, (m["height"], m["width"]), tmp_path)
    compare(tensors, m, name, job, frames, rec)


def compare(tensors: dict, m: dict, name: str, job, frames: torch.Tensor, rec: Recorder) -> None:
    """Everything the fixture recorded for scenario ``name`` against our run."""
    prefix = f"{name}."

    # audio features (official wrapper on transformers 4.57, eager; ours on transformers 5, SDPA)
    for i, feats in enumerate(job.features, start=1):
        torch.testing.assert_close(feats.mean(-1), tensors[f"{prefix}features{i}.channel_means"], atol=2e-5, rtol=1e-4)

    # every model call: timestep, speakers, audio and latent checksums (the latent follows the random draws)
    calls, official = rec.log.calls, m["calls"]
    assert len(calls) == len(official)
    assert [c["t"] for c in calls] == pytest.approx([c["t"] for c in official], abs=1e-3)
    assert [c["speakers"] for c in calls] == [c["speakers"] for c in official]
    assert [c["audio_sum"] for c in calls] == pytest.approx([c["audio_sum"] for c in official], rel=1e-4)
    assert [c["latent_sum"] for c in calls] == pytest.approx([c["latent_sum"] for c in official], rel=1e-4, abs=1e-2)

    # per window: reference frame, CLIP input, y, clean motion latents, audio windows, masks
    starts = [i for i, c in enumerate(calls) if i == 0 or c["t"] > calls[i - 1]["t"]]
    assert len(starts) == m["windows"]
    # an image source gives every window the same condition: ours encodes it once (the official every window);
    # what each window's model calls see is compared below through y itself
    y_videos = [v for v in rec.encoded if v.shape[1] == stubs.ITK_FRAME_NUM]
    made = 1 if isinstance(job.source, ImageSource) else len(starts)
    assert len(y_videos) == made and len(rec.clip_inputs) == made
    for k, idx in enumerate(starts):
        p = f"{prefix}window{k}."
        y_video, clip_input = y_videos[min(k, made - 1)], rec.clip_inputs[min(k, made - 1)]
        assert torch.equal(to_pixels(y_video[:, 0]), tensors[p + "reference"]), f"window {k}: reference frame"
        assert torch.all(y_video[:, 1:] == 0), f"window {k}: y's video is the reference then zero frames"
        assert torch.equal(to_pixels(clip_input), tensors[p + "clip_input"]), f"window {k}: CLIP input"
        torch.testing.assert_close(rec.ys[idx][:, :2], tensors[p + "y_head"], atol=1e-5, rtol=0)
        y = rec.ys[idx].double()
        assert [float(y.sum()), float(y.abs().sum())] == pytest.approx(m["y_sums"][k], rel=1e-5, abs=1e-3)
        motion = tensors[p + "motion_latents"]
        torch.testing.assert_close(rec.latents[idx][:, : motion.shape[1]], motion, atol=2e-4, rtol=0)
        end = starts[k + 1] if k + 1 < len(starts) else len(calls)
        for j in range(idx, end):  # written clean before every call of the window
            torch.testing.assert_close(rec.latents[j][:, : motion.shape[1]], motion, atol=2e-4, rtol=0)
        torch.testing.assert_close(calls[idx]["window_means"], tensors[p + "window_means"], atol=2e-5, rtol=1e-4)
        if p + "masks" in tensors:
            assert torch.equal(calls[idx]["masks"], tensors[p + "masks"]), f"window {k}: person masks"
    assert m["motion_latent_frames"] == [1, 3, 3]

    # the video, trimmed to the audio
    assert frames.shape[1] == m["frames"] == job.features.shape[1]
    torch.testing.assert_close(frames.mean(dim=(2, 3)).T, tensors[f"{prefix}video_frame_means"], atol=1e-4, rtol=0)
    torch.testing.assert_close(frames[:, :, 1::4, 1::4], tensors[f"{prefix}video_subsampled"], atol=2e-4, rtol=0)
