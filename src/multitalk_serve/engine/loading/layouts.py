"""What the published checkpoints look like on disk: file names, configs, key names and shapes.

Layouts we load (docs/engine.md):

- **original**: ``Wan-AI/Wan2.1-I2V-14B-480P`` (``config.json`` with ``_class_name: WanModel``, sharded
  ``diffusion_pytorch_model-0000N-of-0000M.safetensors`` + index, official key names) and
  ``MeiGen-AI/MeiGen-MultiTalk`` (``multitalk.safetensors`` with the 330 audio tensors, plus a replacement index
  that maps the base keys to the 7 base shards and the audio keys to ``multitalk.safetensors``), and
  ``MeiGen-AI/InfiniteTalk`` (``single/infinitetalk.safetensors``, ``multi/infinitetalk.safetensors``: the same
  330 audio keys and shapes, float32, no index);
- **diffusers**: ``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` (``model_index.json`` + ``transformer/`` ...);
- **gguf**: community Wan2.1 I2V GGUF files (city96 layout: arch ``wan``, official tensor names, 1-D tensors,
  small tensors and ``*.modulation`` in F32, the 5-D ``patch_embedding.weight`` in F32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# --- file names -------------------------------------------------------------------------------------------------
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
MULTITALK_WEIGHTS_NAME = "multitalk.safetensors"
INFINITETALK_WEIGHTS_NAME = "infinitetalk.safetensors"  # MeiGen-AI/InfiniteTalk: single/ and multi/, same keys
MODEL_INDEX_NAME = "model_index.json"
CONFIG_NAME = "config.json"


def shard_name(index: int, total: int) -> str:
    """``diffusion_pytorch_model-00001-of-00007.safetensors``."""
    return f"diffusion_pytorch_model-{index:05d}-of-{total:05d}.safetensors"


@dataclass(frozen=True)
class WanDims:
    """The architecture numbers of a Wan2.1 I2V transformer with MultiTalk audio layers.

    Defaults are Wan2.1-I2V-14B + MeiGen-MultiTalk. ``audio_*`` values are not in any published config (the
    official code hard-codes them); the loader derives them from the audio weights.
    """

    dim: int = 5120
    ffn_dim: int = 13824
    freq_dim: int = 256
    text_dim: int = 4096
    in_dim: int = 36
    out_dim: int = 16
    num_heads: int = 40
    num_layers: int = 40
    eps: float = 1e-6
    text_len: int = 512
    image_dim: int = 1280
    patch_size: tuple[int, int, int] = (1, 2, 2)
    audio_window: int = 5
    vae_scale: int = 4
    audio_layers: int = 12
    audio_channels: int = 768
    audio_intermediate_dim: int = 512
    audio_output_dim: int = 768
    audio_context_tokens: int = 32

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def replace(self, **changes: Any) -> WanDims:
        return WanDims(**{**asdict(self), **changes})

    # --- configs as the published files write them ---------------------------------------------------------------
    def original_config(self) -> dict[str, Any]:
        """``config.json`` of the original layout (exactly the keys of Wan2.1-I2V-14B-480P)."""
        return {
            "_class_name": "WanModel",
            "_diffusers_version": "0.30.0",
            "dim": self.dim,
            "eps": self.eps,
            "ffn_dim": self.ffn_dim,
            "freq_dim": self.freq_dim,
            "in_dim": self.in_dim,
            "model_type": "i2v",
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "out_dim": self.out_dim,
            "text_len": self.text_len,
        }

    def diffusers_config(self) -> dict[str, Any]:
        """``transformer/config.json`` of the diffusers layout (the keys of Wan2.1-I2V-14B-480P-Diffusers)."""
        return {
            "_class_name": "WanTransformer3DModel",
            "_diffusers_version": "0.33.0.dev0",
            "added_kv_proj_dim": self.dim,
            "attention_head_dim": self.head_dim,
            "cross_attn_norm": True,
            "eps": self.eps,
            "ffn_dim": self.ffn_dim,
            "freq_dim": self.freq_dim,
            "image_dim": self.image_dim,
            "in_channels": self.in_dim,
            "num_attention_heads": self.num_heads,
            "num_layers": self.num_layers,
            "out_channels": self.out_dim,
            "patch_size": list(self.patch_size),
            "qk_norm": "rms_norm_across_heads",
            "rope_max_seq_len": 1024,
            "text_dim": self.text_dim,
        }

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of ``MultiTalkTransformer3DModel``."""
        return {
            "patch_size": tuple(self.patch_size),
            "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.in_dim,
            "out_channels": self.out_dim,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "eps": self.eps,
            "image_dim": self.image_dim,
            "added_kv_proj_dim": self.dim,
            "audio_window": self.audio_window,
            "vae_scale": self.vae_scale,
            "audio_layers": self.audio_layers,
            "audio_channels": self.audio_channels,
            "audio_intermediate_dim": self.audio_intermediate_dim,
            "audio_output_dim": self.audio_output_dim,
            "audio_context_tokens": self.audio_context_tokens,
        }

    @classmethod
    def from_original_config(cls, config: dict[str, Any]) -> WanDims:
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in config.items() if k in names}
        if "patch_size" in known:
            known["patch_size"] = tuple(known["patch_size"])
        return cls(**known)

    @classmethod
    def from_diffusers_config(cls, config: dict[str, Any]) -> WanDims:
        heads = config["num_attention_heads"]
        return cls(
            dim=heads * config["attention_head_dim"],
            ffn_dim=config["ffn_dim"],
            freq_dim=config["freq_dim"],
            text_dim=config["text_dim"],
            in_dim=config["in_channels"],
            out_dim=config["out_channels"],
            num_heads=heads,
            num_layers=config["num_layers"],
            eps=config.get("eps", 1e-6),
            image_dim=config.get("image_dim") or 1280,
            patch_size=tuple(config.get("patch_size", (1, 2, 2))),
        )


