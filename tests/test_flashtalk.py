"""SoulX-FlashTalk's loop on the shared pipeline (``variants.FLASHTALK_LOOP``): its grid and sampler, its window plan,
its streaming audio cache, its colour correction, the option rules, and whole runs with stand-in networks
(``pipeline_stubs.py``). Parity with the official code: ``test_flashtalk_pipeline_parity.py``; the real layout and
tiny weights: ``test_flashtalk_weights.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline_stubs as stubs
from multitalk_serve.engine.errors import AudioError, InputError, SpeakerCountError
from multitalk_serve.engine.pipeline.audio import Wav2Vec2Features, cached_window_features, loudness_normalize
from multitalk_serve.engine.pipeline.color import match_colors, match_colors_flashtalk
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline, plan_clips
from multitalk_serve.engine.pipeline.sampling import flashtalk_timesteps, x0_renoise_step
from multitalk_serve.engine.pipeline.variants import FLASHTALK_LOOP, adapter_for, loop_for
from multitalk_serve.tiny import WAV2VEC_DIR

SIZE = (48, 32)  # height, width: small frames for the stand-in runs


# --- grid and sampler ---------------------------------------------------------------------------------------------
def test_timesteps_are_flashtalks_grid_shifted():
    def shift(t: float, s: float = 5.0) -> float:
        u = t / 1000
        return 1000 * s * u / (1 + (s - 1) * u)

    four = flashtalk_timesteps(4, 5.0)
    assert four.dtype == torch.float32
    assert four.tolist() == pytest.approx([shift(t) for t in (1000, 750, 500, 250, 0)], abs=1e-3)
    assert four[0] == 1000 and four[-1] == 0
    assert flashtalk_timesteps(2, 5.0).tolist() == pytest.approx([1000, shift(500), 0], abs=1e-3)
    three = flashtalk_timesteps(3, 5.0).tolist()  # other counts: the linspace grid
    assert three == pytest.approx([1000, shift(500.5), shift(1), 0], abs=1e-3)


def test_x0_renoise_step_predicts_the_clean_latent_and_renoises_it():
    gen = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    t = torch.tensor(800.0)
    latent = (1 - 0.8) * clean + 0.8 * noise
    velocity = noise - clean  # what a perfect flow model predicts
    fresh = torch.randn(4, 3, generator=gen)
    out = x0_renoise_step(latent, velocity, t, torch.tensor(300.0), fresh)
    torch.testing.assert_close(out, 0.7 * clean + 0.3 * fresh)
    torch.testing.assert_close(x0_renoise_step(latent, velocity, t, torch.tensor(0.0), fresh), clean)


# --- the window plan ---------------------------------------------------------------------------------------------
def test_every_window_hides_its_first_five_frames_and_adds_28():
    clips, total = plan_clips(100, "streaming", 33, 5, lead_in=True)
    assert total == 100 and len(clips) == math.ceil(100 / 28) == 4
    assert [(c.start, c.end, c.keep_from) for c in clips] == [(-5, 28, 5), (23, 56, 5), (51, 84, 5), (79, 112, 5)]
    assert not any(c.mirror_audio for c in clips)
    clips, total = plan_clips(56, "streaming", 33, 5, lead_in=True)  # exactly two windows' worth
    assert (len(clips), total) == (2, 56)
    clips, total = plan_clips(100, "clip", 33, 5, lead_in=True)
    assert (len(clips), total) == (1, 28)
    clips, total = plan_clips(10, "clip", 33, 5, lead_in=True)
    assert (len(clips), total) == (1, 10)


# --- the audio cache ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audio_encoder(tiny_root):
    return Wav2Vec2Features.from_pretrained(tiny_root / WAV2VEC_DIR)


def test_cached_window_features_read_the_last_eight_seconds(audio_encoder):
    wave = stubs.speech_like(3.0, seed=5)  # 75 frames: windows end at frames 28, 56, 84 (the last past the end)
    for end in (28, 56, 84):
        got = cached_window_features(audio_encoder, wave, end, 33)
        # the official buffer: 8 s of zeros, then the audio up to the window's end (silence past the track's end)
        buffer = np.zeros(8 * 16000)
        piece = wave[: end * 640]
        buffer[-end * 640 :][: len(piece)] = piece
        whole = audio_encoder(loudness_normalize(buffer), frames=200)
        centre = (torch.arange(167, 200)[:, None] + torch.arange(-2, 3)[None]).clamp(0, 199)
        assert got.shape == (1, 33, 5, whole.shape[1], whole.shape[2])
        torch.testing.assert_close(got[0], whole[centre])
    # the last frames' right neighbours are clamped inside the cache: a window never sees later audio
    got = cached_window_features(audio_encoder, wave, 28, 33)
    torch.testing.assert_close(got[0, -1, 3], got[0, -1, 2])
    with pytest.raises(AudioError, match="does not fit"):
        cached_window_features(audio_encoder, wave, 28, 201)


def test_the_cache_only_depends_on_audio_before_the_window_end(audio_encoder):
    wave = stubs.speech_like(3.0, seed=6)
    changed = wave.copy()
    changed[28 * 640 :] = stubs.speech_like(3.0, seed=7)[28 * 640 :]
    torch.testing.assert_close(
        cached_window_features(audio_encoder, wave, 28, 33), cached_window_features(audio_encoder, changed, 28, 33)
    )
    assert not torch.equal(
        cached_window_features(audio_encoder, wave, 56, 33), cached_window_features(audio_encoder, changed, 56, 33)
    )


# --- colour ------------------------------------------------------------------------------------------------------
def test_flashtalk_colour_correction_matches_the_reference_statistics():
    gen = torch.Generator().manual_seed(3)
    reference = torch.rand(3, 24, 16, generator=gen) * 1.6 - 0.8
    frames = (torch.rand(3, 5, 24, 16, generator=gen) * 0.8 - 0.6).clamp(-1, 1)
    out = match_colors_flashtalk(frames, reference, 1.0)
    assert out.shape == frames.shape and out.dtype == frames.dtype
    # close to the scikit-image recipe (its constants differ in the 5th digit; no clipping of the input)
    torch.testing.assert_close(out, match_colors(frames, reference, 1.0), atol=2e-3, rtol=0)
    half = match_colors_flashtalk(frames, reference, 0.5)
    torch.testing.assert_close(half, (frames + out) / 2, atol=1e-5, rtol=0)
    assert match_colors_flashtalk(frames, reference, 0.0) is frames


# --- the option rules --------------------------------------------------------------------------------------------
def test_flashtalk_option_rules():
    assert loop_for("flashtalk") is FLASHTALK_LOOP and not FLASHTALK_LOOP.guided
    assert adapter_for("flashtalk", 1) == "flashtalk"
    with pytest.raises(SpeakerCountError, match="one speaker"):
        adapter_for("flashtalk", 2)
    GenerateOptions.from_preset("realtime").validate()
    with pytest.raises(InputError, match="text_scale"):
        GenerateOptions(model="flashtalk").validate()  # the quality defaults: guidance 5 / 4
    with pytest.raises(InputError, match="text_scale"):
        GenerateOptions.from_preset("quality", model="flashtalk").validate()
    for field, value in [("use_apg", True), ("cache_threshold", 0.2), ("speed_lora", True), ("resolution", "720p")]:
        with pytest.raises(InputError, match=field):
            GenerateOptions.from_preset("realtime", **{field: value}).validate()
    with pytest.raises(InputError, match="at most 200"):
        GenerateOptions.from_preset("realtime", frames_per_clip=205).validate()


# --- whole runs with stand-in networks ---------------------------------------------------------------------------
class Calls:
    def __init__(self):
        self.timesteps: list[float] = []
        self.audio: list[torch.Tensor] = []
        self.encoded: list[int] = []


def stub_pipeline(audio_encoder, calls: Calls) -> MultiTalkPipeline:
    def transformer(hidden, timestep, context, clip, audio, masks):
        calls.timesteps.append(float(timestep))
        calls.audio.append(audio.clone())
        assert masks is None
        latent, y = hidden[0, :16], hidden[0, 16:]
        return stubs.velocity(latent, y, timestep, context[0], clip, audio, masks)[None]

    class VAE:
        @staticmethod
        def encode(video, progress=None):
            calls.encoded.append(video.shape[1])
            return stubs.vae_encode(video)

        decode = staticmethod(stubs.vae_decode)

    return MultiTalkPipeline(
        transformer=transformer,
        vae=VAE(),
        text_encoder=lambda prompts: [stubs.text_features(p) for p in prompts],
        image_encoder=stubs.clip_features,
        audio_encoder=audio_encoder,
        dtype=torch.float32,
        adapter="flashtalk",
    )


def test_a_realtime_run_is_one_forward_a_step_and_as_long_as_the_audio(audio_encoder):
    calls = Calls()
    pipe = stub_pipeline(audio_encoder, calls)
    wave = stubs.speech_like(2.5, seed=9)  # 62 frames: 3 windows of 28 new frames, the last one cut to 6
    options = GenerateOptions.from_preset("realtime", size=SIZE, seed=4)
    job = pipe.prepare(Image.fromarray(stubs.scenario_image()), [wave], "a person talks", options=options)
    assert job.features is None and len(job.tracks) == 1
    plan = pipe._plan(job, 0)
    assert (plan.passes, plan.steps, plan.frames_per_clip, plan.windows, plan.model) == (1, 4, 33, 3, "flashtalk")
    chunks = list(pipe.frames(job))
    assert [c.shape[1] for c in chunks] == [28, 28, 6]
    assert all(c.shape[2:] == SIZE for c in chunks)
    grid = flashtalk_timesteps(4, 5.0).tolist()[:-1]
    assert calls.timesteps == pytest.approx(grid * 3)  # one forward per step, no guidance passes
    assert all(a.shape == (1, 33, 5, audio_encoder.layers, audio_encoder.channels) for a in calls.audio)
    # the condition (y) is encoded once for the image; motion: the reference (1 frame), then 5 frames a window
    assert calls.encoded == [33, 1, 5, 5]
    # the window's audio: its own cache, ending at the window's last frame
    torch.testing.assert_close(calls.audio[4], cached_window_features(audio_encoder, job.tracks[0], 56, 33))


def test_a_realtime_run_is_deterministic_and_two_speakers_or_a_video_are_refused(audio_encoder, tmp_path):
    image = Image.fromarray(stubs.scenario_image())
    wave = stubs.speech_like(1.5, seed=2)
    options = GenerateOptions.from_preset("realtime", size=SIZE, seed=11)

    def run():
        pipe = stub_pipeline(audio_encoder, Calls())
        return torch.cat(list(pipe.frames(pipe.prepare(image, [wave], "hi", options=options))), dim=1)

    first, second = run(), run()
    assert first.shape[1] == int(1.5 * 25) and torch.equal(first, second)
    pipe = stub_pipeline(audio_encoder, Calls())
    with pytest.raises(SpeakerCountError, match="one speaker"):
        pipe.prepare(image, [wave, wave], "hi", options=options)
    video = tmp_path / "v.mp4"
    stubs.write_source_video(video)
    with pytest.raises(InputError, match="animates an image"):
        pipe.prepare(None, [wave], "hi", video=video, options=options)
