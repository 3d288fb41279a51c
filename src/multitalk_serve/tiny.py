"""Seeded random-weight models, tiny dimensions, written in the exact on-disk layouts of the published checkpoints.

Model weights cannot be downloaded everywhere (CI, this repository's sandboxes), so every loader is exercised on
these files instead: same file names, config keys, key names, shard indexes and GGUF tensor types as the real ones.
A tiny random model generates noise, not faces: it tests plumbing and numerics, not quality.

``write_tiny_models(root)`` produces::

    root/
      Wan2.1-I2V-14B-480P/             original layout (config.json, 3 shards + index; base weights only) and
                                        its encoders: models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/,
                                        models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth, Wan2.1_VAE.pth
                                        (the diffusers-layout encoders below, renamed back to the official names)
      MeiGen-MultiTalk/                 multitalk.safetensors + its replacement index
      InfiniteTalk/single/infinitetalk.safetensors   InfiniteTalk's audio weights (one speaker) and
      InfiniteTalk/multi/infinitetalk.safetensors    (two speakers): MultiTalk's keys and shapes, other values
      Wan2.1-I2V-14B-480P-Diffusers/   diffusers layout: model_index.json, transformer/ vae/ text_encoder/
                                        tokenizer/ image_encoder/ image_processor/ scheduler/
      wan2.1-i2v-14b-480p-Q8_0.gguf     community GGUF layout (base weights), Q8_0
      wan2.1-i2v-14b-480p-Q4_K_M.gguf   and a K-quant mix
      chinese-wav2vec2-base/            config.json, preprocessor_config.json, model.safetensors
      SoulX-FlashTalk-14B/              FlashTalk's layout: config.json (the official WanModel's config keys),
                                        2 shards + index holding the Wan keys AND the audio keys (its own values),
                                        and the original-layout encoders of Wan2.1-I2V-14B-480P/ (hard links)
      Kokoro-82M/                       text to speech: config.json, kokoro-v1_0.pth, voices/af_heart.pt, am_adam.pt
                                        (``tiny_speech``; written when the ``tts`` extra is installed)
      TINY.json                         what was written, with which dimensions and seed
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .engine.loading.adapters import AUDIO_ADAPTERS
from .engine.loading.gguf_quant import write_wan_gguf
from .engine.loading.layouts import (
    MULTITALK_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WanDims,
    multitalk_shapes,
    original_base_shapes,
    shard_name,
)
from .engine.loading.original_encoders import (
    CLIP_BLOCK_NAMES,
    CLIP_CHECKPOINT,
    T5_BLOCK_NAMES,
    T5_CHECKPOINT,
    T5_TOKENIZER,
    VAE_CHECKPOINT,
    VAE_INNER_NAMES,
    vae_config,
    vae_key,
    vae_prefixes,
)
from .engine.loading.paths import DIFFUSERS_DIR, FLASHTALK_DIR, MULTITALK_DIR, ORIGINAL_DIR, WAV2VEC_DIR

# Transformer dims of the tiny model: 256-wide with 128-wide heads (as the real model), so RoPE splits the
# head exactly as at full size and K-quants have 256-long rows. Audio features: 12 wav2vec2 layers of 64.
TINY_DIMS = WanDims(
    dim=256,
    ffn_dim=512,
    freq_dim=256,
    text_dim=64,
    num_heads=2,
    num_layers=2,
    image_dim=64,
    audio_channels=64,
    audio_intermediate_dim=32,
    audio_output_dim=32,
    audio_context_tokens=4,
)
# The official code hard-codes 1280-wide CLIP features and 12 x 768 audio features: the parity fixtures use these.
PARITY_DIMS = TINY_DIMS.replace(image_dim=1280, audio_channels=768)

GGUF_NAMES = {"Q8_0": "wan2.1-i2v-14b-480p-Q8_0.gguf", "Q4_K_M": "wan2.1-i2v-14b-480p-Q4_K_M.gguf"}
TINY_TEXT_ENCODER = {"d_model": 64, "d_kv": 32, "d_ff": 128, "num_layers": 2, "num_heads": 2}
TINY_WAV2VEC = {"hidden_size": 64, "num_hidden_layers": 12, "num_attention_heads": 2, "intermediate_size": 128}


def _seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little")


def random_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A deterministic float32 tensor for ``name``: independent of generation order and of other tensors.

    Drawn from NumPy's legacy ``RandomState``, whose stream NumPy keeps stable across releases, so committed
    fixtures made from these weights stay valid.
    """
    noise = torch.from_numpy(np.random.RandomState(_seed(seed, name)).standard_normal(shape).astype(np.float32))
    leaf = name.rsplit(".", 1)[-1]
    if "modulation" in name:
        return noise / math.sqrt(shape[-1])
    if leaf == "bias":
        return noise * 0.02
    if len(shape) == 1:  # norm weights
        return 1.0 + 0.1 * noise
    fan_in = math.prod(shape[1:])
    return noise / math.sqrt(fan_in)


