"""The drift check (engine/pipeline/drift.py) on a synthetic drifting window loop: no model.

A fake "generator" stands in for the sampler + decoder: its raw output for window k starts from the window's motion
frames (the last frames of the previous, colour-corrected window; the reference for the first) and adds a
systematic drift (a brightness shift and a contrast gain per window, plus noise; optionally a blend towards another
picture, which colour statistics cannot undo). Then, as in ``generate.py``'s clip loop, ``match_colors`` corrects the
window towards the reference, the monitor observes it, and the next window continues from its last frames.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from multitalk_serve.engine.pipeline.color import match_colors, rgb_to_lab
from multitalk_serve.engine.pipeline.drift import (
    BOUNDS,
    CONTRAST_BOUND,
    MEAN_BOUND,
    STATISTICS,
    STRUCTURE_BOUND,
    STRUCTURE_GRID,
    DriftMonitor,
    window_statistics,
)

H, W, FRAMES, MOTION, WINDOWS = 48, 80, 9, 3, 30
SHIFT, GAIN, NOISE = 0.03, 1.05, 0.01  # per window, in [-1, 1] pixel units


def portrait() -> torch.Tensor:
    """A small synthetic portrait ``[3, H, W]`` in [-1, 1]: a gradient background, a face, a shirt, some texture."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    face = ((x / 0.3) ** 2 + ((y + 0.15) / 0.5) ** 2 < 1).float()
    shirt = ((y > 0.45) & (x.abs() < 0.65)).float() * (1 - face)
    back = 1 - face - shirt
    colours = {  # RGB in [-1, 1]: background (with a gradient), skin, shirt
        "back": torch.stack([-0.5 + 0.3 * x, -0.3 + 0.2 * y, 0.2 + 0.3 * x * y]),
        "skin": torch.tensor([0.55, 0.15, -0.05])[:, None, None].expand(3, H, W),
        "shirt": torch.tensor([-0.6, -0.5, -0.2])[:, None, None].expand(3, H, W),
    }
    image = colours["back"] * back + colours["skin"] * face + colours["shirt"] * shirt
    texture = torch.randn(3, H, W, generator=torch.Generator().manual_seed(3)) * 0.05
    return (image + F.avg_pool2d(texture[None], 3, 1, 1)[0]).clamp(-1, 1)


