"""The MultiTalk transformer's pieces, against direct (materialising) computations and diffusers' machinery."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

from multitalk_serve.engine.models import attention as attn_mod
from multitalk_serve.engine.models.attention import apply_rope_1d, label_positions, reference_attention_map
from multitalk_serve.engine.models.transformer import (
    MultiTalkTransformer3DModel,
    MultiTalkTransformerBlock,
    SpeakerCountError,
)
from multitalk_serve.forward_check import random_inputs
from multitalk_serve.tiny import TINY_DIMS, _randomize


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MultiTalkTransformer3DModel(**TINY_DIMS.model_kwargs()).eval()
    _randomize(m, seed=5)
    return m


def inputs_for(model, speakers, frames=9, height=64, width=96, seed=0):
    return random_inputs(model, speakers, frames, height, width, torch.float32, "cpu", seed=seed)


def test_reference_map_equals_materialised_softmax():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 30, 4, 16, generator=g)
    k = torch.randn(2, 10, 4, 16, generator=g)
    masks = (torch.rand(3, 10, generator=g) > 0.5).float()
    masks[2] = 0  # an empty region must not produce NaN
    scores = torch.einsum("bnhd,bshd->bhns", q, k) / math.sqrt(16)
    probs = scores.softmax(-1)  # [B, H, N, S]
    expected = torch.einsum("bhns,cs->bhcn", probs, masks).mean(1) / masks.sum(-1).clamp(min=1)[None, :, None]
    got = reference_attention_map(q, k, masks)
    assert got.shape == (2, 3, 30)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_label_positions_follow_the_official_rule():
    ref_map = torch.tensor([[[0.1, 0.9, 0.2, 0.5], [0.8, 0.1, 0.3, 0.2], [0.0, 0.0, 0.9, 0.1]]])
    pos = label_positions(ref_map)[0]
    norm0 = (ref_map[0, 0] - 0.1) / (0.9 - 0.1 + 1e-8)
    norm1 = (ref_map[0, 1] - 0.1) / (0.8 - 0.1 + 1e-8)
    expected = torch.stack([20 + 4 * norm1[0], 4 * norm0[1], torch.tensor(12.0), 4 * norm0[3]])
    torch.testing.assert_close(pos, expected)


def test_rope_1d_rotates_adjacent_pairs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 5, 2, 8, generator=g)
    pos = torch.tensor([[0.0, 1.5, 2.0, 22.0, 12.0]])
    out = apply_rope_1d(x, pos)
    for i in range(4):
        theta = pos[0][:, None] * 10000 ** (-2 * i / 8)
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        torch.testing.assert_close(out[..., 2 * i], a * theta.cos() - b * theta.sin())
        torch.testing.assert_close(out[..., 2 * i + 1], b * theta.cos() + a * theta.sin())
    torch.testing.assert_close(apply_rope_1d(x, torch.zeros(1, 5)), x)


def test_more_than_two_speakers_is_a_clear_error(model):
    inputs = inputs_for(model, 2)
    inputs["audio"] = torch.cat([inputs["audio"], inputs["audio"][:1]])
    with pytest.raises(SpeakerCountError, match="1 or 2 speakers, got 3"):
        model(**inputs)


def test_two_speakers_need_masks(model):
    inputs = inputs_for(model, 2)
    inputs["ref_masks"] = None
    with pytest.raises(ValueError, match="ref_masks"):
        model(**inputs)


def test_audio_length_must_match_latents(model):
    inputs = inputs_for(model, 1)
    inputs["audio"] = inputs["audio"][:, :5]
    with pytest.raises(ValueError, match="latent frames"):
        model(**inputs)


def test_one_speaker_never_computes_the_reference_map(model, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("reference map computed for one speaker")

    monkeypatch.setattr(attn_mod, "reference_attention_map", boom)
    with torch.no_grad():
        model(**inputs_for(model, 1))
    with pytest.raises(AssertionError, match="reference map computed"), torch.no_grad():
        model(**inputs_for(model, 2))


def test_short_prompt_is_zero_padded_to_512(model):
    inputs = inputs_for(model, 1)
    inputs["encoder_hidden_states"][:, 40:] = 0
    with torch.no_grad():
        full = model(**inputs).sample
        short = model(**{**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"][:, :40]}).sample
    torch.testing.assert_close(full, short)
    with pytest.raises(ValueError, match="at most 512 text tokens"):
        model(**{**inputs, "encoder_hidden_states": torch.zeros(1, 513, TINY_DIMS.text_dim)})


def test_batch_shares_the_audio(model):
    """Batching guidance passes that share the audio (cond, drop-text) equals running them one by one."""
    a, b = inputs_for(model, 2, seed=1), inputs_for(model, 2, seed=2)
    batched = dict(a)
    for key in ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_image"):
        batched[key] = torch.cat([a[key], b[key]])
    batched["timestep"] = torch.cat([a["timestep"], a["timestep"]])
    b = {**b, "audio": a["audio"], "ref_masks": a["ref_masks"], "timestep": a["timestep"]}
    with torch.no_grad():
        together = model(**batched).sample
        one, two = model(**a).sample, model(**b).sample
    torch.testing.assert_close(together, torch.cat([one, two]), atol=1e-5, rtol=1e-5)


def test_audio_windows_reach_the_right_latent_frames(model):
    """Latent frame k >= 1 covers video frames 4k-3 .. 4k and takes 8 window entries: the first frame's offsets
    -2..0, the centre of the two middle frames, the last frame's offsets 0..+2 (the official selection)."""
    inputs = inputs_for(model, 1, frames=17)
    audio = inputs["audio"]
    first, later = model.audio_proj.split_windows(audio)
    assert first.shape[1:3] == (1, 5) and later.shape[1:3] == (4, 8)
    # the 8 entries of latent frame k are: window[4k-3][0..2], window[4k-2][2], window[4k-1][2], window[4k][2..4]
    k = 2
    expected = torch.cat(
        [audio[:, 4 * k - 3, :3], audio[:, 4 * k - 2, 2:3], audio[:, 4 * k - 1, 2:3], audio[:, 4 * k, 2:]], dim=1
    )
    torch.testing.assert_close(later[:, k - 1], expected)