def transformer_tensors(dims: WanDims, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base, audio) state dicts with official key names, in float32."""
    base = {k: random_tensor(k, s, seed) for k, s in original_base_shapes(dims).items()}
    audio = {k: random_tensor(k, s, seed) for k, s in multitalk_shapes(dims).items()}
    return base, audio


def adapter_tensors(dims: WanDims, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The audio state dict of the adapter ``name`` (``AUDIO_ADAPTERS``), official key names, float32.

    Every adapter has the MultiTalk key set and shapes (``multitalk_shapes``: the published ``infinitetalk.safetensors``
    files hold exactly those 330 tensors at 14B, in float32, as ``multitalk.safetensors`` does); the values are
    drawn per adapter, so switching adapters changes the output. ``multitalk`` is ``transformer_tensors``' audio.
    """
    if name == "multitalk":
        return transformer_tensors(dims, seed)[1]
    return {k: random_tensor(f"{name}:{k}", s, seed) for k, s in multitalk_shapes(dims).items()}


def write_infinitetalk_layout(root: Path, dims: WanDims, seed: int = 0) -> dict[str, Path]:
    """``InfiniteTalk/single/infinitetalk.safetensors`` and ``InfiniteTalk/multi/infinitetalk.safetensors``, as
    ``huggingface-cli download MeiGen-AI/InfiniteTalk --local-dir weights/InfiniteTalk`` lays them out."""
    paths = {}
    for name in ("infinitetalk-single", "infinitetalk-multi"):
        path = AUDIO_ADAPTERS[name].local_path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(adapter_tensors(dims, name, seed), path, metadata={"format": "pt"})
        paths[name] = path
    return paths


