"""Kokoro-82M with seeded random weights, in the published layout of ``hexgrad/Kokoro-82M``::

    ROOT/Kokoro-82M/config.json          the published keys (vocab, plbert, istftnet, ...), tiny or full widths
    ROOT/Kokoro-82M/kokoro-v1_0.pth      ``torch.save`` of {bert, bert_encoder, predictor, text_encoder, decoder}:
                                         one state dict per ``KModel`` sub-module, keys prefixed ``module.``
    ROOT/Kokoro-82M/voices/af_heart.pt   voice tensors [510, 1, 256], as published
    ROOT/Kokoro-82M/voices/am_adam.pt

It loads through the same code as the real one (``engine.pipeline.speech``: the ``kokoro`` package's ``KModel``).
Kokoro's decoder has fixed 1024- and 512-wide layers whatever the config says, so even the tiny model holds about
45 M parameters; to keep the files small every large tensor is stored as a view of a short seeded random vector
(``w[i, j, k] = v[i + j + k]``, a Hankel arrangement that ``torch.save`` writes as the vector alone). Loading copies
it into ordinary parameters. The duration head is biased so that a phoneme lasts about as long as a real one
(4 frames of 25 ms), so tiny speech has realistic lengths; the sound itself is noise.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from .engine.pipeline.speech import KOKORO_DIR, kokoro_modules

TINY_VOICES = ("af_heart", "am_adam")

# The published config.json's values (hexgrad/Kokoro-82M), except the vocabulary, listed below.
FULL_KOKORO = {
    "istftnet": {
        "upsample_kernel_sizes": [20, 12],
        "upsample_rates": [10, 6],
        "gen_istft_hop_size": 5,
        "gen_istft_n_fft": 20,
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "resblock_kernel_sizes": [3, 7, 11],
        "upsample_initial_channel": 512,
    },
    "dim_in": 64,
    "dropout": 0.2,
    "hidden_dim": 512,
    "max_conv_dim": 512,
    "max_dur": 50,
    "multispeaker": True,
    "n_layer": 3,
    "n_mels": 80,
    "n_token": 178,
    "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 2048,
        "max_position_embeddings": 512,
        "num_hidden_layers": 12,
        "dropout": 0.1,
    },
}
# Tiny widths wherever Kokoro's code reads them from the config (the decoder's 1024/512 widths are fixed in its code,
# and hidden_dim, style_dim and upsample_initial_channel must keep their published values to match them). Same
# sample timing: 600 samples (25 ms) a duration frame.
TINY_KOKORO = {
    **FULL_KOKORO,
    # fewer, cheaper upsampling stages and a longer inverse-STFT hop: the same 300 samples an F0 frame (12.5 ms),
    # at a fifteenth of the generator's cost
    "istftnet": {
        "upsample_kernel_sizes": [4, 4],
        "upsample_rates": [2, 2],
        "gen_istft_hop_size": 75,
        "gen_istft_n_fft": 300,
        "resblock_dilation_sizes": [[1, 3, 5]],
        "resblock_kernel_sizes": [3],
        "upsample_initial_channel": 512,
    },
    "hidden_dim": 512,  # fixed by the decoder code too (its 512-channel residual input)
    "max_conv_dim": 512,
    "n_layer": 1,
    "style_dim": 128,  # KModel slices the voice at 128 in its code: the published width
    "plbert": {
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "num_hidden_layers": 2,
        "embedding_size": 16,
        "dropout": 0.1,
    },
}
# Kokoro-82M's phoneme vocabulary (config.json "vocab": symbol -> token id), symbols in id order.
_VOCAB_SYMBOLS = (
    ';:,.!?—…"()“” \u0303ʣʥʦʨᵝ\uab67AIOQSTWYᵊ'
    "abcdefhijklmnopqrstuvwxyzɑɐɒæβɔɕçɖðʤəɚɛɜɟɡɥɨɪʝɯɰŋɳɲɴøɸθœɹɾɻʁɽʂʃʈʧʊʋʌɣɤχʎʒʔˈˌːʰʲ↓→↗↘ᵻ"
)
_VOCAB_IDS = (
    *range(1, 7),
    9,
    10,
    *range(11, 26),
    31,
    33,
    35,
    36,
    39,
    41,
    42,
    *range(43, 49),
    *range(50, 73),
    75,
    76,
    77,
    78,
    80,
    81,
    82,
    83,
    85,
    86,
    87,
    90,
    92,
    99,
    101,
    102,
    103,
    *range(110, 117),
    *range(118, 121),
    123,
    *range(125, 127),
    *range(128, 134),
    135,
    136,
    *range(138, 141),
    142,
    143,
    147,
    148,
    156,
    157,
    158,
    162,
    164,
    169,
    *range(171, 174),
    177,
)


def kokoro_vocab() -> dict[str, int]:
    """The published phoneme -> id table."""
    symbols = _VOCAB_SYMBOLS
    if len(symbols) != len(_VOCAB_IDS):
        raise AssertionError(f"vocab table: {len(symbols)} symbols, {len(_VOCAB_IDS)} ids")
    return dict(zip(symbols, _VOCAB_IDS, strict=True))


def kokoro_config(full: bool = False) -> dict:
    return {**(FULL_KOKORO if full else TINY_KOKORO), "vocab": kokoro_vocab()}


def _seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"kokoro:{seed}:{name}".encode()).digest()[:4], "little")


def _random(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded values for one tensor; large ones as a Hankel view of a short vector (small on disk)."""
    rng = np.random.RandomState(_seed(seed, name))
    leaf = name.rsplit(".", 1)[-1]
    hankel = len(shape) > 1 and math.prod(shape) > 4096
    values = torch.from_numpy(rng.standard_normal(sum(shape) - len(shape) + 1 if hankel else shape).astype(np.float32))
    if leaf == "weight_g":  # weight-norm magnitudes
        values = values.abs() * 0.1 + 1.0
    elif leaf.startswith("bias"):
        values = values * 0.02
    elif len(shape) == 1:  # norm weights, LSTM biases
        values = 1.0 + 0.1 * values if "norm" in name.lower() else values * 0.02
    else:
        values = values / math.sqrt(math.prod(shape[1:]))
    return values.as_strided(shape, (1,) * len(shape)) if hankel else values


