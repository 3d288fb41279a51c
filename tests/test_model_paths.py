"""Finding every component: layouts, the provisioning manifest, Hugging Face caches (RunPod cached models), and the
inventory that says what is missing or inconsistent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import pipeline_stubs as stubs
from hf_cache import fake_hf_cache
from multitalk_serve.engine.errors import CheckpointError
from multitalk_serve.engine.loading.inventory import inspect_model_dir
from multitalk_serve.engine.loading.paths import cached_snapshot, resolve_model_paths
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline

ORIGINAL = "Wan2.1-I2V-14B-480P"
DIFFUSERS = "Wan2.1-I2V-14B-480P-Diffusers"


def copy_parts(tiny_root: Path, dest: Path, *parts: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        src = tiny_root / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / part)
    return dest


def test_tiny_root_prefers_the_diffusers_layout(tiny_root):
    paths = resolve_model_paths(tiny_root, cache_dirs=[])
    assert paths.transformer == tiny_root / DIFFUSERS / "transformer"
    assert paths.text_encoder == tiny_root / DIFFUSERS / "text_encoder"
    assert paths.multitalk == tiny_root / "MeiGen-MultiTalk" / "multitalk.safetensors"


def test_original_layout_alone_uses_the_pth_encoders(tiny_root, tmp_path):
    root = copy_parts(tiny_root, tmp_path / "m", ORIGINAL, "MeiGen-MultiTalk", "chinese-wav2vec2-base")
    paths = resolve_model_paths(root, cache_dirs=[])
    assert paths.transformer == root / ORIGINAL
    assert paths.text_encoder.name == "models_t5_umt5-xxl-enc-bf16.pth"
    assert paths.image_encoder.name == "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    assert paths.vae.name == "Wan2.1_VAE.pth" and paths.tokenizer == root / ORIGINAL / "google/umt5-xxl"
    assert paths.image_processor is None
    inventory = inspect_model_dir(root, cache_dirs=[])
    assert inventory.ok, inventory.problems
    layouts = {c.name: c.layout for c in inventory.components}
    assert layouts["text_encoder"] == layouts["vae"] == layouts["transformer"] == "original"


def test_both_layouts_generate_the_same_video(tiny_root, tmp_path):
    """The original layout's .pth encoders hold the diffusers encoders' weights (T5 in bf16): in bf16 the two
    pipelines are the same model, frame for frame."""
    original = copy_parts(tiny_root, tmp_path / "o", ORIGINAL, "MeiGen-MultiTalk", "chinese-wav2vec2-base")
    image = tmp_path / "ref.png"
    Image.fromarray(stubs.scenario_image()).save(image)
    frames = []
    for root in (tiny_root, original):
        pipe = MultiTalkPipeline.from_pretrained(root, dtype=torch.bfloat16)
        job = pipe.prepare(
            image,
            [stubs.speech_like(0.4, 2)],
            "a man talks",
            options=GenerateOptions(size=(64, 96), steps=2, seed=3, mode="clip"),
        )
        frames.append(torch.cat(list(pipe.frames(job)), dim=1))
    assert torch.equal(*frames)


def test_components_found_in_a_hugging_face_cache_in_place(tiny_root, tmp_path, monkeypatch):
    """RunPod's cached model (the Wan repository) + a small volume with the MultiTalk layers and wav2vec2."""
    cache = tmp_path / "huggingface-cache" / "hub"
    snapshot = fake_hf_cache(cache, "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", tiny_root / DIFFUSERS)
    assert cached_snapshot("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", [cache]) == snapshot
    root = copy_parts(tiny_root, tmp_path / "volume", "MeiGen-MultiTalk", "chinese-wav2vec2-base")
    paths = resolve_model_paths(root, cache_dirs=[cache])
    assert paths.transformer == snapshot / "transformer" and paths.vae == snapshot / "vae"
    assert paths.multitalk == root / "MeiGen-MultiTalk" / "multitalk.safetensors"
    inventory = inspect_model_dir(root, cache_dirs=[cache])
    assert inventory.ok, inventory.problems
    assert not any(p.is_symlink() for p in root.rglob("*")), "nothing is copied or linked into the volume"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # how the worker finds it (or RunPod's fixed location)
    MultiTalkPipeline.from_pretrained(root, dtype=torch.float32)  # loads through the cache's symlinks