def _write_sharded(directory: Path, tensors: dict[str, torch.Tensor], shards: int) -> dict[str, str]:
    """Write ``tensors`` as ``diffusion_pytorch_model-0000N-of-0000M.safetensors`` + index; return the weight map."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = list(tensors)
    per = math.ceil(len(keys) / shards)
    weight_map = {}
    for i in range(shards):
        name = shard_name(i + 1, shards)
        part = {k: tensors[k].contiguous() for k in keys[i * per : (i + 1) * per]}
        save_file(part, directory / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(directory / WEIGHTS_INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return weight_map


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_original_layout(root: Path, dims: WanDims, seed: int = 0, shards: int = 3) -> None:
    """``Wan2.1-I2V-14B-480P`` (base only, as downloaded), ``MeiGen-MultiTalk`` and ``InfiniteTalk`` next to it."""
    base, audio = transformer_tensors(dims, seed)
    wan = root / ORIGINAL_DIR
    base_map = _write_sharded(wan, base, shards)
    _write_json(wan / "config.json", dims.original_config())
    mt = root / MULTITALK_DIR
    mt.mkdir(parents=True, exist_ok=True)
    save_file(audio, mt / MULTITALK_WEIGHTS_NAME, metadata={"format": "pt"})
    # MultiTalk's replacement index: base keys -> the base shards, audio keys -> multitalk.safetensors.
    total = sum(t.numel() * t.element_size() for t in (*base.values(), *audio.values()))
    weight_map = base_map | dict.fromkeys(audio, MULTITALK_WEIGHTS_NAME)
    _write_json(mt / WEIGHTS_INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_infinitetalk_layout(root, dims, seed)


def flashtalk_config(dims: WanDims) -> dict:
    """``SoulX-FlashTalk-14B/config.json``: what the official ``WanModel`` (InfiniteTalk's ``multitalk_model.py`` as
    FlashTalk ships it, a diffusers ``ConfigMixin``) registers: its ``__init__`` arguments except ``ignore_for_config``
    (``patch_size``, ``cross_attn_norm``, ``qk_norm``, ``text_dim``, ``window_size``), with the audio ones. The keys
    are checked against the official class in ``tests/fixtures/official/flashtalk_layout.json``."""
    return {
        "_class_name": "WanModel",
        "_diffusers_version": "0.34.0",  # the minimum of its requirements.txt; not read by any loader
        "audio_window": dims.audio_window,
        "context_tokens": dims.audio_context_tokens,
        "dim": dims.dim,
        "eps": dims.eps,
        "ffn_dim": dims.ffn_dim,
        "freq_dim": dims.freq_dim,
        "in_dim": dims.in_dim,
        "intermediate_dim": dims.audio_intermediate_dim,
        "model_type": "i2v",
        "norm_input_visual": True,
        "norm_output_audio": True,
        "num_heads": dims.num_heads,
        "num_layers": dims.num_layers,
        "out_dim": dims.out_dim,
        "output_dim": dims.audio_output_dim,
        "text_len": dims.text_len,
        "vae_scale": dims.vae_scale,
        "weight_init": True,
    }


def flashtalk_tensors(dims: WanDims, seed: int = 0) -> dict[str, torch.Tensor]:
    """FlashTalk's transformer state dict (official key names: the Wan base keys and the audio keys), float32; its
    own values (the published model is trained on from InfiniteTalk, every weight differs from the Wan base)."""
    shapes = original_base_shapes(dims) | multitalk_shapes(dims)
    return {k: random_tensor(f"flashtalk:{k}", s, seed) for k, s in shapes.items()}


def write_flashtalk_transformer(out: Path, dims: WanDims, seed: int = 0, shards: int = 2) -> Path:
    """FlashTalk's transformer files in ``out``: ``config.json`` and ``shards`` shards + index."""
    _write_sharded(out, flashtalk_tensors(dims, seed), shards)
    _write_json(out / "config.json", flashtalk_config(dims))
    return out


def write_flashtalk_layout(root: Path, dims: WanDims, seed: int = 0, shards: int = 2) -> Path:
    """``SoulX-FlashTalk-14B`` as ``huggingface-cli download Soul-AILab/SoulX-FlashTalk-14B`` lays it out: the
    transformer in ``shards`` shards + index and the original-layout encoders, hard-linked (copied where links are
    not possible) from ``Wan2.1-I2V-14B-480P/`` (``write_original_encoders`` first)."""
    import os
    import shutil

    out = write_flashtalk_transformer(root / FLASHTALK_DIR, dims, seed, shards)
    wan = root / ORIGINAL_DIR
    for name in (T5_CHECKPOINT, CLIP_CHECKPOINT, VAE_CHECKPOINT):
        try:
            os.link(wan / name, out / name)
        except OSError:
            shutil.copy2(wan / name, out / name)
    shutil.copytree(wan / T5_TOKENIZER, out / T5_TOKENIZER, copy_function=shutil.copy2, dirs_exist_ok=True)
    return out


