"""Audio features for long audio (issue 14): the wav2vec2 CNN in chunks, the last clip's mirror-padded windows
gathered without copying the track."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from multitalk_serve.engine.pipeline import audio
from multitalk_serve.engine.pipeline.audio import Wav2Vec2Features, cnn_features, mirror_pad, window_features
from multitalk_serve.tiny import WAV2VEC_DIR


def speech(seconds: float, offset: float = 0.05) -> np.ndarray:
    """A tone under a 3 Hz envelope, noise and a DC offset (so the group norm's means are not zero)."""
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.RandomState(0)
    wave = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)
    return (wave + offset).astype(np.float32)


@pytest.mark.parametrize("norm", ["group", "layer"])
@pytest.mark.parametrize("samples", [400, 719, 720, 16000 * 3 + 123])
def test_cnn_in_chunks_equals_the_whole_track(norm, samples):
    """Every chunk size, the chunk boundaries inside any layer's frames, both norms, down to one output frame."""
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        conv_dim=(16,) * 7,
        feat_extract_norm=norm,
        conv_bias=norm == "layer",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
    )
    model = Wav2Vec2Model(config).eval()
    with torch.no_grad():
        for p in model.feature_extractor.parameters():  # non-trivial affine parameters of the norms
            p.add_(0.1 * torch.randn_like(p))
        values = torch.from_numpy(speech(samples / 16000)[None])
        whole = model.feature_extractor(values)
        for chunk in (1, 2, 7, 64, 10_000):
            got, count = cnn_features(model, values, chunk=chunk)
            assert got.shape == whole.shape and count == -(-whole.shape[-1] // chunk)
            torch.testing.assert_close(got, whole, atol=2e-6, rtol=1e-5)


def test_long_audio_features_are_chunked_and_equal(tiny_root, monkeypatch):
    """Past WHOLE_TRACK_SECONDS the CNN runs in chunks; the features equal the whole-track ones within float
    rounding (and at or under it nothing changes: the official lengths take the whole-track path)."""
    encoder = Wav2Vec2Features.from_pretrained(tiny_root / WAV2VEC_DIR)
    wave = speech(7.3)
    whole = encoder(wave)
    assert encoder.last_chunks == 0
    monkeypatch.setattr(audio, "WHOLE_TRACK_SECONDS", 5.0)
    monkeypatch.setattr(audio, "CNN_CHUNK_FRAMES", 50)  # 1 s a chunk
    chunked = encoder(wave)
    assert encoder.last_chunks == 8  # 364 CNN frames at 50 Hz
    assert chunked.shape == whole.shape == (182, 12, 64)
    torch.testing.assert_close(chunked, whole, atol=2e-5, rtol=1e-5)
    assert not hasattr(encoder.model.feature_extractor, "forward") or "forward" not in vars(
        encoder.model.feature_extractor
    )
    assert torch.equal(encoder(speech(4.0)), encoder(speech(4.0)))  # short audio after a long one: untouched


def test_an_unknown_cnn_is_not_chunked(tiny_root, monkeypatch):
    encoder = Wav2Vec2Features.from_pretrained(tiny_root / WAV2VEC_DIR)
    encoder.model.feature_extractor.conv_layers[1].conv.padding = (1,)  # frames would not line up: whole track
    monkeypatch.setattr(audio, "WHOLE_TRACK_SECONDS", 1.0)
    encoder(speech(2.0))
    assert encoder.last_chunks == 0


@pytest.mark.parametrize("have", [1, 3, 40])
def test_mirrored_windows_without_the_padded_copy(have):
    """``window_features(..., length=n)`` gathers exactly what ``window_features(mirror_pad(f, n), ...)`` does."""
    features = torch.randn(2, have, 3, 4)
    for length in (1, have, have + 1, have + 3, 3 * have + 5):
        for start in range(0, max(length - 4, 1), max(1, length // 7)):
            for frames in (1, 5, 9):
                expected = window_features(mirror_pad(features, length), start, frames)
                assert torch.equal(window_features(features, start, frames, length=length), expected)
