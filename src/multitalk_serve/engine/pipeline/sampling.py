"""MultiTalk's sampler: shifted Euler flow matching with text + audio guidance (and optional APG).

Grid: ``t_k = linspace(1000, 1, steps)`` then 0, each shifted ``t' = 1000 * s*u / (1 + (s-1)*u)`` with
``u = t/1000`` (shift 7 at 480p, 11 at 720p, 2 with a speed LoRA). The model predicts the velocity
``v = noise - x0`` and ``x <- x + (t_{k+1} - t_k)/1000 * v``.

Guidance (velocity space):

- 3 passes (text scale != 1): ``uncond + s_t (cond - drop_text) + s_a (drop_text - uncond)`` where drop_text has
  the negative prompt and the real audio, uncond the negative prompt and null (zero) audio;
- 2 passes (text scale == 1): ``drop_audio + s_a (cond - drop_audio)`` where drop_audio has the prompt and null audio.

APG (adaptive projected guidance) replaces each difference by its momentum-averaged, norm-capped component
orthogonal to the conditional prediction: ``cond + (s_t - 1) APG(cond - drop_text) + (s_a - 1) APG(...)``.

SoulX-FlashTalk (distilled, one pass a step, no guidance) samples differently: its grid is 1000/750/500/250 (4 steps;
1000/500 for 2; otherwise the linspace above) then 0, shifted (shift 5); each step predicts the clean latent
``x0 = x - (t/1000) v`` and re-noises it to the next timestep with fresh noise, ``x <- (1 - t'/1000) x0 + (t'/1000) n``
(the noise is drawn at the last step too, where ``t' = 0``: the draws follow the official ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_SHIFT = {"480p": 7.0, "720p": 11.0}
SPEED_LORA_SHIFT = 2.0


def timesteps(steps: int, shift: float) -> torch.Tensor:
    """``steps + 1`` float32 timesteps from ~1000 down to 0 (the official grid, computed in float32)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    grid = torch.from_numpy(np.linspace(NUM_TRAIN_TIMESTEPS, 1, steps, dtype=np.float32))
    return shifted(torch.cat([grid, torch.zeros(1)]), shift)


# FlashTalk's fixed grids by step count (``flash_talk_pipeline.py``: ``prepare_params``)
FLASHTALK_GRIDS = {4: (1000.0, 750.0, 500.0, 250.0), 2: (1000.0, 500.0)}
FLASHTALK_SHIFT = 5.0


def shifted(grid: torch.Tensor, shift: float) -> torch.Tensor:
    """``t' = 1000 * s*u / (1 + (s-1)*u)`` with ``u = t/1000``, in float32."""
    u = grid / NUM_TRAIN_TIMESTEPS
    return shift * u / (1 + (shift - 1) * u) * NUM_TRAIN_TIMESTEPS


def flashtalk_timesteps(steps: int, shift: float = FLASHTALK_SHIFT) -> torch.Tensor:
    """``steps + 1`` float32 timesteps of FlashTalk's sampler, ending at 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    base = FLASHTALK_GRIDS.get(steps)
    grid = (
        torch.tensor(base, dtype=torch.float32)
        if base
        else torch.from_numpy(np.linspace(NUM_TRAIN_TIMESTEPS, 1, steps, dtype=np.float32))
    )
    return shifted(torch.cat([grid, torch.zeros(1)]), shift)


def x0_renoise_step(
    latent: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """One FlashTalk step: the clean prediction ``latent - (t/1000) v``, re-noised to ``t_next`` with ``noise``."""
    sigma, sigma_next = t / NUM_TRAIN_TIMESTEPS, t_next / NUM_TRAIN_TIMESTEPS
    clean = latent + (-velocity) * sigma
    return (1 - sigma_next) * clean + sigma_next * noise


def uses_text_pass(text_scale: float) -> bool:
    """Three passes per step unless the text scale is 1 (then two: cond and drop-audio)."""
    return not math.isclose(text_scale, 1.0)


def add_noise(clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Flow-matching interpolation ``(1 - t/1000) x0 + (t/1000) noise`` (motion-frame re-noising)."""
    sigma = torch.as_tensor(t, dtype=torch.float32) / NUM_TRAIN_TIMESTEPS
    return (1 - sigma) * clean + sigma * noise


class MomentumBuffer:
    """APG's running average: ``avg <- diff + momentum * avg``."""

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.average: torch.Tensor | float = 0.0

    def update(self, diff: torch.Tensor) -> torch.Tensor:
        self.average = diff + self.momentum * self.average
        return self.average


def apg(diff: torch.Tensor, cond: torch.Tensor, buffer: MomentumBuffer | None, norm_threshold: float) -> torch.Tensor:
    """Adaptive projected guidance of one guidance difference (official formulation, eta = 0)."""
    if buffer is not None:
        diff = buffer.update(diff)
    if norm_threshold > 0:
        norm = diff.norm(p=2)
        diff = diff * torch.clamp(norm_threshold / norm, max=1.0)
    d, c = diff.double(), cond.double()
    unit = c / c.norm(p=2).clamp(min=1e-12)
    orthogonal = d - (d * unit).sum() * unit
    return orthogonal.to(diff.dtype)


@dataclass
class Guidance:
    text_scale: float = 5.0
    audio_scale: float = 4.0
    use_apg: bool = False
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 55.0

    def passes(self) -> tuple[str, ...]:
        """Names of the model passes one step needs, in the order the official code runs them."""
        return ("cond", "drop_text", "uncond") if uses_text_pass(self.text_scale) else ("cond", "drop_audio")

    def new_buffers(self) -> dict[str, MomentumBuffer] | None:
        """Fresh APG momentum buffers (the official code makes new ones for every clip)."""
        if not self.use_apg:
            return None
        return {"text": MomentumBuffer(self.apg_momentum), "audio": MomentumBuffer(self.apg_momentum)}

    def combine(self, preds: dict[str, torch.Tensor], buffers: dict[str, MomentumBuffer] | None = None) -> torch.Tensor:
        cond = preds["cond"]
        if not uses_text_pass(self.text_scale):
            drop_audio = preds["drop_audio"]
            if not self.use_apg:
                return drop_audio + self.audio_scale * (cond - drop_audio)
            audio = apg(cond - drop_audio, cond, buffers["audio"], self.apg_norm_threshold)
            return cond + (self.audio_scale - 1) * audio
        drop_text, uncond = preds["drop_text"], preds["uncond"]
        if not self.use_apg:
            return uncond + self.text_scale * (cond - drop_text) + self.audio_scale * (drop_text - uncond)
        text = apg(cond - drop_text, cond, buffers["text"], self.apg_norm_threshold)
        audio = apg(drop_text - uncond, cond, buffers["audio"], self.apg_norm_threshold)
        return cond + (self.text_scale - 1) * text + (self.audio_scale - 1) * audio


def euler_step(latent: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the flow ODE from ``t`` to ``t_next`` (both on the 0..1000 scale)."""
    return latent + (-velocity) * ((t - t_next) / NUM_TRAIN_TIMESTEPS)
