"""Audio front end: every common input decodes to 16 kHz mono, loudness, speakers, windows, mirror padding."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import torch

from media import FORMATS, tone, write_audio, write_video
from multitalk_serve.engine.pipeline.audio import (
    AudioError,
    Wav2Vec2Features,
    arrange_speakers,
    decode_audio,
    loudness_normalize,
    mirror_pad,
    window_features,
)
from multitalk_serve.tiny import WAV2VEC_DIR


@pytest.mark.parametrize("suffix", list(FORMATS))
def test_audio_files_decode_to_16k_mono(tmp_path, suffix):
    path = write_audio(tmp_path / f"speech{suffix}", 2.0)
    wave = decode_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / 16000 - 2.0) < 0.08  # codec priming/padding at most a few frames
    assert 0.1 < np.abs(wave).max() < 1.0
    assert np.array_equal(decode_audio(path.read_bytes(), "bytes"), wave)  # bytes decode like the file


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".webm"])
def test_audio_track_of_a_video(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", 1.0, tone(1.0, 48000))
    wave = decode_audio(path)
    assert abs(len(wave) / 16000 - 1.0) < 0.08 and np.abs(wave).max() > 0.1


def test_video_without_audio_is_a_clear_error(tmp_path):
    path = write_video(tmp_path / "silent.mp4", 1.0)
    with pytest.raises(AudioError, match="has no audio track"):
        decode_audio(path, "audio of speaker 1")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "cannot open"), (b"this is not a wav file at all" * 10, "cannot open"), (b"RIFF\x00\x00", "cannot")],
)
def test_unreadable_audio(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message):
        decode_audio(path, "audio of speaker 2")


def test_loudness_normalised_to_minus_23_lufs():
    wave = tone(3.0, 16000, amp=0.05)
    out = loudness_normalize(wave)
    meter = pyloudnorm.Meter(16000)
    assert meter.integrated_loudness(out.astype(np.float64)) == pytest.approx(-23.0, abs=0.05)


def test_loudness_skips_silence_and_too_short():
    assert np.array_equal(loudness_normalize(np.zeros(32000, np.float32)), np.zeros(32000, np.float32))
    short = tone(0.2, 16000)
    assert np.array_equal(loudness_normalize(short), short)


def test_speaker_arrangements():
    a, b = np.ones(3, np.float32), 2 * np.ones(5, np.float32)
    add = arrange_speakers([a, b], "add")
    assert [t.tolist() for t in add.tracks] == [[1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 2, 2, 2, 2, 2]]
    assert add.soundtrack.tolist() == [1, 1, 1, 2, 2, 2, 2, 2]
    para = arrange_speakers([a, b], "para")
    assert [t.tolist() for t in para.tracks] == [[1, 1, 1, 0, 0], [2, 2, 2, 2, 2]]
    silent = arrange_speakers([None, b], "para")
    assert silent.tracks[0].tolist() == [0] * 5
    assert arrange_speakers([a, None], "add").tracks[1].tolist() == [0, 0, 0]
    with pytest.raises(AudioError, match="1 or 2 speakers, got 3"):
        arrange_speakers([a, a, a])
    with pytest.raises(AudioError, match="every speaker is silent"):
        arrange_speakers([None, None])
    with pytest.raises(AudioError, match="audio_type must be 'add' or 'para'"):
        arrange_speakers([a, b], "both")


def test_windows_clamp_at_both_ends():
    feats = torch.arange(6.0).view(1, 6, 1, 1)
    w = window_features(feats, start=0, frames=6)[0, :, :, 0, 0]
    assert w[0].tolist() == [0, 0, 0, 1, 2] and w[5].tolist() == [3, 4, 5, 5, 5]


def test_mirror_pad_is_the_official_flip():
    feats = torch.arange(10.0).view(1, 10)
    miss = 4  # the official appends flip(emb[-miss:])
    official = torch.cat([feats, torch.flip(feats[:, -miss:], dims=[1])], dim=1)
    assert torch.equal(mirror_pad(feats, 14), official)
    assert mirror_pad(torch.arange(3.0).view(1, 3), 9).tolist() == [[0, 1, 2, 2, 1, 0, 0, 1, 2]]


def test_wav2vec2_eager_and_sdpa_agree(tiny_root):
    wave = tone(2.0, 16000)
    eager = Wav2Vec2Features.from_pretrained(tiny_root / WAV2VEC_DIR, attn_implementation="eager")(wave)
    sdpa = Wav2Vec2Features.from_pretrained(tiny_root / WAV2VEC_DIR, attn_implementation="sdpa")(wave)
    assert eager.shape == (50, 12, 64)  # 2 s at 25 fps, 12 hidden layers, width 64
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=1e-5)
