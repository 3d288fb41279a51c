"""The encoders of the original Wan2.1 layout (``Wan-AI/Wan2.1-I2V-14B-480P``), mapped onto the library models.

The original repository ships three PyTorch checkpoints next to the transformer shards, with no config files
(the official code hard-codes the architectures)::

    models_t5_umt5-xxl-enc-bf16.pth                         Wan ``T5Encoder`` (UMT5-XXL encoder), bf16
    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth  Wan ``XLMRobertaCLIP``; only ``visual.*`` is used
    Wan2.1_VAE.pth                                          Wan ``WanVAE_``
    google/umt5-xxl/                                        the T5 tokenizer

This module turns their tensor indexes into the names of transformers' ``UMT5EncoderModel`` and
``CLIPVisionModel`` and diffusers' ``AutoencoderKLWan``, and reads each architecture off the tensor shapes. Only
names and views change (the fused CLIP ``to_qkv`` is split into row ranges); no tensor data is read here.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import CheckpointError
from .weights import TensorRef

T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_CHECKPOINT = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
VAE_CHECKPOINT = "Wan2.1_VAE.pth"
T5_TOKENIZER = "google/umt5-xxl"
# The official CLIP transform's normalisation (no preprocessor config in this layout).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
CLIP_HEAD_DIM = 80  # ViT-H/14: 1280 wide, 16 heads (not visible in the shapes)
TEST_HEAD_DIM = 32  # widths that are not a multiple of 80 are the tiny test models' (32-wide heads)


def _need(refs: dict[str, TensorRef], key: str, where: str) -> TensorRef:
    if key not in refs:
        raise CheckpointError(f"{where}: no tensor {key!r}; is this the right checkpoint?")
    return refs[key]


def _where(refs: dict[str, TensorRef]) -> str:
    return str(next(iter(refs.values())).path) if refs else "empty checkpoint"


# --- T5 (UMT5-XXL encoder) ------------------------------------------------------------------------------------------
T5_BLOCK_NAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # gelu(gate(x)) * fc1(x), as UMT5's gated-gelu
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def t5_config(refs: dict[str, TensorRef]) -> dict[str, Any]:
    """``UMT5Config`` arguments read off the Wan T5 encoder's shapes."""
    where = _where(refs)
    vocab, d_model = _need(refs, "token_embedding.weight", where).shape
    buckets, heads = _need(refs, "blocks.0.pos_embedding.embedding.weight", where).shape
    layers = len({int(m.group(1)) for k in refs if (m := re.match(r"blocks\.(\d+)\.", k))})
    return {
        "vocab_size": vocab,
        "d_model": d_model,
        "d_kv": _need(refs, "blocks.0.attn.q.weight", where).shape[0] // heads,
        "d_ff": _need(refs, "blocks.0.ffn.fc1.weight", where).shape[0],
        "num_layers": layers,
        "num_heads": heads,
        "relative_attention_num_buckets": buckets,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu",  # tanh-approximated GELU, as Wan's T5 GELU
        "layer_norm_epsilon": 1e-6,
        "dropout_rate": 0.0,
        "tie_word_embeddings": False,
    }


def t5_refs(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """Wan ``T5Encoder`` names -> ``UMT5EncoderModel`` names."""
    out = {}
    for key, ref in refs.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = ref
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = ref
        elif (m := re.fullmatch(r"blocks\.(\d+)\.(.+)", key)) and m.group(2) in T5_BLOCK_NAMES:
            out[f"encoder.block.{m.group(1)}.{T5_BLOCK_NAMES[m.group(2)]}"] = ref
        else:
            raise CheckpointError(f"{ref.path}: unexpected tensor {key!r} in a Wan T5 encoder checkpoint")
    return out


# --- CLIP (open-clip XLM-RoBERTa-large ViT-H/14, vision tower) -----------------------------------------------------
CLIP_BLOCK_NAMES = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "self_attn.out_proj",
    "mlp.0": "mlp.fc1",
    "mlp.2": "mlp.fc2",
}


def clip_config(refs: dict[str, TensorRef]) -> dict[str, Any]:
    """``CLIPVisionConfig`` arguments read off the ``visual.*`` shapes."""
    where = _where(refs)
    width, _, patch, _ = _need(refs, "visual.patch_embedding.weight", where).shape
    positions = _need(refs, "visual.pos_embedding", where).shape[1]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise CheckpointError(f"{where}: visual.pos_embedding has {positions} positions, not 1 + a square grid")
    head_dim = CLIP_HEAD_DIM if width % CLIP_HEAD_DIM == 0 else TEST_HEAD_DIM
    layers = {int(m.group(1)) for k in refs if (m := re.match(r"visual\.transformer\.(\d+)\.", k))}
    return {
        "hidden_size": width,
        "intermediate_size": _need(refs, "visual.transformer.0.mlp.0.weight", where).shape[0],
        "num_hidden_layers": len(layers),
        "num_attention_heads": width // head_dim,
        "image_size": grid * patch,
        "patch_size": patch,
        "hidden_act": "gelu",  # exact GELU (Wan's ViT-H uses activation='gelu')
        "layer_norm_eps": 1e-5,
        "projection_dim": _need(refs, "visual.head", where).shape[1],
    }