def link_multitalk_into_original(root: Path) -> Path:
    """Apply MultiTalk README's "link" step: the base index is set aside, MultiTalk's index and weights linked in."""
    wan, mt = root / ORIGINAL_DIR, root / MULTITALK_DIR
    index = wan / WEIGHTS_INDEX_NAME
    if not index.is_symlink():
        index.rename(wan / (WEIGHTS_INDEX_NAME + "_old"))
        index.symlink_to((mt / WEIGHTS_INDEX_NAME).resolve())
    link = wan / MULTITALK_WEIGHTS_NAME
    if not link.exists():
        link.symlink_to((mt / MULTITALK_WEIGHTS_NAME).resolve())
    return wan


def write_gguf_layouts(root: Path, dims: WanDims, seed: int = 0) -> dict[str, Path]:
    base, _ = transformer_tensors(dims, seed)
    arrays = {k: v.numpy() for k, v in base.items()}
    paths = {}
    for file_type, name in GGUF_NAMES.items():
        write_wan_gguf(root / name, arrays, file_type)
        paths[file_type] = root / name
    return paths


def _tiny_tokenizer():
    """A T5-style (Metaspace + Unigram) tokenizer over characters and a few hundred common pieces, built offline."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    words = [
        "the",
        "a",
        "an",
        "and",
        "of",
        "to",
        "in",
        "is",
        "on",
        "with",
        "at",
        "for",
        "by",
        "from",
        "as",
        "it",
        "this",
        "that",
        "man",
        "woman",
        "person",
        "people",
        "talk",
        "talking",
        "speaks",
        "speaking",
        "smile",
        "smiling",
        "face",
        "mouth",
        "eyes",
        "hair",
        "camera",
        "room",
        "car",
        "studio",
        "light",
        "natural",
        "casual",
        "conversation",
        "close",
        "up",
        "video",
        "frame",
        "background",
        "bright",
        "gray",
        "quality",
        "low",
        "high",
        "static",
        "blurred",
        "details",
    ]
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?;:'\"-()[]/&%$#@*+=")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -3.0 - 0.01 * i) for i, w in enumerate(words)]
    vocab += [(c, -5.0) for c in chars] + [("▁" + c, -5.5) for c in chars]
    tok = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)
    fast.model_max_length = 512
    return fast


def write_diffusers_layout(root: Path, dims: WanDims, seed: int = 0) -> Path:
    """``Wan2.1-I2V-14B-480P-Diffusers``: every component, tiny, with the published folder and file names."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        UMT5Config,
        UMT5EncoderModel,
    )

    out = root / DIFFUSERS_DIR
    base, _ = transformer_tensors(dims, seed)
    converted = convert_wan_transformer_to_diffusers(dict(base))
    _write_sharded(out / "transformer", converted, shards=2)
    _write_json(out / "transformer" / "config.json", dims.diffusers_config())

    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
    )
    _randomize(vae, seed + 1)
    vae.save_pretrained(out / "vae")

    tokenizer = _tiny_tokenizer()
    tokenizer.save_pretrained(out / "tokenizer")
    te_config = UMT5Config(
        vocab_size=len(tokenizer),
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        tie_word_embeddings=False,
        **TINY_TEXT_ENCODER,
    )
    if te_config.d_model != dims.text_dim:
        raise ValueError("tiny text encoder width must equal the transformer's text_dim")
    torch.manual_seed(seed + 2)
    text_encoder = UMT5EncoderModel(te_config)
    _randomize(text_encoder, seed + 2)
    text_encoder.save_pretrained(out / "text_encoder", max_shard_size="300KB")

    clip_config = CLIPVisionConfig(
        hidden_size=dims.image_dim,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=224,
        patch_size=14,
        projection_dim=32,
        hidden_act="gelu",  # as the published image_encoder/config.json (open-clip ViT-H/14 uses exact GELU)
    )
    torch.manual_seed(seed + 3)
    image_encoder = CLIPVisionModelWithProjection(clip_config)
    _randomize(image_encoder, seed + 3)
    image_encoder.save_pretrained(out / "image_encoder")
    CLIPImageProcessor(
        crop_size={"height": 224, "width": 224},
        size={"shortest_edge": 224},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    ).save_pretrained(out / "image_processor")

    UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    ).save_pretrained(out / "scheduler")
    _write_json(
        out / "model_index.json",
        {
            "_class_name": "WanImageToVideoPipeline",
            "_diffusers_version": "0.33.0.dev0",
            "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
            "image_processor": ["transformers", "CLIPImageProcessor"],
            "scheduler": ["diffusers", "UniPCMultistepScheduler"],
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "tokenizer": ["transformers", "T5TokenizerFast"],
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "vae": ["diffusers", "AutoencoderKLWan"],
        },
    )
    return out


