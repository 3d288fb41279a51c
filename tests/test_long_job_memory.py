"""Memory stays flat across the windows of a long job (issue 14), measured with bench/bench_long_job.py's sampler on
a 61-window tiny job (32 x 32, 4 new frames a window, 1 step: about 0.4 s a window on 2 cores), run as the
worker runs it: a segment per window in a job folder, with the resume state saved after each.

Two measures. The live tensors (counted through the garbage collector at the same point of windows 10 and 59: the
next window's first event) must be the same in number and bytes: anything kept per window (a frame list, decoded
clips, per-window latents or features, a growing cache) adds to them at any size, exactly. RSS between window 10
and the last must grow by less than ``RSS_BOUND_MB``: measured on the 2-core sandbox it moves by a few MB either way
(allocator arenas returning and taking pages: -3.4 .. +3.9 MB over windows 10-30, +1.5 MB over windows 10-200, see
docs/benchmarks.md); the first windows warm up (kernels, arenas) and are left out. It is the coarse guard for
memory that is not a tensor (encoder buffers, Python objects)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from multitalk_serve.engine.pipeline.video import probe

REPO = Path(__file__).resolve().parents[1]
WINDOWS = 61
RSS_BOUND_MB = 8.0


def bench():
    spec = importlib.util.spec_from_file_location("bench_long_job", REPO / "bench" / "bench_long_job.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_memory_is_flat_over_61_windows(tiny_pipeline, tmp_path):
    module = bench()
    out = tmp_path / "long.mp4"
    # counted at window 10 and at the start of the last window (whose audio is mirror-padded: never copied whole)
    # the worker's path: every window a segment in the job folder and the loop's state saved (generate(job_dir=))
    job_dir = tmp_path / "job" if module.takes_job_dir() else None
    report = module.run_job(tiny_pipeline, WINDOWS, out, job_dir, census_at=(10, WINDOWS - 1))
    rows = {row["window"]: row for row in report["samples"]}
    assert sorted(rows) == list(range(1, WINDOWS + 1))  # one sample at the end of every window
    frames = 5 + (WINDOWS - 1) * 4
    assert (report["windows"], report["frames"]) == (WINDOWS, frames)
    info = probe(out)  # the video plays: every frame decodes, with its sound
    assert info.frames == frames and info.width == info.height == 32
    assert info.audio_seconds == pytest.approx(frames / 25, abs=0.03)
    if job_dir is not None:
        assert len(list(job_dir.glob("seg_*.ts"))) == WINDOWS

    early, late = rows[10], rows[WINDOWS - 1]
    assert late["live_tensors"] == early["live_tensors"], (early, late)
    assert late["live_tensor_mb"] == early["live_tensor_mb"], (early, late)
    growth = rows[WINDOWS]["rss_mb"] - early["rss_mb"]
    assert growth < RSS_BOUND_MB, report["samples"]
