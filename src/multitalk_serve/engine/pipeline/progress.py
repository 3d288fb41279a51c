"""Time left in a job, from the ``Progress`` events the pipeline sends.

Each clip is three phases: ``encoding`` (CLIP and the VAE encoder on the condition frames), ``sampling`` (the
steps) and ``decoding`` (the VAE decoder, colour correction, writing the frames). Counting sampling steps alone (as
``Progress.fraction`` does) leaves out the VAE on both sides: on a 480p clip the decoder alone is a quarter of the
job or more, so an estimate from steps alone runs out while the decoder still has minutes to go. ``ProgressClock``
times each phase as it happens and adds up what is left: steps at the measured time per step, encoders and decoders
at their measured time per clip. Before the first decode has been timed, it is taken as ``DECODE_PER_ENCODE`` times
the first clip's encode (the decoder does about twice the encoder's work); inside a decode, its own progress
(latent frames decoded) takes over.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DECODE_PER_ENCODE = 2.0  # first guess at a clip's decode time, in units of its encode time


class ProgressClock:
    """Feed it every ``Progress``; ``update`` returns (fraction of the job done, seconds left or ``None`` while
    nothing has been timed yet)."""

    def __init__(self, now: Callable[[], float] = time.perf_counter):
        self.now = now
        self.start = now()
        self.steps_per_clip = 0
        self.clips = 0
        self.step_seconds: list[float] = []
        self.encode_seconds: list[float] = []
        self.decode_seconds: list[float] = []
        self._last_step: float | None = None  # time of the last sampling event (step i done, or sampling started)
        self._phase: tuple[str, int] | None = None  # (stage, clip) of the phase now running
        self._phase_start = self.start
        self._encoded = False  # the running clip's encode has been timed (its last chunk reported)

    # --- events -----------------------------------------------------------------------------------------------
    def update(self, progress) -> tuple[float, float | None]:
        now = self.now()
        stage = progress.stage
        if progress.total_clips:
            self.clips = progress.total_clips
        if progress.total_steps:
            self.steps_per_clip = progress.total_steps
        phase = (stage, progress.clip)
        if phase != self._phase:
            self._close_phase(now)
            self._phase, self._phase_start = phase, now
            if stage == "sampling":  # without an encode end seen, the first step's time is unknown: skip it
                self._last_step = now
        elif stage == "sampling" and self._last_step is not None:
            self.step_seconds.append(now - self._last_step)
            self._last_step = now
        if stage == "encoding" and progress.total and progress.done >= progress.total and not self._encoded:
            self.encode_seconds.append(now - self._phase_start)  # the encoder is done: sampling starts now
            self._encoded = True
            self._phase = ("sampling", progress.clip)
            self._phase_start = self._last_step = now
        if stage == "done":
            return 1.0, 0.0
        left = self._left(progress, now)
        elapsed = now - self.start
        if left is None:
            return 0.0, None
        return elapsed / max(elapsed + left, 1e-9), left

    def _close_phase(self, now: float) -> None:
        if self._phase is None:
            return
        stage, _ = self._phase
        if stage == "encoding" and not self._encoded:
            self.encode_seconds.append(now - self._phase_start)
        elif stage == "decoding":
            self.decode_seconds.append(now - self._phase_start)
        self._encoded = False

    # --- estimates ----------------------------------------------------------------------------------------------
    def _per_step(self) -> float | None:
        return sum(self.step_seconds) / len(self.step_seconds) if self.step_seconds else None

    def _per_encode(self) -> float | None:
        return sum(self.encode_seconds) / len(self.encode_seconds) if self.encode_seconds else None

    def _per_decode(self) -> float | None:
        if self.decode_seconds:
            return sum(self.decode_seconds) / len(self.decode_seconds)
        encode = self._per_encode()
        return None if encode is None else DECODE_PER_ENCODE * encode

    def _left(self, progress, now: float) -> float | None:
        """Seconds left: the rest of the running phase, then every phase of the clips still to come."""
        step, encode, decode = self._per_step(), self._per_encode(), self._per_decode()
        if step is None or encode is None or decode is None or not self.clips:
            return None
        clip, stage, steps = progress.clip, progress.stage, self.steps_per_clip
        in_phase = now - self._phase_start
        done, total = getattr(progress, "done", 0), getattr(progress, "total", 0)

        def rest(estimate: float) -> float:
            """What remains of the running phase: from its own progress when it has some, else the estimate."""
            if total and done:
                return in_phase * (total - done) / done
            return max(estimate - in_phase, 0.0)

        whole_clip = encode + steps * step + decode
        later = max(self.clips - clip, 0) * whole_clip
        if stage == "encoding":
            return rest(encode) + steps * step + decode + later
        if stage == "sampling":
            return (steps - progress.step) * step + decode + later
        if stage == "decoding":
            return rest(decode) + later
        if stage == "muxing":
            return 0.0
        return None  # audio, conditioning: nothing timed yet