def test_hf_cache_env_and_runpod_location(tmp_path, monkeypatch):
    from multitalk_serve.engine.loading import paths as model_paths

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    (tmp_path / "a").mkdir()
    (tmp_path / "home" / "hub").mkdir(parents=True)
    monkeypatch.setattr(model_paths, "RUNPOD_HF_CACHE", tmp_path / "runpod")
    assert model_paths.hf_cache_dirs() == [tmp_path / "a", tmp_path / "home" / "hub"]
    (tmp_path / "runpod").mkdir()
    assert model_paths.hf_cache_dirs()[-1] == tmp_path / "runpod"


def test_manifest_names_the_components(tiny_root, tmp_path):
    root = copy_parts(
        tiny_root,
        tmp_path / "m",
        DIFFUSERS,
        "MeiGen-MultiTalk",
        "chinese-wav2vec2-base",
        "wan2.1-i2v-14b-480p-Q8_0.gguf",
    )
    (root / ".multitalk").mkdir()
    (root / ".multitalk" / "manifest.json").write_text(
        json.dumps({"components": {"transformer": "wan2.1-i2v-14b-480p-Q8_0.gguf"}})
    )
    assert resolve_model_paths(root, cache_dirs=[]).transformer == root / "wan2.1-i2v-14b-480p-Q8_0.gguf"


def test_several_ggufs_must_be_chosen(tiny_root, tmp_path):
    root = copy_parts(
        tiny_root,
        tmp_path / "m",
        "MeiGen-MultiTalk",
        "chinese-wav2vec2-base",
        "wan2.1-i2v-14b-480p-Q8_0.gguf",
        "wan2.1-i2v-14b-480p-Q4_K_M.gguf",
    )
    shutil.copytree(tiny_root / DIFFUSERS, root / DIFFUSERS, ignore=shutil.ignore_patterns("transformer"))
    with pytest.raises(CheckpointError, match="several GGUF transformers"):
        resolve_model_paths(root, cache_dirs=[])
    paths = resolve_model_paths(root, transformer=root / "wan2.1-i2v-14b-480p-Q4_K_M.gguf", cache_dirs=[])
    assert paths.transformer.name.endswith("Q4_K_M.gguf")
    shutil.rmtree(root / DIFFUSERS / "transformer", ignore_errors=True)
    (root / "wan2.1-i2v-14b-480p-Q4_K_M.gguf").unlink()
    assert resolve_model_paths(root, cache_dirs=[]).transformer.name.endswith("Q8_0.gguf")


def test_inventory_reports_widths_that_do_not_fit(tiny_root, parity_root):
    """The parity transformer expects 1280-wide CLIP and 12 x 768 wav2vec2 features; the tiny encoders make 64."""
    inventory = inspect_model_dir(
        tiny_root, transformer=parity_root / ORIGINAL, multitalk=parity_root / "MeiGen-MultiTalk", cache_dirs=[]
    )
    assert not inventory.ok
    text = " ".join(inventory.problems)
    assert "1280-wide CLIP features; CLIP makes 64" in text
    assert "12 x 768 wav2vec2 features, the wav2vec2 model makes 12 x 64" in text