def original_base_shapes(d: WanDims) -> dict[str, tuple[int, ...]]:
    """Every tensor of the original Wan2.1 I2V transformer (1303 for the 14B model), official names."""
    dim, ffn = d.dim, d.ffn_dim
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (dim, d.in_dim, *d.patch_size),
        "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, d.text_dim),
        "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim),
        "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, d.freq_dim),
        "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim),
        "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim),
        "time_projection.1.bias": (6 * dim,),
    }
    for i in range(d.num_layers):
        b = f"blocks.{i}."
        shapes[b + "modulation"] = (1, 6, dim)
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                shapes[f"{b}{attn}.{proj}.weight"] = (dim, dim)
                shapes[f"{b}{attn}.{proj}.bias"] = (dim,)
            shapes[f"{b}{attn}.norm_q.weight"] = (dim,)
            shapes[f"{b}{attn}.norm_k.weight"] = (dim,)
        for proj in ("k_img", "v_img"):
            shapes[f"{b}cross_attn.{proj}.weight"] = (dim, dim)
            shapes[f"{b}cross_attn.{proj}.bias"] = (dim,)
        shapes[f"{b}cross_attn.norm_k_img.weight"] = (dim,)
        shapes[f"{b}norm3.weight"] = (dim,)
        shapes[f"{b}norm3.bias"] = (dim,)
        shapes[f"{b}ffn.0.weight"] = (ffn, dim)
        shapes[f"{b}ffn.0.bias"] = (ffn,)
        shapes[f"{b}ffn.2.weight"] = (dim, ffn)
        shapes[f"{b}ffn.2.bias"] = (dim,)
    shapes["head.modulation"] = (1, 2, dim)
    shapes["head.head.weight"] = (d.out_dim * _prod(d.patch_size), dim)
    shapes["head.head.bias"] = (d.out_dim * _prod(d.patch_size),)
    shapes["img_emb.proj.0.weight"] = (d.image_dim,)
    shapes["img_emb.proj.0.bias"] = (d.image_dim,)
    shapes["img_emb.proj.1.weight"] = (d.image_dim, d.image_dim)
    shapes["img_emb.proj.1.bias"] = (d.image_dim,)
    shapes["img_emb.proj.3.weight"] = (dim, d.image_dim)
    shapes["img_emb.proj.3.bias"] = (dim,)
    shapes["img_emb.proj.4.weight"] = (dim,)
    shapes["img_emb.proj.4.bias"] = (dim,)
    return shapes