def kokoro_state(config: dict, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """{sub-module: {``module.<key>``: tensor}} as ``kokoro-v1_0.pth`` holds it, seeded random values."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    with torch.device("meta"):  # shapes only: nothing allocated
        modules = kokoro_modules(config)
    for part, module in modules.items():
        state = {}
        for key, tensor in module.state_dict().items():
            if not tensor.dtype.is_floating_point:
                raise ValueError(f"{part}.{key}: a {tensor.dtype} entry this generator does not know how to fill")
            state[f"module.{key}"] = _random(f"{part}.{key}", tuple(tensor.shape), seed)
        out[part] = state
    # Durations about as long as real ones: sigmoid(-2.4) * max_dur ~ 4 frames (100 ms) a phoneme.
    head = out["predictor"]
    w, b = "module.duration_proj.linear_layer.weight", "module.duration_proj.linear_layer.bias"
    head[w] = head[w].contiguous() * 0.01
    head[b] = torch.full_like(head[b], -2.4) + head[b]
    # The generator's last convolution gives log-magnitudes (exponentiated): keep them near 0 so the samples stay
    # within [-1, 1] instead of overflowing.
    post = out["decoder"]
    for key in [k for k in post if k.startswith("module.generator.conv_post.weight_g")]:
        post[key] = post[key].contiguous() * 0.001
    return out


def voice_tensor(name: str, style_dim: int, seed: int = 0) -> torch.Tensor:
    """A voice pack [510, 1, 2 * style_dim] (one style vector a phoneme count), as ``voices/<name>.pt``."""
    rng = np.random.RandomState(_seed(seed, f"voice:{name}"))
    base = rng.standard_normal((1, 1, 2 * style_dim)).astype(np.float32) * 0.3
    drift = rng.standard_normal((510, 1, 2 * style_dim)).astype(np.float32) * 0.02
    return torch.from_numpy(base + drift)


def write_kokoro_layout(root: str | Path, seed: int = 0, full: bool = False, voices=TINY_VOICES) -> Path:
    """``ROOT/Kokoro-82M`` (config.json, kokoro-v1_0.pth, voices/*.pt); ``full``: the published widths."""
    config = kokoro_config(full)
    out = Path(root) / KOKORO_DIR
    (out / "voices").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    state = kokoro_state(config, seed)
    torch.save(state, out / "kokoro-v1_0.pth")
    for name in voices:
        torch.save(voice_tensor(name, config["style_dim"], seed), out / "voices" / f"{name}.pt")
    return out