def test_first_block_cache_hooks_run_on_our_blocks(model):
    m = MultiTalkTransformer3DModel(**TINY_DIMS.model_kwargs()).eval()
    m.load_state_dict(model.state_dict())
    inputs = inputs_for(m, 2)
    with torch.no_grad():
        plain = m(**inputs).sample
        m.enable_cache(FirstBlockCacheConfig(threshold=0.0))  # threshold 0: never skips, must equal plain
        with m.cache_context("cond"):
            cached = m(**inputs).sample
        m.disable_cache()
    torch.testing.assert_close(cached, plain)


def test_compile_repeated_blocks_targets_our_block(model):
    m = MultiTalkTransformer3DModel(**TINY_DIMS.model_kwargs()).eval()
    m.load_state_dict(model.state_dict())
    inputs = inputs_for(m, 2)
    with torch.no_grad():
        expected = m(**inputs).sample
        m.compile_repeated_blocks(backend="eager")
        compiled = [
            b for b in m.blocks if isinstance(b, MultiTalkTransformerBlock) and hasattr(b, "_compiled_call_impl")
        ]
        assert len(compiled) == len(m.blocks)
        torch.testing.assert_close(m(**inputs).sample, expected)


def test_attention_backend_reaches_every_processor(model):
    m = MultiTalkTransformer3DModel(**TINY_DIMS.model_kwargs())
    m.set_attention_backend("native")
    processors = [b.attn1.processor for b in m.blocks] + [b.audio_cross_attn.processor for b in m.blocks]
    assert all(p._attention_backend == "native" for p in processors)
