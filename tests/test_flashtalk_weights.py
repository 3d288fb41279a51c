"""FlashTalk's weights (Soul-AILab/SoulX-FlashTalk-14B): a whole transformer in the original Wan layout whose shards
hold the audio layers too, with the Wan encoders in the same folder. Its tiny copy has the official key set and
config (checked against the official class: tests/fixtures/official/flashtalk_layout.json), it is found beside or
instead of the Wan folders, loads as the transformer with its own audio weights, and never shares a process."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import pipeline_stubs as stubs
from multitalk_serve.engine.errors import CheckpointError, ConfigError
from multitalk_serve.engine.loading.adapters import AUDIO_ADAPTERS, FULL_MODELS, AdapterBank, adapter_spec
from multitalk_serve.engine.loading.inventory import inspect_model_dir
from multitalk_serve.engine.loading.layouts import WanDims, multitalk_shapes, original_base_shapes
from multitalk_serve.engine.loading.paths import FLASHTALK_DIR, resolve_model_paths
from multitalk_serve.engine.loading.transformer import load_transformer
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline
from multitalk_serve.forward_check import random_inputs
from multitalk_serve.tiny import (
    GGUF_NAMES,
    MULTITALK_DIR,
    ORIGINAL_DIR,
    PARITY_DIMS,
    TINY_DIMS,
    WAV2VEC_DIR,
    flashtalk_config,
)

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "flashtalk_layout.json"
INDEX = "diffusion_pytorch_model.safetensors.index.json"
ENCODERS = (
    "models_t5_umt5-xxl-enc-bf16.pth",
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
    "Wan2.1_VAE.pth",
)


def official() -> dict:
    return json.loads(FIXTURE.read_text())


def copy_parts(tiny_root: Path, dest: Path, *parts: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        src = tiny_root / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / part)
    return dest


def index_of(folder: Path) -> dict[str, str]:
    return json.loads((folder / INDEX).read_text())["weight_map"]


# --- the tiny layout against the official class ----------------------------------------------------------------
def test_the_official_class_loads_our_layout_with_our_config():
    """The official ``WanModel.from_pretrained`` read our FlashTalk folder (written at the parity dimensions) with no
    missing, unexpected or mismatched key and every tensor equal to our files; its own ``save_config`` writes the
    config we write (the diffusers version aside)."""
    fixture = official()
    load = fixture["official_load"]
    assert load["missing_keys"] == load["unexpected_keys"] == load["mismatched_keys"] == []
    assert load["tensors_equal_to_our_files"] is True
    assert load["files"] == [
        "config.json",
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
        INDEX,
    ]
    ours = flashtalk_config(PARITY_DIMS)
    theirs = fixture["config"]
    assert ours.keys() == theirs.keys()
    assert {k: v for k, v in ours.items() if k != "_diffusers_version"} == {
        k: v for k, v in theirs.items() if k != "_diffusers_version"
    }


def test_key_set_is_the_official_one_at_full_size_and_tiny():
    """The documented formula (Wan base keys + MultiTalk's audio keys) is the official state dict, shapes included,
    at the published 14B dimensions: 1303 + 330 = 1633 tensors."""
    theirs = {k: tuple(v) for k, v in official()["state_dict"]["14B"].items()}
    ours = original_base_shapes(WanDims()) | multitalk_shapes(WanDims())
    assert len(ours) == 1633 and ours == theirs
    small = {k: tuple(v) for k, v in official()["state_dict"]["parity"].items()}
    assert small == original_base_shapes(PARITY_DIMS) | multitalk_shapes(PARITY_DIMS)


def test_tiny_flashtalk_folder_is_in_the_published_layout(tiny_root):
    folder = tiny_root / FLASHTALK_DIR
    weight_map = index_of(folder)
    assert sorted(set(weight_map.values())) == [f"diffusion_pytorch_model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    expected = original_base_shapes(TINY_DIMS) | multitalk_shapes(TINY_DIMS)
    assert set(weight_map) == set(expected) == set(official()["state_dict"]["parity"])
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(load_file(folder / shard))
    assert {k: tuple(t.shape) for k, t in tensors.items()} == expected
    assert json.loads((folder / "config.json").read_text()) == flashtalk_config(TINY_DIMS)
    index = json.loads((folder / INDEX).read_text())
    assert index["metadata"]["total_size"] == sum(math.prod(s) * 4 for s in expected.values())
    for name in ENCODERS:  # the Wan original-layout encoders, linked (or copied)
        assert (folder / name).read_bytes() == (tiny_root / ORIGINAL_DIR / name).read_bytes()
    assert (folder / "google/umt5-xxl/tokenizer.json").is_file()
    # FlashTalk's weights are its own: not the Wan base's, not InfiniteTalk's
    wan = {}
    for shard in sorted(set(index_of(tiny_root / ORIGINAL_DIR).values())):
        wan.update(load_file(tiny_root / ORIGINAL_DIR / shard))
    assert not torch.equal(tensors["blocks.0.self_attn.q.weight"], wan["blocks.0.self_attn.q.weight"])


# --- registry -----------------------------------------------------------------------------------------------------
def test_flashtalk_is_a_full_model_not_an_adapter():
    spec = adapter_spec(" FlashTalk ")
    assert spec is FULL_MODELS["flashtalk"] and "flashtalk" not in AUDIO_ADAPTERS
    assert (spec.repo, spec.folder, spec.audio_norm_fp32, spec.speakers, spec.full_transformer) == (
        "Soul-AILab/SoulX-FlashTalk-14B",
        FLASHTALK_DIR,
        True,
        1,
        True,
    )
    assert spec.local_path("/models") == Path("/models") / FLASHTALK_DIR
    with pytest.raises(ConfigError, match=r"unknown model 'x'.*infinitetalk-multi, flashtalk"):
        adapter_spec("x")


# --- finding it -----------------------------------------------------------------------------------------------------
def test_found_beside_the_wan_folders_without_changing_them(tiny_root):
    paths = resolve_model_paths(tiny_root, cache_dirs=[])
    assert paths.flashtalk == tiny_root / FLASHTALK_DIR
    assert paths.transformer == tiny_root / "Wan2.1-I2V-14B-480P-Diffusers" / "transformer"
    assert "flashtalk" not in paths.adapters()  # not an adapter of the Wan base
    inventory = inspect_model_dir(tiny_root, cache_dirs=[])
    assert inventory.ok, inventory.problems
    report = {c.name: c for c in inventory.components}["flashtalk"]
    assert report.layout == "audio: flashtalk" and report.problem is None
    assert report.bytes == sum(
        math.prod(s) * 4 for s in (original_base_shapes(TINY_DIMS) | multitalk_shapes(TINY_DIMS)).values()
    )
    assert {str(tiny_root / FLASHTALK_DIR / n) for n in index_of(tiny_root / FLASHTALK_DIR).values()} <= set(
        inventory.files
    )


def test_a_folder_with_only_flashtalk_is_complete(tiny_root, tmp_path):
    root = copy_parts(tiny_root, tmp_path / "m", FLASHTALK_DIR, WAV2VEC_DIR)
    folder = root / FLASHTALK_DIR
    paths = resolve_model_paths(root, cache_dirs=[])
    assert paths.transformer == paths.flashtalk == folder
    assert paths.text_encoder == folder / ENCODERS[0] and paths.image_encoder == folder / ENCODERS[1]
    assert paths.vae == folder / ENCODERS[2] and paths.tokenizer == folder / "google/umt5-xxl"
    assert paths.adapters() == {} and paths.multitalk is None
    inventory = inspect_model_dir(root, cache_dirs=[])
    assert inventory.ok, inventory.problems
    layouts = {c.name: c.layout for c in inventory.components}
    assert layouts["transformer"] == "original" and layouts["flashtalk"] == "audio: flashtalk"
    assert inspect_model_dir(root, cache_dirs=[], adapters=["flashtalk"]).ok
    # the root may be the FlashTalk folder itself
    assert resolve_model_paths(folder, wav2vec=root / WAV2VEC_DIR, cache_dirs=[]).transformer == folder
    # adapters need the Wan base, which this folder lacks
    copy_parts(tiny_root, root, MULTITALK_DIR)
    inventory = inspect_model_dir(root, cache_dirs=[])
    assert any(p.startswith("multitalk:") and "needs the Wan2.1-I2V-14B base" in p for p in inventory.problems)
    with pytest.raises(ConfigError, match=r"model multitalk needs the Wan2\.1-I2V-14B base transformer"):
        MultiTalkPipeline.from_pretrained(root, adapters=["multitalk"], dtype=torch.float32)


def test_not_taken_for_the_wan_base_beside_a_gguf(tiny_root, tmp_path):
    """With a GGUF transformer and no Wan folder, the GGUF is the base the adapters go on; FlashTalk's folder
    lends its encoders."""
    gguf = GGUF_NAMES["Q8_0"]
    root = copy_parts(tiny_root, tmp_path / "m", FLASHTALK_DIR, WAV2VEC_DIR, MULTITALK_DIR, gguf)
    paths = resolve_model_paths(root, cache_dirs=[])
    assert paths.transformer == root / gguf and paths.flashtalk == root / FLASHTALK_DIR
    assert paths.text_encoder == root / FLASHTALK_DIR / ENCODERS[0]
    assert list(paths.adapters()) == ["multitalk"]
    inventory = inspect_model_dir(root, cache_dirs=[])
    assert inventory.ok, inventory.problems


def test_found_in_a_hugging_face_cache(tiny_root, tmp_path):
    """RunPod's cached models: the FlashTalk repository's snapshot is used in place, encoders included."""
    from hf_cache import fake_hf_cache

    cache = tmp_path / "hub"
    snapshot = fake_hf_cache(cache, "Soul-AILab/SoulX-FlashTalk-14B", tiny_root / FLASHTALK_DIR)
    root = copy_parts(tiny_root, tmp_path / "volume", WAV2VEC_DIR)
    paths = resolve_model_paths(root, cache_dirs=[cache], adapters=["flashtalk"])
    assert paths.flashtalk == paths.transformer == snapshot and paths.vae == snapshot / ENCODERS[2]
    assert inspect_model_dir(root, cache_dirs=[cache]).ok


def test_missing_flashtalk_is_named(tiny_root, tmp_path):
    root = copy_parts(tiny_root, tmp_path / "m", ORIGINAL_DIR, MULTITALK_DIR, WAV2VEC_DIR)
    with pytest.raises(CheckpointError, match=r"flashtalk: the flashtalk model is missing, expected .*SoulX-Flash"):
        resolve_model_paths(root, cache_dirs=[], adapters=["flashtalk"])
    assert not inspect_model_dir(root, cache_dirs=[], adapters=["flashtalk"]).ok
    with pytest.raises(CheckpointError, match="SoulX-FlashTalk-14B"):
        MultiTalkPipeline.from_pretrained(root, adapters=["flashtalk"], dtype=torch.float32)


# --- loading it -----------------------------------------------------------------------------------------------------
def test_loads_as_the_transformer_with_its_own_audio_weights_and_runs(tiny_root):
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, adapters=["flashtalk"], dtype=torch.float32)
    assert pipe.adapter == "flashtalk" and pipe.adapters == ["flashtalk"] and pipe.adapter_bank is None
    model = pipe.transformer
    assert model.audio_adapter == "flashtalk" and model.audio_proj.norm_fp32 and model.config.audio_norm_fp32
    folder = tiny_root / FLASHTALK_DIR
    assert model.load_report.files == sorted(folder / n for n in set(index_of(folder).values()))
    files = {}
    for shard in sorted(set(index_of(folder).values())):
        files.update(load_file(folder / shard))
    params = dict(model.named_parameters())
    assert torch.equal(
        params["blocks.1.audio_cross_attn.kv_linear.weight"], files["blocks.1.audio_cross_attn.kv_linear.weight"]
    )
    assert torch.equal(params["blocks.0.attn1.to_q.weight"], files["blocks.0.self_attn.q.weight"])
    inputs = random_inputs(model, 1, frames=9, height=64, width=96, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        out = model(**inputs).sample
    assert out.shape == (*inputs["hidden_states"].shape[:1], 16, *inputs["hidden_states"].shape[2:])
    assert torch.isfinite(out).all()


def test_flashtalk_shares_the_process_with_no_other_model(tiny_root):
    for adapters in (["flashtalk", "multitalk"], ["infinitetalk-single", "flashtalk"]):
        with pytest.raises(ConfigError, match=r"flashtalk cannot be loaded together with .*one transformer"):
            MultiTalkPipeline.from_pretrained(tiny_root, adapters=adapters, dtype=torch.float32)
    with pytest.raises(ConfigError, match="flashtalk loads its own transformer"):
        MultiTalkPipeline.from_pretrained(
            tiny_root, adapters=["flashtalk"], multitalk=tiny_root / MULTITALK_DIR, dtype=torch.float32
        )
    model = load_transformer(tiny_root / FLASHTALK_DIR, audio_adapter="flashtalk", dtype=torch.float32)
    with pytest.raises(ConfigError, match="flashtalk is a whole transformer, not an audio adapter"):
        AdapterBank(model).add("flashtalk", tiny_root / FLASHTALK_DIR)


def copy_flashtalk(tiny_root: Path, tmp_path: Path) -> Path:
    return shutil.copytree(tiny_root / FLASHTALK_DIR, tmp_path / FLASHTALK_DIR)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("intermediate_dim", 64, r"intermediate_dim=64 but the weights have 32"),
        ("context_tokens", 8, r"context_tokens=8 but the weights have 4"),
        ("norm_output_audio", False, r"norm_output_audio=False is not supported"),
        ("dim", 512, r"dim=512 but the weights have 256"),
    ],
)
def test_a_config_that_contradicts_the_weights_is_refused(tiny_root, tmp_path, key, value, message):
    folder = copy_flashtalk(tiny_root, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_transformer(folder, audio_adapter="flashtalk")


def test_a_folder_without_audio_layers_is_not_flashtalk(tiny_root, tmp_path):
    folder = copy_flashtalk(tiny_root, tmp_path)
    index = json.loads((folder / INDEX).read_text())
    for shard in sorted(set(index["weight_map"].values())):
        tensors = {k: v for k, v in load_file(folder / shard).items() if k in original_base_shapes(TINY_DIMS)}
        save_file(tensors, folder / shard)
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if k in original_base_shapes(TINY_DIMS)}
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"no audio layers .* not a FlashTalk checkpoint"):
        load_transformer(folder, audio_adapter="flashtalk")


def test_a_realtime_job_runs_on_the_tiny_flashtalk_weights(tiny_root):
    """From the folder to frames: the realtime preset on the FlashTalk transformer loaded from its own layout."""
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, adapters=["flashtalk"], dtype=torch.float32)
    options = GenerateOptions.from_preset("realtime", size=(32, 48), seed=3)
    job = pipe.prepare(Image.fromarray(stubs.scenario_image()), [stubs.speech_like(1.0, seed=2)], "hi", options=options)
    video = torch.cat(list(pipe.frames(job)), dim=1)
    assert video.shape == (3, 25, 32, 48) and torch.isfinite(video).all()


# --- memory planner ---------------------------------------------------------------------------------------------
def test_the_planner_plans_flashtalk_windows():
    from multitalk_serve.engine.errors import EngineError
    from multitalk_serve.engine.speed.memory import PLAN_RESOLUTIONS, estimate_gb, parse_plan, plan_memory

    gib = 2**30
    assert "flashtalk" in PLAN_RESOLUTIONS
    estimates = {
        name: parse_plan(name, "flashtalk").gpu_gb
        for name in ("bf16", "bf16+t5-offload", "fp8", "fp8+t5-offload", "fp8+t5-offload+group-offload")
    }
    assert estimates == {
        "bf16": 56.3,
        "bf16+t5-offload": 52.3,
        "fp8": 37.7,
        "fp8+t5-offload": 33.7,
        "fp8+t5-offload+group-offload": 16.5,
    }
    # a window (12,096 tokens) needs less than a 480p clip (32,760): 5 GB less where nothing is offloaded
    assert estimate_gb("bf16", False, False, "480p") - estimates["bf16"] == pytest.approx(5.0, abs=0.05)
    assert plan_memory(141 * gib, "flashtalk").name == "bf16"  # H200
    assert plan_memory(80 * gib, "flashtalk").name == "bf16"  # H100 / A100 80 GB
    assert plan_memory(60 * 10**9, "flashtalk").name == "bf16"  # where a 480p clip must offload the T5
    assert plan_memory(60 * 10**9, "480p").name == "bf16+t5-offload"
    assert plan_memory(48 * gib, "flashtalk").name == "fp8"  # L40S / A6000
    assert plan_memory(40 * gib, "flashtalk").name == "fp8"  # A100 40 GB
    assert plan_memory(24 * gib, "flashtalk").name == "fp8+t5-offload+group-offload"  # RTX 4090 / L4
    with pytest.raises(EngineError, match="a flashtalk job needs about 17 GB"):
        plan_memory(16 * gib, "flashtalk")


def test_loading_flashtalk_plans_for_its_windows(tiny_root):
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, adapters=["flashtalk"], memory_plan="bf16", dtype=torch.float32)
    assert pipe.memory_plan.name == "bf16" and pipe.memory_plan.gpu_gb == 56.3  # not the 480p clip's 61.3
