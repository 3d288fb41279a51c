"""The MultiTalk transformer: diffusers' Wan2.1 I2V transformer plus what MultiTalk adds.

Added over ``WanTransformer3DModel`` (names as in the official checkpoint, so ``multitalk.safetensors`` loads as is):

- ``audio_proj``: windowed wav2vec2 features -> ``audio_context_tokens`` tokens per latent frame per speaker;
- per block ``norm_x`` (affine LayerNorm, fp32) and ``audio_cross_attn``, applied after the text/image
  cross-attention residual and before the feed-forward, as a plain residual;
- for two speakers, the reference-attention map of each block's self-attention drives label RoPE.

Precision as the official forward: the official code runs the time embedding, the time projection and the output
head under ``torch.cuda.amp.autocast(dtype=float32)`` and returns a float32 velocity. Here the time embedder keeps
float32 weights (``_keep_in_fp32_modules``), ``time_proj`` and ``proj_out`` are :class:`Fp32Linear` (weights in the
model's dtype, as the official holds them, computed in float32), the modulation stays in float32 and the forward
returns float32 whatever the model's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.models._modeling_parallel import ContextParallelInput
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel, WanTransformerBlock
from diffusers.utils import apply_lora_scale

from ..errors import SpeakerCountError
from ..limits import MAX_SPEAKERS
from ..speed.step_cache import StepCache
from .attention import (
    MultiTalkAudioAttention,
    MultiTalkSelfAttnProcessor,
    label_positions,
)
from .context_parallel import ShardLayout, shard_layout

TEXT_TOKENS = 512  # diffusers' Wan attention processor splits image/text context at 512 text tokens


class Float64Timesteps(nn.Module):
    """Sinusoidal timestep features computed in float64 (cos first), as the official Wan code does.

    diffusers' ``Timesteps`` works in float32; at t near 1000 that moves the features by ~1e-4.
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        position = timesteps.to(torch.float64)
        freqs = torch.pow(10000.0, -torch.arange(half, device=position.device, dtype=torch.float64) / half)
        angles = torch.outer(position, freqs)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