def multitalk_shapes(d: WanDims) -> dict[str, tuple[int, ...]]:
    """Every tensor of ``multitalk.safetensors`` (330 for the 14B model). Same names in every layout."""
    dim = d.dim
    feat = d.audio_layers * d.audio_channels
    inter, out = d.audio_intermediate_dim, d.audio_output_dim
    shapes: dict[str, tuple[int, ...]] = {
        "audio_proj.proj1.weight": (inter, d.audio_window * feat),
        "audio_proj.proj1.bias": (inter,),
        "audio_proj.proj1_vf.weight": (inter, (d.audio_window + d.vae_scale - 1) * feat),
        "audio_proj.proj1_vf.bias": (inter,),
        "audio_proj.proj2.weight": (inter, inter),
        "audio_proj.proj2.bias": (inter,),
        "audio_proj.proj3.weight": (d.audio_context_tokens * out, inter),
        "audio_proj.proj3.bias": (d.audio_context_tokens * out,),
        "audio_proj.norm.weight": (out,),
        "audio_proj.norm.bias": (out,),
    }
    for i in range(d.num_layers):
        b = f"blocks.{i}."
        shapes[b + "audio_cross_attn.q_linear.weight"] = (dim, dim)
        shapes[b + "audio_cross_attn.q_linear.bias"] = (dim,)
        shapes[b + "audio_cross_attn.kv_linear.weight"] = (2 * dim, out)
        shapes[b + "audio_cross_attn.kv_linear.bias"] = (2 * dim,)
        shapes[b + "audio_cross_attn.proj.weight"] = (dim, dim)
        shapes[b + "audio_cross_attn.proj.bias"] = (dim,)
        shapes[b + "norm_x.weight"] = (dim,)
        shapes[b + "norm_x.bias"] = (dim,)
    return shapes


def is_audio_key(key: str) -> bool:
    """True for the MultiTalk tensors (``audio_proj.*``, ``blocks.N.audio_cross_attn.*``, ``blocks.N.norm_x.*``)."""
    return key.startswith("audio_proj.") or ".audio_cross_attn." in key or ".norm_x." in key


def audio_dims_from_shapes(shapes: dict[str, tuple[int, ...]], d: WanDims) -> WanDims:
    """Derive the audio hyper-parameters from the shapes of the MultiTalk tensors.

    ``proj1`` takes ``window * layers * channels`` inputs; wav2vec2-base models have 12 hidden layers, so with the
    window fixed at 5 the channel width follows. Everything else is read off directly.
    """
    from ..errors import CheckpointError

    try:
        inter, proj1_in = shapes["audio_proj.proj1.weight"]
        proj3_out = shapes["audio_proj.proj3.weight"][0]
        out = shapes["blocks.0.audio_cross_attn.kv_linear.weight"][1]
    except KeyError as exc:
        raise CheckpointError(f"MultiTalk weights are missing {exc.args[0]!r}") from None
    feat, rem = divmod(proj1_in, d.audio_window)
    channels, rem2 = divmod(feat, d.audio_layers)
    if rem or rem2 or proj3_out % out:
        raise CheckpointError(
            f"audio_proj shapes do not fit a {d.audio_window}-frame window of {d.audio_layers} wav2vec2 layers: "
            f"proj1 takes {proj1_in} inputs, proj3 gives {proj3_out} outputs for {out}-wide tokens"
        )
    return d.replace(
        audio_channels=channels,
        audio_intermediate_dim=inter,
        audio_output_dim=out,
        audio_context_tokens=proj3_out // out,
    )


def _prod(values: tuple[int, ...]) -> int:
    result = 1
    for v in values:
        result *= v
    return result
