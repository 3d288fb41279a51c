"""The transformer equals the official MultiTalk WanModel (fixtures made by running the official code)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from multitalk_serve.engine.loading.transformer import load_transformer
from multitalk_serve.tiny import ORIGINAL_DIR, PARITY_DIMS, fingerprint, transformer_tensors
from parity_inputs import CASES, case_inputs, make_inputs

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "official_parity.safetensors"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
    with safe_open(FIXTURE, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (not a dict)


@pytest.fixture(scope="module")
def inputs():
    return make_inputs(PARITY_DIMS.image_dim, PARITY_DIMS.text_dim, PARITY_DIMS.audio_channels)


@pytest.fixture(scope="module")
def model(parity_root):
    return load_transformer(parity_root / ORIGINAL_DIR, parity_root / "MeiGen-MultiTalk", dtype=torch.float32)


def run(model, inputs, name, masks=None):
    audio, t, context, case_masks = case_inputs(name, inputs)
    hidden = torch.cat([inputs["x"], inputs["y"]])[None]
    with torch.no_grad():
        return model(
            hidden, torch.tensor([t]), context[None], inputs["clip_fea"], audio, case_masks if masks is None else masks
        ).sample


def test_fixture_was_made_from_these_weights_and_inputs(reference, inputs):
    _, metadata = reference
    base, audio = transformer_tensors(PARITY_DIMS, seed=0)
    weights = fingerprint({**base, **audio})
    assert weights == pytest.approx(float(metadata["weights_fingerprint"]), rel=1e-9), (
        "tiny weight generation changed: regenerate the fixture (tests/fixtures/official/README.md)"
    )
    assert fingerprint(inputs) == pytest.approx(float(metadata["inputs_fingerprint"]), rel=1e-9)


@pytest.mark.parametrize("name", list(CASES))
def test_matches_official_fp32(model, reference, inputs, name):
    outputs, _ = reference
    ours = run(model, inputs, name)
    assert ours.shape == outputs[name].shape
    err = (ours - outputs[name]).abs().max().item()
    assert err <= TOLERANCE, f"{name}: max |ours - official| = {err:.3g}"


def test_two_speaker_output_depends_on_the_person_masks(model, inputs):
    masks = inputs["masks"]
    swapped = masks[[1, 0, 2]]  # person 1 <-> person 2 regions
    a = run(model, inputs, "two_speakers", masks)
    b = run(model, inputs, "two_speakers", swapped)
    assert (a - b).abs().max() > 1e-3


def test_one_speaker_ignores_masks(model, inputs):
    a = run(model, inputs, "one_speaker")
    b = run(model, inputs, "one_speaker", torch.zeros_like(inputs["masks"]))
    assert torch.equal(a, b)