class Fp32Linear(nn.Linear):
    """A linear layer computed in float32 whatever its weights are stored in (bf16, fp8 upcast by a layerwise-casting
    hook, a GGUF-quantized tensor, float32): what ``torch.cuda.amp.autocast(dtype=float32)`` does for the official
    time projection and output head. The weights keep their storage (no extra memory); each call upcasts them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if getattr(weight, "quant_type", None) is not None:  # a GGUFParameter (the loader leaves it quantized)
            from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

            weight = dequantize_gguf_tensor(weight)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), weight.float(), bias)


class MultiTalkAudioProjection(nn.Module):
    """Windowed wav2vec2 hidden states -> audio context tokens (the official ``AudioProjModel``).

    The first latent frame sees one ``window``-frame window; every later latent frame (``vae_scale`` video frames)
    sees ``window + vae_scale - 1`` consecutive entries. Each is flattened (window, layer, channel), then
    ``proj1``/``proj1_vf`` -> ReLU -> ``proj2`` -> ReLU -> ``proj3`` -> tokens -> LayerNorm.

    ``norm_fp32`` (InfiniteTalk): the LayerNorm computes in float32 and its result is cast back to the activation
    dtype (InfiniteTalk's ``AudioProjModel`` wraps the norm in a float32 autocast; MultiTalk's does not). In float32
    both are the same computation.
    """

    def __init__(
        self,
        window: int,
        vae_scale: int,
        layers: int,
        channels: int,
        intermediate_dim: int,
        output_dim: int,
        context_tokens: int,
        norm_output: bool,
        norm_fp32: bool = False,
    ):
        super().__init__()
        self.norm_fp32 = norm_fp32
        self.window = window
        self.vae_scale = vae_scale
        self.context_tokens = context_tokens
        self.output_dim = output_dim
        self.proj1 = nn.Linear(window * layers * channels, intermediate_dim)
        self.proj1_vf = nn.Linear((window + vae_scale - 1) * layers * channels, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, context_tokens * output_dim)
        self.norm = nn.LayerNorm(output_dim) if norm_output else nn.Identity()

    def split_windows(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[P, F, window, L, C]`` per-video-frame windows -> first ``[P, 1, window, L, C]`` and
        later ``[P, T-1, window + vae_scale - 1, L, C]`` latent-frame windows."""
        frames = audio.shape[1]
        if (frames - 1) % self.vae_scale:
            raise ValueError(f"audio covers {frames} video frames; expected {self.vae_scale}*k+1")
        mid = self.window // 2
        first = audio[:, :1]
        groups = audio[:, 1:].unflatten(1, ((frames - 1) // self.vae_scale, self.vae_scale))  # [P, T-1, s, w, L, C]
        later = torch.cat(
            [
                groups[:, :, 0, : mid + 1],  # first frame of the group: offsets -mid..0
                groups[:, :, 1:-1, mid],  # middle frames: centre entry only
                groups[:, :, -1, mid:],  # last frame: offsets 0..+mid
            ],
            dim=2,
        )
        return first, later

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``[P, F, window, L, C]`` -> ``[P, T, context_tokens, output_dim]``."""
        first, later = self.split_windows(audio)
        first = torch.relu(self.proj1(first.flatten(2)))
        later = torch.relu(self.proj1_vf(later.flatten(2)))
        hidden = torch.relu(self.proj2(torch.cat([first, later], dim=1)))
        tokens = self.proj3(hidden).unflatten(-1, (self.context_tokens, self.output_dim))
        if self.norm_fp32 and isinstance(self.norm, nn.LayerNorm):
            norm = self.norm
            weight = None if norm.weight is None else norm.weight.float()
            bias = None if norm.bias is None else norm.bias.float()
            return F.layer_norm(tokens.float(), norm.normalized_shape, weight, bias, norm.eps).to(tokens.dtype)
        return self.norm(tokens)


class MultiTalkTransformerBlock(WanTransformerBlock):
    """``WanTransformerBlock`` with MultiTalk's audio cross-attention after the text/image cross-attention."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        qk_norm: str = "rms_norm_across_heads",
        cross_attn_norm: bool = False,
        eps: float = 1e-6,
        added_kv_proj_dim: int | None = None,
        audio_dim: int = 768,
    ):
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim)
        self.attn1.set_processor(MultiTalkSelfAttnProcessor())
        self.norm_x = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.audio_cross_attn = MultiTalkAudioAttention(dim, audio_dim, num_heads)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        audio_tokens: torch.Tensor | None = None,
        num_frames: int = 1,
        ref_masks: torch.Tensor | None = None,
        shard: ShardLayout | None = None,
    ) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
            self.scale_shift_table + temb.float()
        ).chunk(6, dim=1)

        # 1. Self-attention (and, for two speakers, the reference map of the same q and k)
        norm_hidden_states = (self.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa).type_as(hidden_states)
        if ref_masks is None:
            attn_output, positions = self.attn1(norm_hidden_states, None, None, rotary_emb), None
        else:
            attn_output, ref_map = self.attn1(
                norm_hidden_states, None, None, rotary_emb, ref_masks=ref_masks, shard=shard
            )
            positions = label_positions(ref_map, shard)
        hidden_states = (hidden_states.float() + attn_output * gate_msa).type_as(hidden_states)

        # 2. Text + image cross-attention
        norm_hidden_states = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(norm_hidden_states, encoder_hidden_states, None, None)

        # 3. Audio cross-attention (MultiTalk): plain residual, no gate or modulation
        if audio_tokens is not None:
            norm_hidden_states = self.norm_x(hidden_states.float()).type_as(hidden_states)
            hidden_states = hidden_states + self.audio_cross_attn(
                norm_hidden_states, audio_tokens, num_frames, positions, shard=shard
            )

        # 4. Feed-forward
        norm_hidden_states = (self.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(
            hidden_states
        )
        ff_output = self.ffn(norm_hidden_states)
        return (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)


# Cache hooks (FirstBlockCache, MagCache, ...) look blocks up by exact class.
TransformerBlockRegistry.register(
    MultiTalkTransformerBlock,
    TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=None),
)


