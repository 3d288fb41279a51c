"""Step caching: skip whole transformer forwards between close timesteps (TeaCache, as the official MultiTalk has it).

Each guidance branch ("cond", "drop_text", "uncond", "drop_audio") keeps its own state. Per forward, the signal is
the timestep modulation ``e0`` (``condition_embedder``'s time projection, ``[B, 6 * dim]``): its relative L1 change
since the branch's previous forward, ``mean|e0 - e0_prev| / mean|e0_prev|``, is rescaled by a 4th-degree polynomial
(calibrated by TeaCache for Wan2.1 I2V, the coefficients MultiTalk ships) and accumulated. While the sum stays under
the threshold the branch reuses its last *residual* (output of all blocks minus their input) instead of running the
blocks; once it crosses, the blocks run, the residual is refreshed and the sum resets. The first ``warmup_steps``
steps of every clip always run (the official ``ret_steps``: 5 steps).

Differences from the official code, on purpose: the state is per branch name, so 2-pass guidance (text scale 1)
works (the official counter assumes 3 forwards per step and mixes branches otherwise); the state is per clip, reset
by :meth:`StepCache.new_clip`; a threshold of 0 never skips, so "cache off" and "threshold 0" are the same sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# TeaCache coefficients for Wan2.1 I2V with the ``e0`` signal (official ``use_ret_steps=True``), highest degree first.
TEACACHE_COEFFICIENTS = {
    "480p": (2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01),
    "720p": (8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02),
}
WARMUP_STEPS = 5
DEFAULT_THRESHOLD = 0.2  # the official default; its README suggests 0.2-0.5 for a 2-3x speed-up


@dataclass
class _Branch:
    previous: torch.Tensor | None = None
    accumulated: float = 0.0
    residual: torch.Tensor | None = None


@dataclass
class StepCache:
    """TeaCache state for one generation. The pipeline calls :meth:`select` before each forward; the transformer
    calls :meth:`should_compute`, then either :meth:`reuse` or :meth:`store`."""

    threshold: float
    resolution: str = "480p"
    warmup_steps: int = WARMUP_STEPS
    computed: int = 0
    skipped: int = 0
    _branches: dict[str, _Branch] = field(default_factory=dict)
    _current: str | None = None
    _step: int = 0

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"cache threshold must be >= 0, got {self.threshold}")
        self._rescale = np.poly1d(TEACACHE_COEFFICIENTS.get(self.resolution, TEACACHE_COEFFICIENTS["480p"]))

    def new_clip(self) -> None:
        """Forget everything cached (a new clip starts from fresh noise)."""
        self._branches.clear()

    def select(self, branch: str, step: int) -> None:
        """The next forward is ``branch`` at sampling step ``step`` (0-based) of the current clip."""
        self._current, self._step = branch, step

    def should_compute(self, modulation: torch.Tensor) -> bool:
        """Decide from the timestep modulation ``e0`` whether the blocks must run for the selected branch."""
        if self._current is None:
            raise RuntimeError("StepCache.select(branch, step) must be called before each forward")
        state = self._branches.setdefault(self._current, _Branch())
        compute = True
        warm = self.threshold > 0 and self._step >= self.warmup_steps
        if warm and state.previous is not None and state.residual is not None:
            previous = state.previous
            change = (modulation - previous).abs().mean() / previous.abs().mean().clamp(min=1e-12)
            state.accumulated += float(self._rescale(float(change)))
            compute = state.accumulated >= self.threshold
        if compute:
            state.accumulated = 0.0
        state.previous = modulation.detach().clone()
        return compute

    def save(self) -> tuple:
        """The selected branch's state, to undo a forward that failed half-way (``restore``)."""
        branch = self._branches.get(self._current)
        copy = None if branch is None else _Branch(branch.previous, branch.accumulated, branch.residual)
        return self._current, copy, self.computed, self.skipped

    def restore(self, saved: tuple) -> None:
        name, branch, self.computed, self.skipped = saved
        if branch is None:
            self._branches.pop(name, None)
        else:
            self._branches[name] = branch

    def reuse(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The blocks' output approximated as input + the branch's last residual."""
        self.skipped += 1
        return hidden_states + self._branches[self._current].residual

    def store(self, before: torch.Tensor, after: torch.Tensor) -> None:
        self.computed += 1
        self._branches[self._current].residual = after - before

    @property
    def summary(self) -> str:
        total = self.computed + self.skipped
        return f"step cache (threshold {self.threshold:g}): {self.skipped} of {total} transformer forwards reused"
