"""Attention pieces that MultiTalk adds to Wan2.1: the reference-attention map, label RoPE and the audio attention.

Everything here goes through diffusers' ``dispatch_attention_fn`` so that ``model.set_attention_backend(...)``
(FlashAttention, SageAttention, SDPA, ...) reaches every attention call, including the audio one.

Shapes use diffusers' attention layout ``(batch, tokens, heads, head_dim)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttention

from .context_parallel import ShardLayout

# Label-RoPE constants of the official model (class_range 24, class_interval 4): queries of person 1 get
# positions in [0, 4], of person 2 in [20, 24], background tokens 12; the audio keys of person 1 sit at the
# centre of their range (2) and those of person 2 at 22.
PERSON_RANGES = ((0.0, 4.0), (20.0, 24.0))
BACKGROUND_POSITION = 12.0
ROPE_BASE = 10000.0


def _map_backend(backend: AttentionBackendName | None) -> AttentionBackendName | None:
    """The reference map feeds 0/1 masks through the value path: quantising backends (Sage) are not used for it."""
    if backend is not None and "sage" in AttentionBackendName(backend).value:
        return AttentionBackendName.NATIVE
    return backend


def reference_attention_map(
    query: torch.Tensor,
    ref_key: torch.Tensor,
    masks: torch.Tensor,
    backend: AttentionBackendName | None = None,
) -> torch.Tensor:
    """How much each visual token attends to each reference region of latent frame 0.

    ``map[b, c, i] = mean_h( sum_{j in mask_c} softmax_j(q_i . k_j / sqrt(d)) / |mask_c| )``

    Computed as one attention call whose values are the masks, so the ``N x S`` score matrix is never
    materialised (at 480p that matrix is ~4 GB per layer in bf16).

    Args:
        query: ``[B, N, H, D]`` self-attention queries after RMSNorm and 3-D RoPE.
        ref_key: ``[B, S, H, D]`` keys of the reference tokens (latent frame 0) after RMSNorm and RoPE.
        masks: ``[C, S]`` 0/1 region masks over the reference tokens.

    Returns:
        ``[B, C, N]`` float32.
    """
    batch, ref_tokens, heads, head_dim = ref_key.shape
    classes = masks.shape[0]
    if classes > head_dim:
        raise ValueError(f"{classes} mask classes do not fit in head_dim {head_dim}")
    value = F.pad(masks.to(query.dtype).t(), (0, head_dim - classes))  # [S, D]
    value = value[None, :, None, :].expand(batch, ref_tokens, heads, head_dim)
    out = dispatch_attention_fn(query, ref_key, value.contiguous(), backend=_map_backend(backend))
    region_mean = out[..., :classes].float().mean(dim=2)  # [B, N, C]
    # An empty region would divide by zero (the official code then produces NaN and a black video).
    region_mean = region_mean / masks.float().sum(dim=-1).clamp(min=1.0)
    return region_mean.transpose(1, 2)


def label_positions(ref_map: torch.Tensor, shard: ShardLayout | None = None) -> torch.Tensor:
    """Label-RoPE positions of the visual tokens from the reference map ``[B, 3, N]`` -> ``[B, N]`` (float32).

    Each person's row is min-max normalised over all tokens into that person's range; every token takes the
    position of the region it attends to most (argmax over the raw rows), background tokens a fixed position.
    Under context parallelism (``shard``) ``N`` is this rank's tokens and the min/max are taken over all ranks.
    """
    ref_map = ref_map.float()
    lo = ref_map.amin(dim=-1, keepdim=True)
    hi = ref_map.amax(dim=-1, keepdim=True)
    if shard is not None:
        lo, hi = shard.global_min_max(lo, hi)
    normalised = (ref_map - lo) / (hi - lo + 1e-8)
    (lo1, hi1), (lo2, hi2) = PERSON_RANGES
    person1 = lo1 + (hi1 - lo1) * normalised[:, 0]
    person2 = lo2 + (hi2 - lo2) * normalised[:, 1]
    winner = ref_map.argmax(dim=1)
    background = torch.full_like(person1, BACKGROUND_POSITION)
    return torch.where(winner == 0, person1, torch.where(winner == 1, person2, background))


def apply_rope_1d(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """1-D rotary embedding over adjacent channel pairs ``(2i, 2i+1)`` with fractional positions, in float32.

    Args:
        x: ``[..., L, H, D]``.
        positions: broadcastable to ``[..., L]``.
    """
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, device=x.device, dtype=torch.float32) / head_dim))
    angles = positions.to(device=x.device, dtype=torch.float32)[..., None] * inv_freq  # [..., L, D/2]
    cos = angles.cos()[..., None, :]  # [..., L, 1, D/2]
    sin = angles.sin()[..., None, :]
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    return out.type_as(x)


def _project_qkv(attn: WanAttention, hidden_states: torch.Tensor):
    if attn.fused_projections:
        return attn.to_qkv(hidden_states).chunk(3, dim=-1)
    return attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)


def _apply_wan_rope(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class MultiTalkSelfAttnProcessor:
    """Wan self-attention that can also return the reference-attention map of the same q and k.

    Numerically identical to diffusers' ``WanAttnProcessor`` for self-attention. When ``ref_masks`` is given
    it returns ``(output, map)`` with ``map`` from :func:`reference_attention_map`.

    Under context parallelism (``shard``, with ``_parallel_config`` set by ``enable_parallelism``) the hidden
    states are this rank's tokens: the attention itself is diffusers' Ulysses/ring, and the map's reference keys
    (latent frame 0) come from the ranks that hold them.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        ref_masks: torch.Tensor | None = None,
        shard: ShardLayout | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is not None:
            raise ValueError("MultiTalkSelfAttnProcessor is for self-attention only")
        query, key, value = _project_qkv(attn, hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _apply_wan_rope(query, *rotary_emb)
            key = _apply_wan_rope(key, *rotary_emb)

        out = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[1](attn.to_out[0](out))
        if ref_masks is None:
            return out
        ref_tokens = ref_masks.shape[1]
        ref_key = key[:, :ref_tokens] if shard is None else shard.first_tokens(key, ref_tokens)
        ref_map = reference_attention_map(query, ref_key, ref_masks, self._attention_backend)
        return out, ref_map


class MultiTalkAudioAttnProcessor:
    """Per-latent-frame cross-attention of visual tokens to that frame's audio tokens (all speakers).

    With two speakers, label RoPE routes each voice to its person: queries are rotated to their label
    positions and the audio keys of speaker 1 / 2 to the centres of their ranges. One speaker, and every
    null-audio pass, use no positional encoding at all.

    Under context parallelism (``shard``) the hidden states are this rank's tokens, which may start and end inside
    a latent frame: the queries are padded out to whole frames, attend frame by frame as in one process, and the
    padding is dropped. The audio tokens are whole on every rank; no communication.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: MultiTalkAudioAttention,
        hidden_states: torch.Tensor,
        audio_tokens: torch.Tensor,
        num_frames: int,
        query_positions: torch.Tensor | None = None,
        shard: ShardLayout | None = None,
    ) -> torch.Tensor:
        batch, tokens, _ = hidden_states.shape
        total, offset = (tokens, 0) if shard is None else (shard.total, shard.offset)
        frame_tokens = total // num_frames
        first, last = offset // frame_tokens, (offset + tokens - 1) // frame_tokens
        frames = last - first + 1  # the latent frames this rank's tokens touch
        lead = offset - first * frame_tokens
        trail = frames * frame_tokens - lead - tokens
        audio_tokens = audio_tokens[:, first : last + 1]
        audio_per_frame = audio_tokens.shape[2]

        query = attn.q_linear(hidden_states).unflatten(2, (attn.heads, -1))  # [B, N, H, D]
        key, value = attn.kv_linear(audio_tokens).unflatten(-1, (2, attn.heads, -1)).unbind(-3)  # [B, T, M, H, D]
        if query_positions is not None:
            query = apply_rope_1d(query, query_positions)
            half = audio_per_frame // 2
            (lo1, hi1), (lo2, hi2) = PERSON_RANGES
            key_positions = torch.full((audio_per_frame,), (lo2 + hi2) / 2, device=key.device)
            key_positions[:half] = (lo1 + hi1) / 2
            key = apply_rope_1d(key, key_positions)

        head_dim = query.shape[-1]
        if lead or trail:
            query = F.pad(query, (0, 0, 0, 0, lead, trail))
        query = query.reshape(batch * frames, frame_tokens, attn.heads, head_dim)
        key = key.reshape(batch * frames, audio_per_frame, attn.heads, head_dim)
        value = value.reshape(batch * frames, audio_per_frame, attn.heads, head_dim)
        out = dispatch_attention_fn(query, key, value, backend=self._attention_backend)
        out = out.reshape(batch, frames * frame_tokens, attn.heads * head_dim)[:, lead : lead + tokens]
        return attn.proj(out.type_as(hidden_states))


class MultiTalkAudioAttention(torch.nn.Module, AttentionModuleMixin):
    """The audio cross-attention of one block. Parameter names match the official checkpoint
    (``q_linear``, ``kv_linear`` with K rows first then V rows, ``proj``) so ``multitalk.safetensors`` loads as is."""

    _default_processor_cls = MultiTalkAudioAttnProcessor
    _available_processors = [MultiTalkAudioAttnProcessor]
    _supports_qkv_fusion = False

    def __init__(self, dim: int, audio_dim: int, heads: int, processor: MultiTalkAudioAttnProcessor | None = None):
        super().__init__()
        self.heads = heads
        self.q_linear = torch.nn.Linear(dim, dim)
        self.kv_linear = torch.nn.Linear(audio_dim, 2 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.set_processor(processor or MultiTalkAudioAttnProcessor())

    def forward(
        self,
        hidden_states: torch.Tensor,
        audio_tokens: torch.Tensor,
        num_frames: int,
        query_positions: torch.Tensor | None = None,
        shard: ShardLayout | None = None,
    ) -> torch.Tensor:
        return self.processor(self, hidden_states, audio_tokens, num_frames, query_positions, shard=shard)
