"""The ``realtime`` profile (SoulX-FlashTalk-14B + chinese-wav2vec2-base) against a fake Hugging Face Hub serving the
tiny FlashTalk folder in its published layout: fetched as published, verified whatever the shard count, beside a
Wan profile in one volume; sizes from parameter counts (the transformer's an estimate) within a 100 GB volume."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fake_hub import FakeHub
from multitalk_serve.cli import main as cli
from multitalk_serve.engine.loading.inventory import inspect_model_dir
from multitalk_serve.engine.loading.layouts import WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from multitalk_serve.engine.loading.paths import FLASHTALK_DIR, resolve_model_paths
from multitalk_serve.engine.pipeline.generate import MultiTalkPipeline
from multitalk_serve.provision import profiles
from multitalk_serve.provision.download import Downloader
from multitalk_serve.provision.profiles import (
    FLASHTALK_REPO,
    MULTITALK_REPO,
    ORIGINAL_REPO,
    PROFILES,
    WAV2VEC_REPO,
    estimate,
    parse_models,
    profile,
    profile_names,
    realtime_table,
    with_speed_lora,
)
from multitalk_serve.provision.verify import verify_model_dir
from multitalk_serve.tiny import TINY_DIMS, write_flashtalk_transformer

PROVISIONING_DOC = Path(__file__).parents[1] / "docs" / "provisioning.md"
NOT_FETCHED = {"README.md": b"# SoulX-FlashTalk-14B\n", "xlm-roberta-large/tokenizer.json": b"{}"}


def tree(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def publish_wav2vec(hub: FakeHub, tiny: Path) -> None:
    w2v = tiny / "chinese-wav2vec2-base"
    configs = {"config.json": w2v / "config.json", "preprocessor_config.json": w2v / "preprocessor_config.json"}
    hub.add_repo(WAV2VEC_REPO, configs)
    hub.add_repo(WAV2VEC_REPO, configs | {"model.safetensors": w2v / "model.safetensors"}, revision="refs/pr/1")


def flashtalk_repo(tiny: Path, folder: Path | None = None) -> dict:
    """The tiny FlashTalk folder (or ``folder``'s transformer files with the tiny folder's encoders) as a repo."""
    files = tree(tiny / FLASHTALK_DIR)
    if folder is not None:
        files = {k: v for k, v in files.items() if not k.startswith(("diffusion_pytorch_model", "config.json"))}
        files |= tree(folder)
    return files | NOT_FETCHED


@pytest.fixture(scope="module")
def hub(tiny_root):
    with FakeHub() as hub:
        hub.add_repo(FLASHTALK_REPO, flashtalk_repo(tiny_root))
        publish_wav2vec(hub, tiny_root)
        hub.add_repo(ORIGINAL_REPO, tree(tiny_root / "Wan2.1-I2V-14B-480P"))
        hub.add_repo(MULTITALK_REPO, tree(tiny_root / "MeiGen-MultiTalk"))
        yield hub
        assert not hub.errors, hub.errors


@pytest.fixture(autouse=True)
def clean(hub, monkeypatch):
    hub.clear_faults()
    hub.clear_requests()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_realtime_profile_fetches_flashtalk_as_published_and_verifies(hub, tiny_root, tmp_path):
    dest = tmp_path / "models"
    report = Downloader(dest, profile("realtime"), cache_dirs=[], log=[].append).run()
    published = tree(tiny_root / FLASHTALK_DIR)
    assert report.files == report.fetched == len(published) + 3 and report.converted == 0 and not report.failures
    for name, path in published.items():
        assert sha256(dest / FLASHTALK_DIR / name) == sha256(path), name
    assert (
        not (dest / FLASHTALK_DIR / "README.md").exists() and not (dest / FLASHTALK_DIR / "xlm-roberta-large").exists()
    )
    manifest = json.loads((dest / ".multitalk/manifest.json").read_text())
    assert manifest["profile"] == "realtime"
    assert manifest["components"]["flashtalk"] == FLASHTALK_DIR and "transformer" not in manifest["components"]
    assert manifest["components"]["text_encoder"] == f"{FLASHTALK_DIR}/models_t5_umt5-xxl-enc-bf16.pth"
    assert manifest["components"]["wav2vec"] == "chinese-wav2vec2-base"
    result = verify_model_dir(dest, hashes=True, cache_dirs=[], adapters="flashtalk")
    assert result.ok, result.all_problems
    layouts = {c.name: c.layout for c in result.inventory.components}
    assert layouts["transformer"] == "original" and layouts["flashtalk"] == "audio: flashtalk"
    paths = resolve_model_paths(dest, cache_dirs=[])
    assert paths.transformer == paths.flashtalk == dest / FLASHTALK_DIR
    assert cli(["verify", "--dest", str(dest), "--models", "flashtalk"]) == 0  # the CLI's verify knows the model
    # a rerun keeps everything
    hub.clear_requests()
    again = Downloader(dest, profile("realtime"), cache_dirs=[], log=[].append).run()
    assert again.fetched == 0 and again.kept == report.files
    # and the folder loads as FlashTalk by default (the only transformer there)
    pipe = MultiTalkPipeline.from_pretrained(dest, dtype=torch.float32)
    assert pipe.adapter == "flashtalk" and pipe.transformer.audio_proj.norm_fp32


def unsharded(tiny_root: Path, out: Path) -> Path:
    """The tiny FlashTalk transformer as one ``diffusion_pytorch_model.safetensors`` (no index)."""
    folder = tiny_root / FLASHTALK_DIR
    tensors = {}
    for shard in sorted(folder.glob("diffusion_pytorch_model-*.safetensors")):
        tensors.update(load_file(shard))
    out.mkdir(parents=True)
    save_file(tensors, out / WEIGHTS_NAME, metadata={"format": "pt"})
    shutil.copy2(folder / "config.json", out / "config.json")
    return out


@pytest.mark.parametrize("layout", ["3 shards", "unsharded"])
def test_verification_reads_the_index_whatever_the_shard_count(tiny_root, tmp_path, monkeypatch, layout):
    if layout == "unsharded":
        files = unsharded(tiny_root, tmp_path / "published")
    else:
        files = write_flashtalk_transformer(tmp_path / "published", TINY_DIMS, seed=0, shards=3)
    with FakeHub() as hub:
        hub.add_repo(FLASHTALK_REPO, flashtalk_repo(tiny_root, files))
        publish_wav2vec(hub, tiny_root)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        dest = tmp_path / "models"
        report = Downloader(dest, profile("realtime"), cache_dirs=[], log=[].append).run()
        assert not report.failures and not hub.errors
    folder = dest / FLASHTALK_DIR
    weights = sorted(p.name for p in folder.glob("diffusion_pytorch_model*"))
    if layout == "unsharded":
        assert weights == [WEIGHTS_NAME]
    else:
        assert weights == [f"diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)] + [
            WEIGHTS_INDEX_NAME
        ]
    result = verify_model_dir(dest, hashes=True, cache_dirs=[], adapters=["flashtalk"])
    assert result.ok, result.all_problems
    if layout == "3 shards":  # a shard gone: named by the manifest and by the index
        (folder / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
        result = verify_model_dir(dest, cache_dirs=[])
        assert not result.ok
        assert any("00002-of-00003.safetensors: missing" in p for p in result.all_problems)
        assert any(p.startswith("transformer:") and "00002-of-00003" in p for p in result.all_problems)


def test_realtime_beside_a_wan_profile_in_one_volume(hub, tmp_path):
    dest = tmp_path / "models"
    Downloader(dest, PROFILES["official"], cache_dirs=[], log=[].append).run()
    Downloader(dest, profile("realtime"), cache_dirs=[], log=[].append).run()
    paths = resolve_model_paths(dest, cache_dirs=[])
    assert paths.transformer == dest / "Wan2.1-I2V-14B-480P"  # the adapters' base, not FlashTalk's transformer
    assert paths.flashtalk == dest / FLASHTALK_DIR and list(paths.adapters()) == ["multitalk"]
    result = verify_model_dir(dest, cache_dirs=[], adapters=["multitalk", "flashtalk"])
    assert result.ok, result.all_problems
    assert inspect_model_dir(dest, cache_dirs=[]).ok


def test_realtime_sizes_fit_the_volume_and_are_marked_estimates():
    e = estimate("realtime")
    base, audio = profiles.transformer_params()
    assert e.models == ("flashtalk",) and profile("realtime").models == ("flashtalk",)
    assert e.transformer_gb == pytest.approx((base + audio) * 2 / 1e9) == pytest.approx(37.764, abs=1e-3)
    assert round(e.download_gb, 1) == round(e.disk_gb, 1) == round(e.peak_gb, 1) == 54.8  # stored as published
    assert e.encoders_gb == estimate("official").encoders_gb and e.adapter_host_gb == 0
    assert e.disk_gb < profiles.VOLUME_GB
    # were the shards float32 (the Hub's dtype could not be read), it would still fit
    assert e.disk_gb + e.transformer_gb < profiles.VOLUME_GB
    assert profiles.FLASHTALK_BYTES_PER_PARAM == 2
    assert realtime_table() in PROVISIONING_DOC.read_text(), "docs/provisioning.md's realtime table is stale"
    assert "(est.)" in realtime_table()


def test_realtime_is_a_profile_of_its_own():
    assert profile_names() == (*PROFILES, "realtime") and "realtime" not in PROFILES
    assert parse_models("flashtalk") == ("flashtalk",) and parse_models("all") == profiles.AUDIO_MODELS
    assert profile("realtime", "flashtalk") == profile("realtime") == profile("realtime", None)
    with pytest.raises(ValueError, match=r"realtime profile fetches flashtalk .* needs a Wan profile"):
        profile("realtime", "multitalk")
    with pytest.raises(ValueError, match=r"flashtalk is a whole model with a profile of its own: --profile realtime"):
        profile("official", "multitalk,flashtalk")
    with pytest.raises(ValueError, match="no speed LoRA applies"):
        with_speed_lora(profile("realtime"))
    with pytest.raises(ValueError, match="the speed LoRA does not apply"):
        estimate("realtime", speed_lora=True)
    fetch = profile("realtime").fetches[0]
    assert (fetch.repo_id, fetch.folder, fetch.to_bf16) == (FLASHTALK_REPO, FLASHTALK_DIR, ())
    assert "diffusion_pytorch_model*" in fetch.include  # shards + index, or one file: no shard count assumed