def write_wav2vec2_layout(root: Path, dims: WanDims, seed: int = 0) -> Path:
    """``TencentGameMate/chinese-wav2vec2-base``: a Wav2Vec2ForPreTraining checkpoint (12 layers) + preprocessor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    if TINY_WAV2VEC["hidden_size"] != dims.audio_channels or TINY_WAV2VEC["num_hidden_layers"] != dims.audio_layers:
        raise ValueError("tiny wav2vec2 must produce the audio features the tiny transformer expects")
    out = root / WAV2VEC_DIR
    config = Wav2Vec2Config(
        conv_dim=(32,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=False,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
        num_codevectors_per_group=8,
        num_codevector_groups=2,
        codevector_dim=32,
        proj_codevector_dim=32,
        vocab_size=32,
        architectures=["Wav2Vec2ForPreTraining"],
        **TINY_WAV2VEC,
    )
    torch.manual_seed(seed + 4)
    model = Wav2Vec2ForPreTraining(config)
    _randomize(model, seed + 4)
    model.save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(out)
    return out


def _load_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _original_t5(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``UMT5EncoderModel`` names -> Wan ``T5Encoder`` names, in bf16 (as ``models_t5_umt5-xxl-enc-bf16.pth``)."""
    back = {v: k for k, v in T5_BLOCK_NAMES.items()}
    out = {"token_embedding.weight": tensors["shared.weight"]}
    blocks = sorted({int(k.split(".")[2]) for k in tensors if k.startswith("encoder.block.")})
    for i in blocks:
        for hf, wan in back.items():
            out[f"blocks.{i}.{wan}"] = tensors[f"encoder.block.{i}.{hf}"]
    out["norm.weight"] = tensors["encoder.final_layer_norm.weight"]
    return {k: v.to(torch.bfloat16).contiguous() for k, v in out.items()}