def clip_refs(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """``visual.*`` of Wan's ``XLMRobertaCLIP`` -> ``CLIPVisionModel`` names (``textual.*`` and the projection head
    are not needed: MultiTalk uses the penultimate hidden states)."""
    out = {}
    width = _need(refs, "visual.patch_embedding.weight", _where(refs)).shape[0]
    for key, ref in refs.items():
        if not key.startswith("visual.") or key == "visual.head":
            continue
        name = key.removeprefix("visual.")
        if name == "patch_embedding.weight":
            out["vision_model.embeddings.patch_embedding.weight"] = ref
        elif name == "cls_embedding":
            out["vision_model.embeddings.class_embedding"] = ref.reshaped((width,))
        elif name == "pos_embedding":
            out["vision_model.embeddings.position_embedding.weight"] = ref.reshaped(tuple(ref.shape[1:]))
        elif (m := re.fullmatch(r"(pre|post)_norm\.(weight|bias)", name)) is not None:
            out[f"vision_model.{'pre_layrnorm' if m.group(1) == 'pre' else 'post_layernorm'}.{m.group(2)}"] = ref
        elif (m := re.fullmatch(r"transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)", name)) is not None:
            layer, kind = m.groups()
            for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"vision_model.encoder.layers.{layer}.self_attn.{proj}.{kind}"] = ref.rows(
                    i * width, (i + 1) * width, name=f"{key}[{proj}]"
                )
        elif (m := re.fullmatch(r"transformer\.(\d+)\.(.+)\.(weight|bias)", name)) and m.group(2) in CLIP_BLOCK_NAMES:
            out[f"vision_model.encoder.layers.{m.group(1)}.{CLIP_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"] = ref
        else:
            raise CheckpointError(f"{ref.path}: unexpected tensor {key!r} in a Wan CLIP checkpoint")
    return out


# --- VAE --------------------------------------------------------------------------------------------------------------
RESBLOCK_NAMES = {"residual.0": "norm1", "residual.2": "conv1", "residual.3": "norm2", "residual.6": "conv2"}


def vae_config(refs: dict[str, TensorRef]) -> dict[str, Any]:
    """``AutoencoderKLWan`` arguments read off the encoder's structure: base width, stage widths, residual blocks
    per stage and which downsamplings are temporal."""
    where = _where(refs)
    base = _need(refs, "encoder.conv1.weight", where).shape[0]
    z_dim = _need(refs, "conv2.weight", where).shape[0]
    items = sorted({int(m.group(1)) for k in refs if (m := re.match(r"encoder\.downsamples\.(\d+)\.", k))})
    stages: list[list[int]] = [[]]
    temporal = []
    for i in items:
        prefix = f"encoder.downsamples.{i}."
        if prefix + "residual.2.weight" in refs:
            stages[-1].append(refs[prefix + "residual.2.weight"].shape[0])
        elif prefix + "resample.1.weight" in refs:
            temporal.append(prefix + "time_conv.weight" in refs)
            stages.append([])
        else:
            raise CheckpointError(f"{where}: encoder.downsamples.{i} is neither a residual block nor a resample")
    blocks = {len(s) for s in stages}
    if len(blocks) != 1 or any(len(set(s)) != 1 for s in stages) or any(s[0] % base for s in stages):
        raise CheckpointError(f"{where}: irregular VAE encoder (stages {stages}); not a Wan2.1 VAE")
    return {
        "base_dim": base,
        "z_dim": z_dim,
        "dim_mult": [s[0] // base for s in stages],
        "num_res_blocks": blocks.pop(),
        "attn_scales": [],
        "temperal_downsample": temporal,
        "dropout": 0.0,
    }


def vae_prefixes(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(original module prefix, diffusers module prefix) for every module of the VAE described by ``config``."""
    stages, blocks = len(config["dim_mult"]), config["num_res_blocks"]
    pairs = [("conv1", "quant_conv"), ("conv2", "post_quant_conv")]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv1", f"{part}.conv_in"),
            (f"{part}.middle.0", f"{part}.mid_block.resnets.0"),
            (f"{part}.middle.1", f"{part}.mid_block.attentions.0"),
            (f"{part}.middle.2", f"{part}.mid_block.resnets.1"),
            (f"{part}.head.0", f"{part}.norm_out"),
            (f"{part}.head.2", f"{part}.conv_out"),
        ]
    down = stages * blocks + stages - 1  # the encoder's flat list is kept as is
    pairs += [(f"encoder.downsamples.{i}", f"encoder.down_blocks.{i}") for i in range(down)]
    flat = 0
    for stage in range(stages):  # the decoder's flat list is grouped: blocks + 1 residual blocks, then a resample
        for j in range(blocks + 1):
            pairs.append((f"decoder.upsamples.{flat}", f"decoder.up_blocks.{stage}.resnets.{j}"))
            flat += 1
        if stage != stages - 1:
            pairs.append((f"decoder.upsamples.{flat}", f"decoder.up_blocks.{stage}.upsamplers.0"))
            flat += 1
    return pairs


VAE_INNER_NAMES = {**RESBLOCK_NAMES, "shortcut": "conv_shortcut"}


def vae_key(key: str, prefixes: dict[str, str], inner: dict[str, str] = VAE_INNER_NAMES) -> str | None:
    """A VAE tensor name renamed by its longest known module prefix (``prefixes``) and the name inside that module
    (``inner``), or None. Original -> diffusers with the defaults; the inverted maps rename back."""
    module, _, leaf = key.rpartition(".")
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in prefixes:
            rest = ".".join(parts[cut:])
            return ".".join(p for p in (prefixes[head], inner.get(rest, rest), leaf) if p)
    return None


def vae_refs(refs: dict[str, TensorRef], config: dict[str, Any]) -> dict[str, TensorRef]:
    """Wan ``WanVAE_`` names -> ``AutoencoderKLWan`` names."""
    prefixes = dict(vae_prefixes(config))
    out = {}
    for key, ref in refs.items():
        name = vae_key(key, prefixes)
        if name is None:
            raise CheckpointError(f"{ref.path}: unexpected tensor {key!r} in a Wan VAE checkpoint")
        out[name] = ref
    return out
