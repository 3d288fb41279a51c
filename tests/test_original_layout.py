"""The original Wan2.1 encoder checkpoints (``models_t5_*.pth``, ``models_clip_*.pth``, ``Wan2.1_VAE.pth``) load into
the library models so that they compute what the official Wan modules compute.

Fixtures (``tests/fixtures/official/README.md``): ``official_encoders.safetensors`` holds the official ``T5Encoder``,
``VisionTransformer`` and ``WanVAE_`` run on our tiny ``.pth`` files; ``original_encoder_shapes.json`` the official
full-size state-dict keys and shapes, against which the name mapping and the architecture reading are checked without
any weights.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from multitalk_serve.engine.errors import CheckpointError
from multitalk_serve.engine.loading import original_encoders as orig
from multitalk_serve.engine.loading.encoders import (
    ComponentSource,
    build,
    check,
    image_encoder_source,
    text_encoder_source,
    vae_source,
)
from multitalk_serve.engine.loading.weights import TensorRef, read_pth_header
from multitalk_serve.engine.models.encoders import ClipImageEncoder, WanVideoVAE
from multitalk_serve.tiny import ORIGINAL_DIR, fingerprint

FIXTURES = Path(__file__).parent / "fixtures" / "official"
FP32_TOLERANCE = 5e-5  # measured: T5 4.8e-6, CLIP 0 (same kernels), VAE 1.2e-7 (encode) / 3.2e-6 (decode)
BF16_MAX, BF16_RMS = 0.5, 0.06  # measured: 0.25 / 0.029; bf16 alone moves the official output by 0.27 / 0.036
FILES = {"t5": orig.T5_CHECKPOINT, "clip": orig.CLIP_CHECKPOINT, "vae": orig.VAE_CHECKPOINT}


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(FIXTURES / "official_encoders.safetensors", "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (not a dict)


@pytest.fixture(scope="module")
def ref(reference) -> dict[str, torch.Tensor]:
    return reference[0]


@pytest.fixture(scope="module")
def wan(tiny_root) -> Path:
    return tiny_root / ORIGINAL_DIR


def max_diff(ours: torch.Tensor, official: torch.Tensor) -> float:
    assert ours.shape == official.shape, (tuple(ours.shape), tuple(official.shape))
    return (ours.float() - official.float()).abs().max().item()


def rms(t: torch.Tensor) -> float:
    return t.float().pow(2).mean().sqrt().item()


@pytest.mark.parametrize("part", list(FILES))
def test_fixture_was_made_from_these_checkpoints(reference, wan, part):
    _, metadata = reference
    state = torch.load(wan / FILES[part], map_location="cpu", weights_only=True)
    assert fingerprint(state) == pytest.approx(float(metadata[f"fingerprint_{part}"]), rel=1e-9), (
        f"tiny {part} generation changed: regenerate the fixture (tests/fixtures/official/README.md)"
    )


# --- T5 ----------------------------------------------------------------------------------------------------------------
def run_t5(wan: Path, dtype: torch.dtype, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    model = build(text_encoder_source(wan / orig.T5_CHECKPOINT), dtype)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state.float()


def test_t5_matches_official_fp32(wan, ref):
    ids, mask, official = ref["t5_ids"], ref["t5_mask"], ref["t5_fp32"]
    ours = run_t5(wan, torch.float32, ids, mask)
    # padded positions are computed (keys masked, queries not) on both sides: every position is compared
    assert torch.isfinite(official).all() and torch.isfinite(ours).all()
    err = max_diff(ours, official)
    assert err <= FP32_TOLERANCE, f"T5 fp32: max |ours - official| = {err:.3g}"
    # the mask matters (the fixture's second prompt is padded): without it the output differs
    unmasked = run_t5(wan, torch.float32, ids, None)
    assert max_diff(unmasked[1, :-9], official[1, :-9]) > 1e-2


def test_t5_bf16_close_to_official_bf16(wan, ref):
    ours = run_t5(wan, torch.bfloat16, ref["t5_ids"], ref["t5_mask"])
    official, exact = ref["t5_bf16"], ref["t5_fp32"]
    err, err_rms = max_diff(ours, official), rms(ours - official)
    assert err <= BF16_MAX and err_rms <= BF16_RMS, f"T5 bf16: max {err:.3g}, rms {err_rms:.3g}"
    # ours in bf16 is no further from the fp32 result than the official code in bf16 is (with some slack)
    assert rms(ours - exact) <= 1.5 * rms(official - exact)


# --- CLIP ------------------------------------------------------------------------------------------------------------
def test_clip_hidden_states_match_official(wan, ref):
    model = build(image_encoder_source(wan / orig.CLIP_CHECKPOINT), torch.float32)
    with torch.no_grad():
        out = model(ref["clip_pixels"], output_hidden_states=True)
    penultimate = max_diff(out.hidden_states[-2], ref["clip_penultimate"])  # official visual(x, use_31_block=True)
    full = max_diff(out.last_hidden_state, ref["clip_full"])  # official visual(x): no post-norm either
    assert penultimate <= FP32_TOLERANCE and full <= FP32_TOLERANCE, (penultimate, full)


def test_clip_wrapper_matches_official_clip_model_visual(wan, ref):
    # squash to 224 x 224 (bicubic), [-1, 1] -> [0, 1], normalise, penultimate block: official CLIPModel.visual
    encoder = ClipImageEncoder.from_pretrained(wan / orig.CLIP_CHECKPOINT, dtype=torch.float32)
    err = max_diff(encoder(ref["clip_frame"]), ref["clip_frame_penultimate"])
    assert err <= FP32_TOLERANCE, f"CLIP wrapper: max |ours - official| = {err:.3g}"


# --- VAE -------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae(wan) -> WanVideoVAE:
    return WanVideoVAE.from_pretrained(wan / orig.VAE_CHECKPOINT, dtype=torch.float32)


def test_vae_latent_normalisation_is_official(vae, ref):
    assert torch.equal(vae.mean.flatten(), ref["vae_scale_mean"])
    assert max_diff(1.0 / vae.std.flatten(), ref["vae_scale_inv_std"]) <= 1e-7


def test_vae_encode_matches_official(vae, ref):
    err = max_diff(vae.encode(ref["vae_video"][0]), ref["vae_encoded"][0])
    assert err <= FP32_TOLERANCE, f"VAE encode: max |ours - official| = {err:.3g}"


def test_vae_decode_matches_official(vae, ref):
    official = ref["vae_decoded"][0]
    assert (official.abs() < 1).float().mean() > 0.95  # the clamp (both sides) leaves almost every value compared
    err = max_diff(vae.decode(ref["vae_latent"][0]), official.clamp(-1, 1))
    assert err <= FP32_TOLERANCE, f"VAE decode: max |ours - official| = {err:.3g}"


# --- full-size key sets, no weights ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_shapes() -> dict[str, dict[str, list]]:
    return json.loads((FIXTURES / "original_encoder_shapes.json").read_text())


def real_refs(real_shapes, part: str) -> dict[str, TensorRef]:
    path = Path(FILES[part])
    return {
        key: TensorRef(path, key, 0, 0, getattr(torch, dtype), tuple(shape))
        for key, (dtype, shape) in real_shapes[part].items()
    }


def test_real_t5_maps_onto_umt5_xxl(real_shapes):
    refs = real_refs(real_shapes, "t5")
    assert {r.dtype for r in refs.values()} == {torch.bfloat16}
    config = orig.t5_config(refs)
    assert {k: config[k] for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")} == {
        "vocab_size": 256384,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
    }
    assert config["relative_attention_num_buckets"] == 32
    source = ComponentSource("text_encoder", "original", Path(FILES["t5"]), config, orig.t5_refs(refs))
    check(source)  # every UMT5EncoderModel parameter present with its shape, nothing unexpected
    assert len(source.refs) == len(refs)


def test_real_clip_maps_onto_vit_h_14(real_shapes):
    refs = real_refs(real_shapes, "clip")
    assert any(k.startswith("textual.") for k in refs)  # the whole XLMRobertaCLIP, as published
    config = orig.clip_config(refs)
    assert {
        k: config[k]
        for k in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "patch_size",
            "image_size",
        )
    } == {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "intermediate_size": 5120,
        "patch_size": 14,
        "image_size": 224,
    }
    assert config["hidden_act"] == "gelu"
    source = ComponentSource("image_encoder", "original", Path(FILES["clip"]), config, orig.clip_refs(refs))
    check(source)
    visual = [k for k in refs if k.startswith("visual.") and k != "visual.head"]
    fused = [k for k in visual if ".attn.to_qkv." in k]
    assert len(source.refs) == len(visual) + 2 * len(fused)  # each fused to_qkv becomes q, k and v


def test_real_vae_maps_onto_autoencoder_kl_wan(real_shapes):
    refs = real_refs(real_shapes, "vae")
    config = orig.vae_config(refs)
    assert {k: config[k] for k in ("base_dim", "dim_mult", "num_res_blocks", "temperal_downsample", "z_dim")} == {
        "base_dim": 96,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "temperal_downsample": [False, True, True],
        "z_dim": 16,
    }
    source = ComponentSource("vae", "original", Path(FILES["vae"]), config, orig.vae_refs(refs, config))
    check(source)
    assert len(source.refs) == len(refs)


# --- damaged or hostile files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_pth_is_reported_with_its_path(tmp_path, wan, keep):
    data = (wan / orig.T5_CHECKPOINT).read_bytes()
    path = tmp_path / orig.T5_CHECKPOINT
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        text_encoder_source(path)


class _RunsAShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pth_whose_pickle_calls_code_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / orig.VAE_CHECKPOINT
    torch.save({"conv1.weight": torch.zeros(2), "payload": _RunsAShellCommand(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load (posix|os|nt)\.system") as info:
        vae_source(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (torch.nn.Linear(2, 2), r"refusing to load torch\.nn\.modules\.linear\.Linear"),
        ([torch.zeros(2), torch.ones(2)], r"not a flat state dict of tensors"),
        ({"a": torch.zeros(2), "b": 3}, r"not a flat state dict of tensors"),
    ],
    ids=["module", "list", "non-tensor value"],
)
def test_pth_that_is_not_a_state_dict_is_refused(tmp_path, obj, message):
    path = tmp_path / "model.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=message):
        read_pth_header(path)


def test_clip_in_fp16_is_closer_to_the_official_fp32_than_bf16(wan, ref):
    """Why the pipeline runs the CLIP in fp16 (``clip_dtype``, the official ``clip_dtype``) and not in bf16."""
    target = ref["clip_frame_penultimate"]
    err = {}
    for dtype in (torch.float16, torch.bfloat16):
        encoder = ClipImageEncoder.from_pretrained(wan / orig.CLIP_CHECKPOINT, dtype=dtype)
        out = encoder(ref["clip_frame"])
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        err[dtype] = float((out - target).norm() / target.norm())
    assert err[torch.float16] < 2e-3 and err[torch.float16] < err[torch.bfloat16] / 4, err  # measured 7.0e-4, 5.6e-3
