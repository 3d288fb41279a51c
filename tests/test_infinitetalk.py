"""InfiniteTalk's audio adapters on the MultiTalk engine: tiny files in the published layout, loading, the model
variant (fp32 audio norm), switching adapters on one base without reloading it, and parity with the official
InfiniteTalk ``WanModel`` (fixture made by running the official code, tests/fixtures/official/README.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from multitalk_serve.engine import (
    AUDIO_ADAPTERS,
    DEFAULT_ADAPTER,
    AdapterBank,
    CheckpointError,
    ConfigError,
    adapter_spec,
)
from multitalk_serve.engine.loading.adapters import adapter_for_file, read_adapter
from multitalk_serve.engine.loading.inventory import inspect_model_dir
from multitalk_serve.engine.loading.paths import find_components
from multitalk_serve.engine.loading.transformer import load_transformer
from multitalk_serve.engine.models.transformer import MultiTalkAudioProjection
from multitalk_serve.tiny import MULTITALK_DIR, ORIGINAL_DIR, PARITY_DIMS, TINY_DIMS, adapter_tensors, fingerprint
from parity_inputs import case_inputs, make_inputs

FIXTURES = Path(__file__).parent / "fixtures" / "official"
IT_FIXTURE = FIXTURES / "official_infinitetalk.safetensors"
MT_FIXTURE = FIXTURES / "official_parity.safetensors"
TOLERANCE = 2e-5  # fp32; measured max 3.3e-6 (tests/fixtures/official/README.md)
RUNS = {  # fixture name -> (adapter, parity case), as make_infinitetalk_fixtures.py
    "single/one_speaker": ("infinitetalk-single", "one_speaker"),
    "single/null_audio_negative_text": ("infinitetalk-single", "null_audio_negative_text"),
    "multi/two_speakers": ("infinitetalk-multi", "two_speakers"),
    "multi/one_speaker": ("infinitetalk-multi", "one_speaker"),
}


def _read(path: Path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (not a dict)


@pytest.fixture(scope="module")
def official():
    return _read(IT_FIXTURE)


@pytest.fixture(scope="module")
def inputs():
    return make_inputs(PARITY_DIMS.image_dim, PARITY_DIMS.text_dim, PARITY_DIMS.audio_channels)


def run(model, inputs, case):
    audio, t, context, masks = case_inputs(case, inputs)
    hidden = torch.cat([inputs["x"], inputs["y"]])[None]
    with torch.no_grad():
        return model(hidden, torch.tensor([t]), context[None], inputs["clip_fea"], audio, masks).sample


# --- tiny files in the published layout -----------------------------------------------------------------------
def test_tiny_infinitetalk_files_have_the_published_layout(tiny_root):
    multitalk = load_file(tiny_root / MULTITALK_DIR / "multitalk.safetensors")
    manifest = json.loads((tiny_root / "TINY.json").read_text())
    for name, folder in (("infinitetalk-single", "single"), ("infinitetalk-multi", "multi")):
        path = tiny_root / "InfiniteTalk" / folder / "infinitetalk.safetensors"
        assert AUDIO_ADAPTERS[name].local_path(tiny_root) == path
        assert manifest["infinitetalk"][name] == f"InfiniteTalk/{folder}/infinitetalk.safetensors"
        tensors = load_file(path)
        # the published files: the 330 MultiTalk audio keys (26 at 2 blocks), same shapes, float32
        assert set(tensors) == set(multitalk)
        assert len(tensors) == 10 + 8 * TINY_DIMS.num_layers
        assert all(tensors[k].shape == multitalk[k].shape for k in tensors)
        assert {t.dtype for t in tensors.values()} == {torch.float32}
        assert not torch.equal(tensors["audio_proj.proj1.weight"], multitalk["audio_proj.proj1.weight"])
    single = load_file(AUDIO_ADAPTERS["infinitetalk-single"].local_path(tiny_root))
    multi = load_file(AUDIO_ADAPTERS["infinitetalk-multi"].local_path(tiny_root))
    assert not torch.equal(single["blocks.0.norm_x.weight"], multi["blocks.0.norm_x.weight"])


def test_registry_names_and_files(tmp_path):
    assert DEFAULT_ADAPTER == "multitalk"
    assert list(AUDIO_ADAPTERS) == ["multitalk", "infinitetalk-single", "infinitetalk-multi"]
    assert adapter_spec(" InfiniteTalk-Multi ").repo_file == "multi/infinitetalk.safetensors"
    assert [s.audio_norm_fp32 for s in AUDIO_ADAPTERS.values()] == [False, True, True]
    with pytest.raises(ConfigError, match=r"unknown model 'infinitalk'.*multitalk, infinitetalk-single"):
        adapter_spec("infinitalk")
    assert adapter_for_file(Path("x/MeiGen-MultiTalk/multitalk.safetensors")).name == "multitalk"
    assert adapter_for_file(Path("w/InfiniteTalk/single/infinitetalk.safetensors")).name == "infinitetalk-single"
    assert adapter_for_file(Path("w/InfiniteTalk/multi/infinitetalk.safetensors")).name == "infinitetalk-multi"
    assert adapter_for_file(Path("somewhere/infinitetalk.safetensors")) is None  # single or multi: unknown
    assert adapter_for_file(tmp_path) is None


# --- the model variant ------------------------------------------------------------------------------------------
def test_infinitetalk_audio_norm_computes_in_fp32_then_casts_back():
    torch.manual_seed(0)
    kwargs = dict(window=5, vae_scale=4, layers=12, channels=8, intermediate_dim=64, output_dim=768, context_tokens=32)
    mt = MultiTalkAudioProjection(**kwargs, norm_output=True).to(torch.bfloat16)
    it = MultiTalkAudioProjection(**kwargs, norm_output=True, norm_fp32=True).to(torch.bfloat16)
    it.load_state_dict(mt.state_dict())
    with torch.no_grad():
        mt.norm.weight.normal_(1, 0.3)
        mt.norm.bias.normal_(0, 0.1)
        it.load_state_dict(mt.state_dict())
        audio = torch.randn(2, 21, 5, 12, 8).to(torch.bfloat16) * 3
        first, later = mt.split_windows(audio)
        h = torch.relu(
            mt.proj2(torch.cat([torch.relu(mt.proj1(first.flatten(2))), torch.relu(mt.proj1_vf(later.flatten(2)))], 1))
        )
        tokens = mt.proj3(h).unflatten(-1, (32, 768))
        # InfiniteTalk: LayerNorm under a float32 autocast, result cast to the activation dtype (multitalk_model.py)
        reference = F.layer_norm(tokens.float(), (768,), mt.norm.weight.float(), mt.norm.bias.float(), 1e-5)
        reference = reference.to(torch.bfloat16)
        ours, multitalk = it(audio), mt(audio)
    assert ours.dtype == torch.bfloat16
    assert torch.equal(ours, reference)
    assert not torch.equal(multitalk, reference)  # the bf16 norm rounds differently somewhere: the flag matters
    with torch.no_grad():
        assert torch.equal(it.float()(audio.float()), mt.float()(audio.float()))  # in fp32: the same computation


def test_loader_sets_the_adapter_from_the_file(parity_root):
    wan = parity_root / ORIGINAL_DIR
    mt = load_transformer(wan, parity_root / MULTITALK_DIR, dtype=torch.float32)
    assert mt.audio_adapter == "multitalk" and mt.config.audio_norm_fp32 is False and not mt.audio_proj.norm_fp32
    it = load_transformer(wan, parity_root / "InfiniteTalk" / "single", dtype=torch.float32)
    assert it.audio_adapter == "infinitetalk-single" and it.config.audio_norm_fp32 and it.audio_proj.norm_fp32
    it = load_transformer(wan, parity_root / "InfiniteTalk/multi/infinitetalk.safetensors", dtype=torch.float32)
    assert it.audio_adapter == "infinitetalk-multi"
    named = load_transformer(wan, parity_root / MULTITALK_DIR, dtype=torch.float32, audio_adapter="infinitetalk-multi")
    assert named.audio_adapter == "infinitetalk-multi" and named.audio_proj.norm_fp32
    with pytest.raises(ConfigError, match="unknown model"):
        load_transformer(wan, parity_root / MULTITALK_DIR, audio_adapter="nope")
    with pytest.raises(CheckpointError, match=r"multitalk\.safetensors or infinitetalk\.safetensors"):
        load_transformer(wan, parity_root / "InfiniteTalk", dtype=torch.float32)  # single or multi? neither file here


# --- parity with the official InfiniteTalk WanModel ----------------------------------------------------------
def test_fixture_was_made_from_these_weights_and_inputs(official, inputs):
    _, metadata = official
    for folder, name in (("single", "infinitetalk-single"), ("multi", "infinitetalk-multi")):
        assert fingerprint(adapter_tensors(PARITY_DIMS, name)) == pytest.approx(
            float(metadata[f"{folder}_fingerprint"]), rel=1e-9
        ), "tiny InfiniteTalk generation changed: regenerate the fixture (tests/fixtures/official/README.md)"
    assert fingerprint(inputs) == pytest.approx(float(metadata["inputs_fingerprint"]), rel=1e-9)


@pytest.fixture(scope="module")
def loaded(parity_root):
    wan = parity_root / ORIGINAL_DIR
    return {
        name: load_transformer(wan, AUDIO_ADAPTERS[name].local_path(parity_root), dtype=torch.float32)
        for name in ("infinitetalk-single", "infinitetalk-multi")
    }


@pytest.mark.parametrize("fixture_name", list(RUNS))
def test_matches_official_infinitetalk_fp32(loaded, official, inputs, fixture_name):
    outputs, _ = official
    adapter, case = RUNS[fixture_name]
    ours = run(loaded[adapter], inputs, case)
    err = (ours - outputs[fixture_name]).abs().max().item()
    print(f"{fixture_name}: max |ours - official| = {err:.3g}")
    assert err <= TOLERANCE, f"{fixture_name}: max |ours - official| = {err:.3g}"


def test_switching_adapters_on_one_base_matches_each_official_model(parity_root, official, inputs):
    """One base loaded once with MultiTalk; InfiniteTalk single / multi switched in and out, each output equal to
    the official model of that adapter (InfiniteTalk's and MultiTalk's fixtures)."""
    outputs, _ = official
    multitalk_outputs, _ = _read(MT_FIXTURE)
    model = load_transformer(parity_root / ORIGINAL_DIR, parity_root / MULTITALK_DIR, dtype=torch.float32)
    base_before = {k: p.clone() for k, p in model.named_parameters() if k.startswith("blocks.0.attn1.")}
    bank = AdapterBank(model)
    assert bank.names == ["multitalk"] and bank.active == "multitalk"
    for name in ("infinitetalk-single", "infinitetalk-multi"):
        bank.add(name, AUDIO_ADAPTERS[name].local_path(parity_root))
    ids = {k: id(p) for k, p in model.named_parameters()}
    for name, fixture_name in [
        ("infinitetalk-multi", "multi/two_speakers"),
        ("infinitetalk-single", "single/one_speaker"),
        ("multitalk", None),
        ("infinitetalk-single", "single/null_audio_negative_text"),
        ("infinitetalk-multi", "multi/one_speaker"),
    ]:
        report = bank.activate(name)
        assert report.name == name and model.audio_adapter == name and bank.active == name
        assert model.audio_proj.norm_fp32 == AUDIO_ADAPTERS[name].audio_norm_fp32
        if fixture_name is None:
            for case in ("two_speakers", "one_speaker"):
                err = (run(model, inputs, case) - multitalk_outputs[case]).abs().max().item()
                assert err <= 1e-4, f"back to multitalk, {case}: {err:.3g}"
        else:
            err = (run(model, inputs, RUNS[fixture_name][1]) - outputs[fixture_name]).abs().max().item()
            assert err <= TOLERANCE, f"{name}, {fixture_name}: {err:.3g}"
    assert {k: id(p) for k, p in model.named_parameters()} == ids  # in place: the same parameter objects
    assert all(torch.equal(p, base_before[k]) for k, p in model.named_parameters() if k in base_before)
    assert bank.activate("infinitetalk-multi").seconds == 0.0  # already active: nothing copied


def test_bank_refuses_unknown_names_and_mismatched_files(parity_root, tiny_root):
    model = load_transformer(parity_root / ORIGINAL_DIR, parity_root / MULTITALK_DIR, dtype=torch.float32)
    bank = AdapterBank(model)
    with pytest.raises(ConfigError, match=r"'infinitetalk-single' is not loaded in this process \(loaded: multitalk"):
        bank.activate("infinitetalk-single")
    # tiny-dims audio weights (64-wide wav2vec2 features) do not fit the parity model (768-wide)
    with pytest.raises(CheckpointError, match=r"does not fit this transformer's audio layers.*wrong shape"):
        bank.add("infinitetalk-single", AUDIO_ADAPTERS["infinitetalk-single"].local_path(tiny_root))
    with pytest.raises(CheckpointError, match="non-audio tensors"):
        read_adapter(tiny_root / ORIGINAL_DIR / "diffusion_pytorch_model-00001-of-00003.safetensors", model)
    assert bank.names == ["multitalk"]


def test_switching_fp8_weights_requantizes_the_audio_linears(tiny_root, inputs):
    """fp8 (torchao, weight-only on CPU): a switched model equals one loaded with that adapter from the start."""
    pytest.importorskip("torchao")
    wan = tiny_root / ORIGINAL_DIR
    single = AUDIO_ADAPTERS["infinitetalk-single"].local_path(tiny_root)
    switched = load_transformer(wan, tiny_root / MULTITALK_DIR, dtype=torch.bfloat16, fp8=True)
    assert "float8" in type(switched.blocks[0].audio_cross_attn.q_linear.weight.data).__name__.lower()
    bank = AdapterBank(switched)
    bank.add("infinitetalk-single", single)
    report = bank.activate("infinitetalk-single")
    assert report.requantized == 3 * TINY_DIMS.num_layers  # q_linear, kv_linear, proj per block
    direct = load_transformer(wan, single, dtype=torch.bfloat16, fp8=True)
    hidden = torch.randn(1, 36, 3, 8, 12, dtype=torch.bfloat16)
    text = torch.randn(1, 7, TINY_DIMS.text_dim, dtype=torch.bfloat16)
    image = torch.randn(1, 257, TINY_DIMS.image_dim, dtype=torch.bfloat16)
    audio = torch.randn(1, 9, 5, 12, TINY_DIMS.audio_channels, dtype=torch.bfloat16)
    with torch.no_grad():
        a = switched(hidden, torch.tensor([500.0]), text, image, audio).sample
        b = direct(hidden, torch.tensor([500.0]), text, image, audio).sample
        bank.activate("multitalk")
        c = switched(hidden, torch.tensor([500.0]), text, image, audio).sample
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_switch_cost_is_a_copy_of_the_audio_layers(parity_root):
    """The measured figure (also bench/bench_adapter_switch.py): the switch copies only the audio tensors."""
    model = load_transformer(parity_root / ORIGINAL_DIR, parity_root / MULTITALK_DIR, dtype=torch.float32)
    bank = AdapterBank(model)
    bank.add("infinitetalk-single", AUDIO_ADAPTERS["infinitetalk-single"].local_path(parity_root))
    audio_bytes = sum(
        p.numel() * p.element_size() for k, p in model.named_parameters() if "audio" in k or "norm_x" in k
    )
    start = time.perf_counter()
    report = bank.activate("infinitetalk-single")
    assert report.bytes_copied == audio_bytes
    assert report.seconds <= time.perf_counter() - start
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"switch: {report.bytes_copied / 1e6:.1f} MB of {total / 1e6:.1f} MB in {report.seconds * 1e3:.2f} ms")


# --- paths and verify --------------------------------------------------------------------------------------------
def test_paths_and_inventory_know_the_infinitetalk_files(tiny_root):
    found, problems = find_components(tiny_root, cache_dirs=[])
    assert not problems
    assert found["infinitetalk_single"] == AUDIO_ADAPTERS["infinitetalk-single"].local_path(tiny_root)
    assert found["infinitetalk_multi"] == AUDIO_ADAPTERS["infinitetalk-multi"].local_path(tiny_root)
    inventory = inspect_model_dir(tiny_root, cache_dirs=[])
    assert inventory.ok, inventory.problems
    assert inventory.paths.adapters() == {
        "multitalk": tiny_root / MULTITALK_DIR / "multitalk.safetensors",
        "infinitetalk-single": found["infinitetalk_single"],
        "infinitetalk-multi": found["infinitetalk_multi"],
    }
    files = set(inventory.files)
    assert {str(found["infinitetalk_single"]), str(found["infinitetalk_multi"])} <= files


def test_verify_reports_a_broken_infinitetalk_file(tiny_root, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(tiny_root, root, symlinks=True)
    path = AUDIO_ADAPTERS["infinitetalk-multi"].local_path(root)
    tensors = load_file(path)
    del tensors["blocks.1.norm_x.bias"]
    from safetensors.torch import save_file

    save_file(tensors, path)
    inventory = inspect_model_dir(root, cache_dirs=[])
    assert not inventory.ok
    assert any("infinitetalk_multi" in p and "blocks.1.norm_x.bias" in p for p in inventory.problems), (
        inventory.problems
    )


def test_infinitetalk_is_found_in_a_hugging_face_cache(tiny_root, tmp_path):
    """``huggingface-cli download MeiGen-AI/InfiniteTalk`` into a cache: used in place, as the other repositories."""
    root = tmp_path / "root"
    root.mkdir()
    for entry in tiny_root.iterdir():
        if entry.name != "InfiniteTalk":
            (root / entry.name).symlink_to(entry)
    found, _ = find_components(root, cache_dirs=[])
    assert found["infinitetalk_single"] is None and found["infinitetalk_multi"] is None
    snapshot = tmp_path / "hub" / "models--MeiGen-AI--InfiniteTalk" / "snapshots" / "abc123"
    (snapshot / "single").mkdir(parents=True)
    (snapshot / "single" / "infinitetalk.safetensors").symlink_to(
        AUDIO_ADAPTERS["infinitetalk-single"].local_path(tiny_root)
    )
    found, problems = find_components(root, cache_dirs=[tmp_path / "hub"])
    assert not problems
    assert found["infinitetalk_single"] == snapshot / "single" / "infinitetalk.safetensors"
    assert found["infinitetalk_multi"] is None  # only the single file was downloaded