def test_inventory_names_a_corrupt_encoder(tiny_root, tmp_path):
    root = copy_parts(tiny_root, tmp_path / "o", ORIGINAL, "MeiGen-MultiTalk", "chinese-wav2vec2-base")
    t5 = root / ORIGINAL / "models_t5_umt5-xxl-enc-bf16.pth"
    t5.write_bytes(t5.read_bytes()[: t5.stat().st_size // 2])
    clip = root / ORIGINAL / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    clip.unlink()
    inventory = inspect_model_dir(root, cache_dirs=[])
    reports = {c.name: c for c in inventory.components}
    assert "models_t5_umt5-xxl-enc-bf16.pth" in reports["text_encoder"].problem
    assert reports["image_encoder"].problem.startswith("image_encoder: not found")
    assert reports["vae"].problem is None and reports["transformer"].problem is None
    as_json = json.dumps(inventory.as_dict())
    assert '"ok": false' in as_json


def test_missing_directory():
    inventory = inspect_model_dir("/nonexistent/models", cache_dirs=[])
    assert inventory.problems == ["model directory does not exist: /nonexistent/models"]


def test_an_infinitetalk_only_folder_is_a_model_folder(tiny_root, tmp_path):
    """Wan base + wav2vec2 + InfiniteTalk, no MeiGen-MultiTalk/: found, checked, and the adapters listed."""
    root = copy_parts(tiny_root, tmp_path / "it", DIFFUSERS, "InfiniteTalk", "chinese-wav2vec2-base")
    single = root / "InfiniteTalk/single/infinitetalk.safetensors"
    multi = root / "InfiniteTalk/multi/infinitetalk.safetensors"
    paths = resolve_model_paths(root, cache_dirs=[])
    assert paths.multitalk is None
    assert paths.adapters() == {"infinitetalk-single": single, "infinitetalk-multi": multi}
    inventory = inspect_model_dir(root, cache_dirs=[])
    assert inventory.ok, inventory.problems
    reports = {c.name: c for c in inventory.components}
    assert reports["transformer"].problem is None and str(single) in inventory.files and str(multi) in inventory.files
    assert reports["infinitetalk_multi"].layout == "audio: infinitetalk-multi" and reports["infinitetalk_multi"].bytes
    assert "multitalk" not in reports
    assert resolve_model_paths(root, cache_dirs=[], adapters=["infinitetalk-multi"]).infinitetalk_multi == multi

    # the one-speaker file alone (as `download --models infinitetalk-single` leaves it), on the original layout
    only = copy_parts(tiny_root, tmp_path / "one", ORIGINAL, "chinese-wav2vec2-base")
    (only / "InfiniteTalk/single").mkdir(parents=True)
    shutil.copy2(single, only / "InfiniteTalk/single/infinitetalk.safetensors")
    inventory = inspect_model_dir(only, cache_dirs=[])
    assert inventory.ok, inventory.problems
    assert list(inventory.paths.adapters()) == ["infinitetalk-single"]


def test_a_missing_audio_model_is_named(tiny_root, tmp_path):
    root = copy_parts(tiny_root, tmp_path / "it", DIFFUSERS, "InfiniteTalk", "chinese-wav2vec2-base")
    with pytest.raises(CheckpointError) as info:
        resolve_model_paths(root, cache_dirs=[], adapters=["multitalk", "infinitetalk-single"])
    assert str(info.value).count("audio weights are not there") == 1
    assert f"expected {root}/MeiGen-MultiTalk/multitalk.safetensors (MeiGen-AI/MeiGen-MultiTalk)" in str(info.value)
    inventory = inspect_model_dir(root, cache_dirs=[], adapters=["multitalk"])
    assert inventory.problems[0].startswith("multitalk: the multitalk audio weights are not there")
    assert {c.name: c.problem for c in inventory.components}["transformer"] is None  # still checked, with InfiniteTalk
    with pytest.raises(CheckpointError, match="unknown audio model 'infinitetalk'"):
        resolve_model_paths(root, cache_dirs=[], adapters=["infinitetalk"])

    shutil.rmtree(root / "InfiniteTalk")  # no audio weights at all
    inventory = inspect_model_dir(root, cache_dirs=[])
    (problem,) = inventory.problems
    assert problem.startswith("transformer: no audio weights:")
    for expected in ("MeiGen-MultiTalk/multitalk.safetensors", "InfiniteTalk/single/infinitetalk.safetensors"):
        assert f"{root}/{expected}" in problem