def _original_clip(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CLIPVisionModelWithProjection`` names -> the ``visual.*`` part of Wan's ``XLMRobertaCLIP`` (fp32); the
    text tower is left out (MultiTalk never loads it), ``log_scale`` kept."""
    v = {k.removeprefix("vision_model."): t for k, t in tensors.items()}
    out = {
        "visual.patch_embedding.weight": v["embeddings.patch_embedding.weight"],
        "visual.cls_embedding": v["embeddings.class_embedding"].reshape(1, 1, -1),
        "visual.pos_embedding": v["embeddings.position_embedding.weight"][None],
        "visual.pre_norm.weight": v["pre_layrnorm.weight"],
        "visual.pre_norm.bias": v["pre_layrnorm.bias"],
    }
    back = {hf: wan for wan, hf in CLIP_BLOCK_NAMES.items()}
    layers = sorted({int(k.split(".")[2]) for k in v if k.startswith("encoder.layers.")})
    for i in layers:
        pre = f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            qkv = [v[f"{pre}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"visual.transformer.{i}.attn.to_qkv.{kind}"] = torch.cat(qkv)
            for hf, wan in back.items():
                out[f"visual.transformer.{i}.{wan}.{kind}"] = v[f"{pre}{hf}.{kind}"]
    out["visual.post_norm.weight"] = v["post_layernorm.weight"]
    out["visual.post_norm.bias"] = v["post_layernorm.bias"]
    out["visual.head"] = tensors["visual_projection.weight"].t()
    out["log_scale"] = torch.tensor(math.log(1 / 0.07))
    return {k: t.float().contiguous() for k, t in out.items()}


def _original_vae(tensors: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """``AutoencoderKLWan`` names -> Wan ``WanVAE_`` names (fp32)."""
    back = {new: old for old, new in vae_prefixes(config)}
    inner = {new: old for old, new in VAE_INNER_NAMES.items()}
    out = {}
    for key, value in tensors.items():
        name = vae_key(key, back, inner)
        if name is None:
            raise ValueError(f"no original name for VAE tensor {key}")
        out[name] = value.float().contiguous()
    return out


def write_original_encoders(root: Path) -> Path:
    """The original layout's encoder checkpoints, made from the diffusers-layout tiny encoders (same weights)."""
    from collections import OrderedDict

    from transformers import AutoTokenizer

    src, out = root / DIFFUSERS_DIR, root / ORIGINAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    torch.save(OrderedDict(_original_t5(_load_folder(src / "text_encoder"))), out / T5_CHECKPOINT)
    torch.save(OrderedDict(_original_clip(_load_folder(src / "image_encoder"))), out / CLIP_CHECKPOINT)
    vae = _load_folder(src / "vae")
    config = {k: v for k, v in json.loads((src / "vae" / "config.json").read_text()).items() if not k.startswith("_")}
    original = _original_vae(vae, config)
    from .engine.loading.weights import TensorRef

    shapes = {k: TensorRef(out, k, 0, 0, v.dtype, tuple(v.shape)) for k, v in original.items()}
    if any(vae_config(shapes)[k] != config[k] for k in ("base_dim", "z_dim", "dim_mult", "num_res_blocks")):
        raise ValueError("the tiny VAE does not round-trip through the original layout")
    torch.save(OrderedDict(original), out / VAE_CHECKPOINT)
    AutoTokenizer.from_pretrained(src / "tokenizer").save_pretrained(out / T5_TOKENIZER)
    return out


SPEED_LORA_NAME = "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank4_bf16.safetensors"
# Linears a lightx2v / FusionX LoRA adapts (original key names), besides every block's attention and FFN.
_LORA_GLOBAL = (
    "head.head",
    "text_embedding.0",
    "text_embedding.2",
    "time_embedding.0",
    "time_embedding.2",
    "time_projection.1",
    "img_emb.proj.1",
    "img_emb.proj.3",
)
_LORA_BLOCK = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.k",
    "cross_attn.v",
    "cross_attn.o",
    "cross_attn.k_img",
    "cross_attn.v_img",
    "ffn.0",
    "ffn.2",
)
_LORA_NORMS = (
    "self_attn.norm_q",
    "self_attn.norm_k",
    "cross_attn.norm_q",
    "cross_attn.norm_k",
    "cross_attn.norm_k_img",
    "norm3",
)


