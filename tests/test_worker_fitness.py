"""Start-up checks name what is missing before anything loads."""

from __future__ import annotations

import shutil

import pytest

from multitalk_serve.engine.errors import CheckpointError
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.fitness import check_gpu_headroom, check_model_folder


def config_for(path) -> WorkerConfig:
    return WorkerConfig(model_path=path, volume_path=path, s3=None)


def test_complete_tiny_folder(tiny_root):
    files = check_model_folder(config_for(tiny_root))
    assert any(f.endswith("multitalk.safetensors") for f in files)


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        (
            ("MeiGen-MultiTalk", "InfiniteTalk"),
            "no audio weights: .* expected .*MeiGen-MultiTalk/multitalk.safetensors",
        ),
        ("chinese-wav2vec2-base", "wav2vec: not found, expected chinese-wav2vec2-base"),
        (
            "Wan2.1-I2V-14B-480P-Diffusers/transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "missing shard files",
        ),
        (
            "Wan2.1-I2V-14B-480P-Diffusers/text_encoder/model-00001-of-00002.safetensors",
            "missing shard files named in model.safetensors.index.json",
        ),
        ("chinese-wav2vec2-base/model.safetensors", "no model.safetensors"),
    ],
)
def test_missing_pieces_are_named(tiny_root, tmp_path, remove, message):
    root = tmp_path / "models"
    shutil.copytree(tiny_root, root)
    for part in (remove,) if isinstance(remove, str) else remove:
        target = root / part
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CheckpointError, match=message):
        check_model_folder(config_for(root))


def test_an_infinitetalk_only_folder_passes(tiny_root, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns("MeiGen-MultiTalk"))
    files = check_model_folder(config_for(root))
    assert any(f.endswith("single/infinitetalk.safetensors") for f in files)
    assert not any(f.endswith("multitalk.safetensors") for f in files)
    assert check_model_folder(config_for(root), adapters=["infinitetalk-single", "infinitetalk-multi"]) == files
    with pytest.raises(CheckpointError, match=r"multitalk audio weights are not there, expected .*MeiGen-MultiTalk/"):
        check_model_folder(config_for(root), adapters=["multitalk", "infinitetalk-multi"])


def test_every_problem_is_reported_at_once(tiny_root, tmp_path):
    """A diffusers-only folder missing its VAE and a text-encoder shard: both named in one message."""
    root = tmp_path / "models"
    # FlashTalk's folder would lend its .pth VAE: left out with the original layout, so only diffusers remains
    shutil.copytree(
        tiny_root, root, ignore=shutil.ignore_patterns("Wan2.1-I2V-14B-480P", "*.gguf", "SoulX-FlashTalk-14B")
    )
    shutil.rmtree(root / "Wan2.1-I2V-14B-480P-Diffusers/vae")
    (root / "Wan2.1-I2V-14B-480P-Diffusers/text_encoder/model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError) as info:
        check_model_folder(config_for(root))
    message = str(info.value)
    assert "vae: not found, expected the VAE (vae/ or Wan2.1_VAE.pth)" in message
    assert "text_encoder:" in message and "model-00002-of-00002.safetensors" in message


def test_gpu_headroom_is_skipped_on_cpu():
    import torch

    check_gpu_headroom(torch.device("cpu"))