class MultiTalkTransformer3DModel(WanTransformer3DModel):
    """Wan2.1 I2V transformer with MultiTalk's audio conditioning.

    The audio hyper-parameters are not in the published configs: they default to the MultiTalk-14B values and
    the loader derives them from the weights. ``audio_norm_fp32`` is InfiniteTalk's one model-code difference
    (``MultiTalkAudioProjection``); ``loading/adapters.py`` sets it with the audio weights it loads.
    """

    _supports_gradient_checkpointing = False
    _no_split_modules = ["MultiTalkTransformerBlock"]
    _repeated_blocks = ["MultiTalkTransformerBlock"]
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm", "audio_proj"]
    _keep_in_fp32_modules = ["rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_x"]
    # Context parallelism (``engine/parallel``; ``models/context_parallel.py`` for what MultiTalk adds): the plan
    # splits the RoPE tables like the tokens. The tokens themselves are split in ``forward`` right after the patch
    # embedding (not by a hook on ``blocks.0`` as Wan's plan does), so that the step cache stores and reuses this
    # rank's residual and each block is told where its tokens sit; the output head's tokens are gathered there too
    # (not by a hook on ``proj_out``), so that shards of unequal length gather on gloo as well.
    _cp_plan = {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
    }

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 36,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = 1280,
        added_kv_proj_dim: int | None = 5120,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        audio_window: int = 5,
        vae_scale: int = 4,
        audio_layers: int = 12,
        audio_channels: int = 768,
        audio_intermediate_dim: int = 512,
        audio_output_dim: int = 768,
        audio_context_tokens: int = 32,
        norm_output_audio: bool = True,
        audio_norm_fp32: bool = False,
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=0,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        self.register_to_config(num_layers=num_layers)
        inner_dim = num_attention_heads * attention_head_dim
        self.condition_embedder.timesteps_proj = Float64Timesteps(freq_dim)
        # Computed in float32 like the official (fp32 autocast); same parameter names and shapes as diffusers'.
        self.condition_embedder.time_proj = Fp32Linear(inner_dim, 6 * inner_dim)
        self.proj_out = Fp32Linear(inner_dim, out_channels * math.prod(patch_size))
        self.blocks = nn.ModuleList(
            [
                MultiTalkTransformerBlock(
                    inner_dim,
                    ffn_dim,
                    num_attention_heads,
                    qk_norm,
                    cross_attn_norm,
                    eps,
                    added_kv_proj_dim,
                    audio_dim=audio_output_dim,
                )
                for _ in range(num_layers)
            ]
        )
        self.audio_proj = MultiTalkAudioProjection(
            window=audio_window,
            vae_scale=vae_scale,
            layers=audio_layers,
            channels=audio_channels,
            intermediate_dim=audio_intermediate_dim,
            output_dim=audio_output_dim,
            context_tokens=audio_context_tokens,
            norm_output=norm_output_audio,
            norm_fp32=audio_norm_fp32,
        )

    def audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """``[P, F, window, L, C]`` windowed features -> ``[1, T, P * context_tokens, output_dim]``, speaker 1 first."""
        if audio.ndim != 5:
            raise ValueError(f"audio must be [speakers, frames, window, layers, channels], got {tuple(audio.shape)}")
        speakers = audio.shape[0]
        if not 1 <= speakers <= MAX_SPEAKERS:
            raise SpeakerCountError(f"MultiTalk routes 1 or {MAX_SPEAKERS} speakers, got {speakers}")
        tokens = self.audio_proj(audio)  # [P, T, M, C]
        return tokens.permute(1, 0, 2, 3).flatten(1, 2).unsqueeze(0)

    @staticmethod
    def token_masks(ref_masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Latent-resolution region masks ``[3, h, w]`` -> 0/1 token masks ``[3, h_tokens * w_tokens]``."""
        masks = F.interpolate(ref_masks[None].float(), size=grid, mode="nearest")[0]
        return (masks > 0).flatten(1).float()

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor,
        audio: torch.Tensor,
        ref_masks: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        step_cache: StepCache | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        Args:
            hidden_states: ``[B, 36, T, h, w]`` noisy latents (16) + mask (4) + condition latents (16).
            timestep: ``[B]`` flow-matching timesteps in [0, 1000].
            encoder_hidden_states: ``[B, L <= 512, text_dim]`` T5 features (zero-padded to 512 here).
            encoder_hidden_states_image: ``[B, 257, image_dim]`` CLIP penultimate hidden states.
            audio: ``[P, F, window, 12, 768]`` windowed wav2vec2 features, ``F = 4 (T - 1) + 1`` video frames.
                ``P`` (1 or 2) is the number of speakers; null-audio passes use zeros with ``P = 1``.
                The same audio conditions every batch item.
            ref_masks: ``[3, h, w]`` latent-resolution masks (person 1, person 2, background). Required when P = 2.
            step_cache: TeaCache state (``step_cache.py``): when it says so, the blocks are skipped and the branch's
                last residual is added instead.
        """
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        frames, grid = num_frames // p_t, (height // p_h, width // p_w)

        audio_tokens = self.audio_tokens(audio.to(hidden_states.dtype))  # the official runs it in activation dtype
        if audio_tokens.shape[1] != frames:
            raise ValueError(f"audio covers {audio_tokens.shape[1]} latent frames, latents have {frames}")
        audio_tokens = audio_tokens.expand(batch_size, -1, -1, -1)
        token_ref_masks = None
        if audio.shape[0] == MAX_SPEAKERS:
            if ref_masks is None:
                raise ValueError("two speakers need ref_masks [3, h, w] (person 1, person 2, background)")
            token_ref_masks = self.token_masks(ref_masks.to(hidden_states.device), grid)

        text_len = encoder_hidden_states.shape[1]
        if text_len > TEXT_TOKENS:
            raise ValueError(f"at most {TEXT_TOKENS} text tokens, got {text_len}")
        encoder_hidden_states = F.pad(encoder_hidden_states, (0, 0, 0, TEXT_TOKENS - text_len))

        shard = shard_layout(self._parallel_config, frames * grid[0] * grid[1])
        rotary_emb = self.rope(hidden_states)  # context parallel: split by the "rope" entry of _cp_plan
        hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
        if shard is not None:
            hidden_states = shard.shard(hidden_states).contiguous()
        # diffusers' condition embedder would cast the time embedding to the text's dtype (bf16) before the
        # projection; the official keeps both in float32.
        embedder = self.condition_embedder
        features = embedder.timesteps_proj(timestep)  # float32
        temb = embedder.time_embedder(features.to(embedder.time_embedder.linear_1.weight.dtype)).float()
        timestep_proj = embedder.time_proj(embedder.act_fn(temb)).unflatten(1, (6, -1))
        encoder_hidden_states = embedder.text_embedder(encoder_hidden_states)
        encoder_hidden_states_image = embedder.image_embedder(encoder_hidden_states_image)
        encoder_hidden_states = torch.cat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

        if step_cache is not None and not step_cache.should_compute(timestep_proj):
            hidden_states = step_cache.reuse(hidden_states)
        else:
            blocks_input = hidden_states
            for block in self.blocks:
                hidden_states = block(
                    hidden_states,
                    encoder_hidden_states,
                    timestep_proj,
                    rotary_emb,
                    audio_tokens=audio_tokens,
                    num_frames=frames,
                    ref_masks=token_ref_masks,
                    shard=shard,
                )
            if step_cache is not None:
                step_cache.store(blocks_input, hidden_states)

        # Output head in float32 (the official autocast): a float32 velocity whatever the model's dtype.
        shift, scale = (self.scale_shift_table.to(temb.device).float() + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = self.proj_out(self.norm_out(hidden_states.float()) * (1 + scale) + shift)
        if shard is not None:
            hidden_states = shard.gather(hidden_states)  # every rank returns the whole output
        hidden_states = hidden_states.reshape(batch_size, frames, *grid, p_t, p_h, p_w, -1)
        output = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)


def latent_frames(video_frames: int, vae_scale: int = 4) -> int:
    """Number of latent frames for ``video_frames`` (which must be ``vae_scale * k + 1``)."""
    if video_frames < 1 or (video_frames - 1) % vae_scale:
        raise ValueError(f"video frames must be {vae_scale}*k+1, got {video_frames}")
    return (video_frames - 1) // vae_scale + 1


def param_count(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