def elsewhere() -> torch.Tensor:
    """The same pixels in another layout (the portrait rolled by half its width: the face split to the edges)."""
    return torch.roll(portrait(), W // 2, dims=2)


def mouth(frame: torch.Tensor, t: int) -> torch.Tensor:
    """The frame with the mouth (a small ellipse in the face) opened by ``t`` (speech: it moves within a window)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    region = ((x / 0.1) ** 2 + ((y - 0.1) / 0.05) ** 2 < 1).float()
    return frame * (1 - region * 0.4 * abs(math.sin(t)))


def fake_generator(motion: torch.Tensor, window: int, gen: torch.Generator, other: torch.Tensor | None, morph: float):
    """Raw frames ``[3, FRAMES, H, W]`` for one window: the motion frames, then speech on the last one; all of it
    drifted by one window's brightness shift, contrast gain and noise (and blended towards ``other`` by ``morph``)."""
    last = motion[:, -1]
    new = torch.stack([mouth(last, window * FRAMES + t) for t in range(FRAMES - motion.shape[1])], dim=1)
    frames = torch.cat([motion, new], dim=1)
    if other is not None:
        frames = (1 - morph) * frames + morph * other[:, None]
    frames = frames * GAIN + SHIFT + NOISE * torch.randn(frames.shape, generator=gen)
    return frames.clamp(-1, 1)


def run_loop(strength: float, other: torch.Tensor | None = None, morph: float = 0.0):
    """``WINDOWS`` windows of the loop; returns the monitor, the notes per window and the corrected windows."""
    reference, gen = portrait(), torch.Generator().manual_seed(0)
    monitor, notes, windows = DriftMonitor(), {}, []
    motion = reference[:, None].expand(3, MOTION, H, W)  # the first window continues from the reference
    for k in range(WINDOWS):
        raw = fake_generator(motion, k, gen, other, morph)
        corrected = match_colors(raw, reference, strength)
        note = monitor.observe(k, corrected, reference)
        if note is not None:
            notes[k] = note
        windows.append(corrected)
        motion = corrected[:, -MOTION:]
    return monitor, notes, windows, reference


def full_lab_deviation(frames: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Independently of the monitor (every pixel of every frame, float64): the window's largest Lab mean deviation
    and largest relative spread deviation against the reference."""
    lab = rgb_to_lab(((frames.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1))  # [F, H, W, 3]
    ref = rgb_to_lab(((reference.permute(1, 2, 0) + 1) / 2).clamp(0, 1))
    mean = (lab.mean(dim=(1, 2)).mean(0) - ref.mean(dim=(0, 1))).abs().max().item()
    ref_std = ref.std(dim=(0, 1), correction=0)
    spread = ((lab.std(dim=(1, 2), correction=0).mean(0) - ref_std).abs() / ref_std.clamp(min=4.0)).max().item()
    return mean, spread


def full_structure(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """Independently: the structure statistic from every frame (area-averaged lightness grids, float64)."""

    def grids(images: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] -> [N, G*G] standardised
        light = rgb_to_lab(((images.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1))[..., 0]
        flat = F.adaptive_avg_pool2d(light[:, None], STRUCTURE_GRID).flatten(1)
        return (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True, correction=0)

    return (grids(frames.permute(1, 0, 2, 3)) - grids(reference[None])).abs().mean().item()


def first_over(values: list[float], bound: float) -> int | None:
    return next((k for k, v in enumerate(values) if v > bound), None)


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_colour_correction_keeps_a_drifting_loop_within_bounds(strength):
    monitor, notes, windows, reference = run_loop(strength)
    summary = monitor.summary()
    assert notes == {} and summary["flagged"] == [] and summary["windows"] == WINDOWS
    for name in STATISTICS:
        entry = summary["statistics"][name]
        assert entry["max"] <= BOUNDS[name] and entry["first_out"] is None, (name, entry)
    # and by the independent full-frame measure: the colour stays within the bounds in every window
    deviations = [full_lab_deviation(w, reference) for w in windows]
    assert max(d[0] for d in deviations) < MEAN_BOUND and max(d[1] for d in deviations) < CONTRAST_BOUND
    # the raw drift is real: one window of it on the reference is already a visible fraction of the bound
    one_window = full_lab_deviation(fake_generator(reference[:, None], 0, torch.Generator(), None, 0.0), reference)
    assert one_window[0] > MEAN_BOUND / 4


def test_without_colour_correction_the_drift_accumulates_and_is_flagged_where_it_first_leaves_its_bound():
    monitor, notes, windows, reference = run_loop(0.0)
    deviations = [full_lab_deviation(w, reference) for w in windows]
    first_mean = first_over([d[0] for d in deviations], MEAN_BOUND)
    first_contrast = first_over([d[1] for d in deviations], CONTRAST_BOUND)
    assert first_mean is not None and first_contrast is not None and 0 < first_mean < WINDOWS - 1
    assert deviations[-1][0] > 3 * MEAN_BOUND  # it kept growing
    summary = monitor.summary()
    assert summary["flagged"] == ["colour", "contrast"]
    stats = summary["statistics"]
    assert min(stats[n]["first_out"] for n in ("mean_L", "mean_a", "mean_b") if stats[n]["first_out"] is not None) == (
        first_mean
    )
    assert min(s["first_out"] for n, s in stats.items() if n.startswith("contrast") and s["first_out"] is not None) == (
        first_contrast
    )
    # one note per kind, in the window where it first left its bound, naming the statistic and the bound
    colour = [(k, n) for k, note in notes.items() for n in note.split(" | ") if "mean_" in n]
    contrast = [(k, n) for k, note in notes.items() for n in note.split(" | ") if "contrast_" in n]
    assert len(colour) == 1 and colour[0][0] == first_mean
    assert f"window {first_mean}:" in colour[0][1] and f"(bound {MEAN_BOUND:g})" in colour[0][1]
    assert "color_correction" in colour[0][1]
    assert len(contrast) == 1 and contrast[0][0] == first_contrast and f"(bound {CONTRAST_BOUND:g})" in contrast[0][1]
    assert len(notes) <= 2  # no note after the first of each kind, though every later window is out of bounds


def test_structure_drift_that_colour_correction_cannot_fix_is_flagged():
    # each window blends 10 % towards the same pixels in another layout: the colours stay (match_colors keeps them),
    # the picture changes
    monitor, notes, windows, reference = run_loop(1.0, other=elsewhere(), morph=0.1)
    structure = [full_structure(w, reference) for w in windows]
    first = first_over(structure, STRUCTURE_BOUND)
    assert first is not None and 0 < first < WINDOWS - 1 and structure[-1] > 1.5 * STRUCTURE_BOUND
    summary = monitor.summary()
    assert summary["flagged"] == ["structure"]  # colour correction held the colour statistics
    assert summary["statistics"]["structure"]["first_out"] == first
    assert summary["statistics"]["structure"]["window"] >= first
    assert list(notes) == [first] and f"window {first}: structure" in notes[first]
    assert "InfiniteTalk" in notes[first] and f"(bound {STRUCTURE_BOUND:g};" in notes[first]


def test_speech_and_small_motion_stay_within_bounds_and_another_picture_does_not():
    reference = portrait()
    talking = torch.stack([mouth(reference, t) for t in range(FRAMES)], dim=1)
    moved = torch.roll(talking, 1, dims=3)  # one pixel of 80: a small head movement
    for frames in (talking, moved):
        values = window_statistics(frames, reference)
        assert all(values[n] <= BOUNDS[n] for n in STATISTICS), values
    other = window_statistics(elsewhere()[:, None], reference)
    assert other["structure"] > 1.8 * STRUCTURE_BOUND


def test_identical_frames_measure_zero():
    reference = portrait()
    values = window_statistics(reference[:, None].repeat(1, 5, 1, 1), reference)
    assert set(values) == set(STATISTICS) and max(values.values()) < 1e-4
    assert DriftMonitor().observe(0, reference[:, None], reference) is None


def test_nan_frames_are_flagged_and_the_summary_stays_json_ready():
    import json

    reference = portrait()
    monitor = DriftMonitor()
    note = monitor.observe(4, torch.full((3, 2, H, W), float("nan")), reference)
    assert note is not None and "window 4" in note
    summary = monitor.summary()
    assert summary["statistics"]["mean_L"]["max"] is None and summary["statistics"]["mean_L"]["first_out"] == 4
    json.dumps(summary)


def test_the_state_carries_over_a_resume():
    reference, other = portrait(), elsewhere()
    far = (0.5 * reference + 0.5 * other)[:, None].repeat(1, 3, 1, 1)
    whole, first = DriftMonitor(), DriftMonitor()
    for k, frames in enumerate([reference[:, None], far, far]):
        whole.observe(k, frames, reference)
        if k < 2:
            first.observe(k, frames, reference)
    resumed = DriftMonitor.from_state(first.state())
    assert resumed.observe(2, far, reference) is None  # the structure note was given before the resume
    assert resumed.summary() == whole.summary()


def test_bad_shapes_are_refused():
    reference = portrait()
    monitor = DriftMonitor()
    with pytest.raises(ValueError, match="frames must be"):
        monitor.observe(0, reference, reference)
    with pytest.raises(ValueError, match="reference must be"):
        monitor.observe(0, reference[:, None], reference[:, :10])
    assert monitor.windows == 0
