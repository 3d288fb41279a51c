"""A drift check for long jobs: per window, after colour correction, how far the window's frames are from its
reference frame.

Every window continues from the last (colour-corrected) frames of the one before, so an error that the colour
correction leaves (``color_correction`` below 1, clipping of saturated frames) or cannot see (the picture itself
changing: identity, face, background) feeds back and can grow over minutes. ``DriftMonitor.observe`` measures each
window against the frame it was corrected towards (``match_colors``'s reference: the image, or with a video source
the source frame at the window's start) and returns a note the first time a statistic leaves its bound;
``summary`` gives the largest deviation of each statistic and the window where it was.

The statistics, all in CIE Lab (where ``match_colors`` works), on every ``FRAME_STRIDE``-th frame and a regular grid
of about ``SAMPLE_PIXELS`` pixels of each (the reference is sampled at the same pixels; a sample's mean and spread
are those of the full frame within a fraction of a Lab unit, at a small fraction of the cost):

- ``mean_L`` / ``mean_a`` / ``mean_b``: the window's mean (over its frames) of the per-frame channel mean, minus
  the reference's, in Lab units (absolute value): a brightness or colour cast.
- ``contrast_L`` / ``contrast_a`` / ``contrast_b``: the window's mean of the per-frame channel standard deviation
  against the reference's, as ``|std - std_ref| / max(std_ref, STD_FLOOR)``: washed-out or over-contrasted frames.
- ``structure``: the picture's layout at a coarse scale, which no colour statistic sees: each frame's lightness
  averaged over a ``STRUCTURE_GRID`` x ``STRUCTURE_GRID`` grid of cells and standardised (zero mean, unit spread),
  the mean over the window's frames of the mean absolute difference to the reference's grid. 0: the same layout;
  about 1.1 for two unrelated pictures. Head motion and speech move it a little; a face, body or background that
  turns into something else moves it a lot.

Colour correction at strength 1 sets every frame's Lab mean and spread to the reference's, so the colour
statistics stay near 0 by construction (what is left is clipping): they catch ``color_correction`` < 1 and
frames too saturated to correct. ``structure`` is the one that watches identity drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .color import rgb_to_lab

# Bounds. How they were chosen (measured with this module; docs/reliability.md, "Long videos and drift"). Real
# footage: the official InfiniteTalk example video (a person talking, 15 s, 458x458), its five 81-frame windows
# against their first frame and against the video's first frame: mean at most 0.16 (L) / 0.08 (a) / 0.16 (b) Lab
# units, contrast at most 0.03, structure at most 0.10. No real model's output was measured (the tiny test models'
# output says nothing about drift), so the bounds sit between what real footage does and what is visibly wrong:
# - MEAN_BOUND, Lab units per channel: a colour difference of about 2.3 is just noticeable side by side, so what is
#   flagged is a cast or a brightness change a viewer can see, 20x what the real footage moved.
MEAN_BOUND = 3.0
# - CONTRAST_BOUND: 20 % more or less spread than the reference (a washed-out or over-contrasted picture), 7x the
#   real footage. STD_FLOOR (Lab units) keeps a near-flat reference channel from turning tiny changes into large
#   ratios (portraits' a/b spreads are 4.5-8.5, L 20-26, in the official example images).
CONTRAST_BOUND = 0.2
STD_FLOOR = 4.0
# - STRUCTURE_BOUND (0 = same layout, about 1.1 = unrelated pictures). The three official example portraits at
#   480x832: shifted sideways by 2 % of the width 0.22-0.34, by 5 % 0.47-0.73, by 10 % 0.73-1.06; zoomed 10 %
#   0.35-0.46; blended with another portrait 25 % 0.19-0.35, 50 % 0.49-0.71; another portrait 1.08-1.12. 0.5: a
#   window whose picture sits a twentieth of the frame away from the reference or is half something else, 5x the
#   real footage.
STRUCTURE_BOUND = 0.5
SAMPLE_PIXELS = 4096  # about this many pixels a frame (a regular grid: every 10th pixel of every 10th row at 480x832)
FRAME_STRIDE = 4  # every 4th frame of the window (81 frames: 21; drift is slow)
STRUCTURE_GRID = 16  # cells per side of the coarse lightness grid

COLOUR_STATS = ("mean_L", "mean_a", "mean_b")
CONTRAST_STATS = ("contrast_L", "contrast_a", "contrast_b")
STATISTICS = (*COLOUR_STATS, *CONTRAST_STATS, "structure")
BOUNDS = {
    **dict.fromkeys(COLOUR_STATS, MEAN_BOUND),
    **dict.fromkeys(CONTRAST_STATS, CONTRAST_BOUND),
    "structure": STRUCTURE_BOUND,
}
# One note per job for each kind; the advice that goes with it.
KINDS = {"colour": COLOUR_STATS, "contrast": CONTRAST_STATS, "structure": ("structure",)}
ADVICE = {
    "colour": "set color_correction to 1.0 (or closer to it)",
    "contrast": "set color_correction to 1.0 (or closer to it)",
    "structure": "the picture is moving away from the reference (identity, pose or scene drift, or a cut in a "
    "source video); InfiniteTalk models re-read the source at every window (docs/reliability.md, Long videos and "
    "drift)",
}


def _describe(kind: str, name: str, value: float) -> str:
    """What a statistic out of its bound means, e.g. ``mean_b is 4.02 Lab units off the reference's (bound 3)``."""
    bound = BOUNDS[name]
    if kind == "colour":
        return f"{name} is {value:.3g} Lab units off the reference's (bound {bound:g})"
    if kind == "contrast":
        return f"{name} (the spread) is off the reference's by {value:.3g} of it (bound {bound:g})"
    return f"structure is {value:.3g} (bound {bound:g}; 0: the reference's layout, about 1.1: an unrelated picture)"


