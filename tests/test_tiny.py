"""The tiny checkpoints are real checkpoints: each component loads with its own library, offline."""

from __future__ import annotations

import json

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
from transformers import (
    AutoTokenizer,
    CLIPVisionModelWithProjection,
    UMT5EncoderModel,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from multitalk_serve.tiny import DIFFUSERS_DIR, MULTITALK_DIR, ORIGINAL_DIR, TINY_DIMS, WAV2VEC_DIR


def test_original_layout_files(tiny_root):
    wan = tiny_root / ORIGINAL_DIR
    config = json.loads((wan / "config.json").read_text())
    assert config["_class_name"] == "WanModel" and config["model_type"] == "i2v"
    index = json.loads((wan / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        f"diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    ]
    assert "blocks.0.self_attn.q.weight" in index["weight_map"]
    mt_index = json.loads((tiny_root / MULTITALK_DIR / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert mt_index["weight_map"]["blocks.1.audio_cross_attn.kv_linear.weight"] == "multitalk.safetensors"
    assert mt_index["weight_map"]["blocks.1.self_attn.q.weight"] == index["weight_map"]["blocks.1.self_attn.q.weight"]


def test_diffusers_components_load_offline(tiny_root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tiny_root / DIFFUSERS_DIR
    index = json.loads((root / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    ids = tokenizer(
        ["A man talks to the camera."], padding="max_length", max_length=512, truncation=True, return_tensors="pt"
    )
    assert ids.input_ids.shape == (1, 512) and ids.input_ids[0, 0] != tokenizer.unk_token_id
    text_encoder = UMT5EncoderModel.from_pretrained(root / "text_encoder")
    assert text_encoder(ids.input_ids, ids.attention_mask).last_hidden_state.shape == (1, 512, TINY_DIMS.text_dim)
    clip = CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder")
    hidden = clip(torch.randn(1, 3, 224, 224), output_hidden_states=True).hidden_states[-2]
    assert hidden.shape == (1, 257, TINY_DIMS.image_dim)
    vae = AutoencoderKLWan.from_pretrained(root / "vae")
    latents = vae.encode(torch.randn(1, 3, 5, 64, 64)).latent_dist.mode()
    assert latents.shape == (1, 16, 2, 8, 8)
    scheduler = UniPCMultistepScheduler.from_pretrained(root / "scheduler")
    assert scheduler.config.prediction_type == "flow_prediction"


def test_wav2vec2_gives_twelve_layers_of_the_width_the_transformer_expects(tiny_root):
    path = tiny_root / WAV2VEC_DIR
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Wav2Vec2ForPreTraining"]
    Wav2Vec2FeatureExtractor.from_pretrained(path)
    model = Wav2Vec2Model.from_pretrained(path)  # a pre-training checkpoint, as TencentGameMate publishes
    out = model(torch.randn(1, 16000), output_hidden_states=True)
    assert len(out.hidden_states) == 1 + TINY_DIMS.audio_layers
    assert out.hidden_states[-1].shape[-1] == TINY_DIMS.audio_channels