def speed_lora_tensors(dims: WanDims, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A step-distillation LoRA in the layout of the published lightx2v / FusionX files (float32 here): keys
    ``diffusion_model.<original name>.lora_down.weight`` ``[rank, in]``, ``.lora_up.weight`` ``[out, rank]``,
    ``.alpha`` (= rank), ``.diff_b`` bias deltas, ``.diff`` norm deltas (zero, as in the published files) and the
    per-block modulation delta ``blocks.N.diff_m`` (zero)."""
    shapes = original_base_shapes(dims)
    targets = list(_LORA_GLOBAL) + [f"blocks.{i}.{n}" for i in range(dims.num_layers) for n in _LORA_BLOCK]
    out: dict[str, torch.Tensor] = {}
    for name in targets:
        rows, cols = shapes[f"{name}.weight"]
        key = f"diffusion_model.{name}"
        out[f"{key}.lora_down.weight"] = random_tensor(f"lora:{name}.down", (rank, cols), seed)
        out[f"{key}.lora_up.weight"] = 0.5 * random_tensor(f"lora:{name}.up", (rows, rank), seed)
        out[f"{key}.alpha"] = torch.tensor(float(rank))
        out[f"{key}.diff_b"] = 0.01 * random_tensor(f"lora:{name}.diff_b", (rows, 1), seed).flatten()
    for i in range(dims.num_layers):
        for norm in _LORA_NORMS:
            out[f"diffusion_model.blocks.{i}.{norm}.diff"] = torch.zeros(shapes[f"blocks.{i}.{norm}.weight"])
        out[f"diffusion_model.blocks.{i}.norm3.diff_b"] = torch.zeros(shapes[f"blocks.{i}.norm3.bias"])
        out[f"diffusion_model.blocks.{i}.diff_m"] = torch.zeros(shapes[f"blocks.{i}.modulation"])
    return out


def write_speed_lora(root: Path, dims: WanDims, seed: int = 0, rank: int = 4) -> Path:
    """The tiny speed LoRA as a bf16 safetensors file (the published ones are bf16)."""
    path = root / SPEED_LORA_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in speed_lora_tensors(dims, rank, seed).items()}
    save_file(tensors, str(path))
    return path


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Replace library default inits (often zeros or ones) by deterministic non-trivial values."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(random_tensor(name, tuple(p.shape), seed).to(p.dtype))


def write_tiny_models(root: str | Path, seed: int = 0, dims: WanDims = TINY_DIMS) -> dict:
    """Write every tiny layout under ``root`` (see module docstring) and return the manifest."""
    import transformers

    transformers.utils.logging.set_verbosity_error()  # no progress bars or torchvision notices for tiny files
    transformers.utils.logging.disable_progress_bar()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_original_layout(root, dims, seed)
    write_diffusers_layout(root, dims, seed)
    write_original_encoders(root)
    write_flashtalk_layout(root, dims, seed)
    gguf = write_gguf_layouts(root, dims, seed)
    write_wav2vec2_layout(root, dims, seed)
    write_speed_lora(root, dims, seed)
    kokoro = _write_kokoro(root, seed)
    manifest = {
        "what": "seeded random-weight MultiTalk / InfiniteTalk models in the published layouts; they generate noise",
        "seed": seed,
        "dims": asdict(dims),
        "original": ORIGINAL_DIR,
        "multitalk": f"{MULTITALK_DIR}/{MULTITALK_WEIGHTS_NAME}",
        "infinitetalk": {
            n: str(AUDIO_ADAPTERS[n].local_path(".")) for n in ("infinitetalk-single", "infinitetalk-multi")
        },
        "diffusers": DIFFUSERS_DIR,
        "gguf": {k: p.name for k, p in gguf.items()},
        "wav2vec2": WAV2VEC_DIR,
        "speed_lora": SPEED_LORA_NAME,
        "flashtalk": FLASHTALK_DIR,
        "kokoro": kokoro,
    }
    _write_json(root / "TINY.json", manifest)
    return manifest


def _write_kokoro(root: Path, seed: int) -> str | None:
    """Tiny Kokoro-82M (``tiny_speech``) if the ``kokoro`` package (the ``tts`` extra) is installed, else None."""
    import importlib.util

    if importlib.util.find_spec("kokoro") is None:
        return None
    from .tiny_speech import write_kokoro_layout

    return write_kokoro_layout(root, seed).name


def fingerprint(tensors: dict[str, torch.Tensor]) -> float:
    """A cheap checksum (sum of |values| in float64), to notice if seeded generation ever changes."""
    return float(sum(t.double().abs().sum() for t in tensors.values()))