def pixel_stride(height: int, width: int) -> int:
    """The step between sampled pixels (rows and columns) for about ``SAMPLE_PIXELS`` pixels a frame."""
    return max(1, round(math.sqrt(height * width / SAMPLE_PIXELS)))


def _lab_stats(frames: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-frame Lab means and spreads ``[F, 3]`` and coarse lightness grids ``[F, G, G]``, and the reference's."""
    # the reference goes through the same sampling: [3, 1 + F', h, w] -> [1 + F', h, w, 3]
    step = pixel_stride(*frames.shape[2:])
    both = torch.cat([reference[:, None, ::step, ::step], frames[:, ::FRAME_STRIDE, ::step, ::step]], dim=1)
    lab = rgb_to_lab(((both.permute(1, 2, 3, 0).float() + 1) / 2).clamp(0, 1), dtype=torch.float32)
    means = lab.mean(dim=(1, 2))
    stds = lab.std(dim=(1, 2), correction=0)
    grid = F.adaptive_avg_pool2d(lab[..., 0][:, None], STRUCTURE_GRID)[:, 0]  # [1 + F, G, G] lightness
    flat = grid.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True, correction=0).clamp(min=1e-6)
    return means[1:], stds[1:], z[1:], means[0], stds[0], z[0]


def window_statistics(frames: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Each of ``STATISTICS`` for one window ``[3, F, H, W]`` in [-1, 1] against its reference ``[3, H, W]``."""
    if frames.dim() != 4 or frames.shape[0] != 3 or frames.shape[1] == 0:
        raise ValueError(f"frames must be [3, F, H, W] with F >= 1, got {list(frames.shape)}")
    if tuple(reference.shape) != (3, *frames.shape[2:]):
        raise ValueError(f"reference must be [3, H, W] = {[3, *frames.shape[2:]]}, got {list(reference.shape)}")
    with torch.no_grad():
        means, stds, z, ref_mean, ref_std, ref_z = _lab_stats(frames, reference.to(frames.device, frames.dtype))
        mean_dev = (means.mean(0) - ref_mean).abs()
        contrast_dev = (stds.mean(0) - ref_std).abs() / ref_std.clamp(min=STD_FLOOR)
        structure = (z - ref_z).abs().mean()
        values = torch.cat([mean_dev, contrast_dev, structure[None]]).tolist()  # one device sync
    return dict(zip(STATISTICS, values, strict=True))


@dataclass
class DriftMonitor:
    """Watches one job's windows. ``observe`` after each window's colour correction; ``summary`` at the end.

    Windows are named by the index the caller gives (0-based, as segments are). Not thread-safe (one per job)."""

    windows: int = 0
    worst: dict[str, float] = field(default_factory=dict)  # statistic -> largest value seen
    worst_window: dict[str, int] = field(default_factory=dict)
    first_out: dict[str, int] = field(default_factory=dict)  # statistic -> first window out of bounds
    noted: dict[str, int] = field(default_factory=dict)  # kind -> window of its note

    def observe(self, window: int, frames: torch.Tensor, reference: torch.Tensor) -> str | None:
        """Measure window ``window``'s frames ``[3, F, H, W]`` (in [-1, 1], after colour correction) against its
        reference ``[3, H, W]``. Returns a note when a statistic first leaves its bound (at most one per kind and
        job: colour, contrast, structure; several kinds in one window are joined with " | "), else ``None``."""
        values = window_statistics(frames, reference)
        self.windows += 1
        out: dict[str, str] = {}  # kind -> worst statistic out of bounds this window
        for name, value in values.items():
            value = value if math.isfinite(value) else math.inf  # NaN frames are out of any bound
            if name not in self.worst or value > self.worst[name]:
                self.worst[name], self.worst_window[name] = value, window
            if value > BOUNDS[name]:
                self.first_out.setdefault(name, window)
                kind = next(k for k, names in KINDS.items() if name in names)
                if kind not in out or value / BOUNDS[name] > values[out[kind]] / BOUNDS[out[kind]]:
                    out[kind] = name
        notes = []
        for kind, name in out.items():
            if kind in self.noted:
                continue
            self.noted[kind] = window
            value = values[name] if math.isfinite(values[name]) else math.nan
            notes.append(f"drift: window {window}: {_describe(kind, name, value)}; {ADVICE[kind]}")
        return " | ".join(notes) or None

    def summary(self) -> dict:
        """``{"windows": n, "statistics": {name: {"max", "window", "bound", "first_out"}}, "flagged": [kinds]}``:
        the largest value of each statistic over the windows observed, the window where it was, its bound, and the
        first window where it was out of bounds (``None``: never). JSON-ready (an infinite max, from NaN frames,
        is reported as ``None``)."""
        stats = {}
        for name in STATISTICS:
            if name not in self.worst:
                continue
            worst = self.worst[name]
            stats[name] = {
                "max": round(worst, 4) if math.isfinite(worst) else None,
                "window": self.worst_window[name],
                "bound": BOUNDS[name],
                "first_out": self.first_out.get(name),
            }
        return {"windows": self.windows, "statistics": stats, "flagged": sorted(self.noted)}

    def state(self) -> dict:
        """Plain data to save with a job's resume state; ``DriftMonitor.from_state`` continues from it."""
        return {
            "windows": self.windows,
            "worst": dict(self.worst),
            "worst_window": dict(self.worst_window),
            "first_out": dict(self.first_out),
            "noted": dict(self.noted),
        }

    @classmethod
    def from_state(cls, state: dict) -> DriftMonitor:
        return cls(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()})
