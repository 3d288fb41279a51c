"""Memory per window of one long job (issue 14: host RAM and device memory flat across windows).

Builds the tiny test model, runs ONE long job at the smallest size (32 x 32, 5-frame windows with 1 motion frame: 4
new frames a window, 1 step) through ``MultiTalkPipeline.generate`` with enough audio for ``--windows`` windows,
and samples at the end of every window (when the next window's first progress event arrives, or muxing for the
last): the process's RSS and, on CUDA, ``torch.cuda.memory_allocated`` / ``max_memory_allocated``. With
``--job-dir DIR`` and an engine whose ``generate`` takes ``job_dir`` (segments written per window, issue 14), the
job runs that way too, so both paths are measured. Prints a table (windows 1, 10, 30, ... and the last) and
writes every window with ``--json``.

    PYTHONPATH=src python bench/bench_long_job.py --windows 30 --json out.json
    PYTHONPATH=src python bench/bench_long_job.py --windows 200 --job-dir /tmp/job --json out.json

``growth_mb``: RSS at the last window minus RSS at window 10 (the first windows warm up: allocator arenas, lazily
built kernels, the encoder's buffers). The tiny model's tensors are small, so what grows per window here is
bookkeeping (lists, frames kept, caches): exactly what would make a ten-minute job grow at full size.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIZE = (32, 32)  # the smallest the tiny model's buckets and the video encoder take
FRAMES_PER_CLIP, MOTION_FRAMES = 5, 1  # 4 new frames a window
REPORTED = (1, 10, 30, 60, 100, 200)


def rss_mb() -> float:
    """Resident set size of this process in MB (psutil if installed, else /proc/self/status)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


def audio_for(windows: int, rate: int = 16000) -> np.ndarray:
    """Speech-like audio (voiced harmonics under a 4 Hz syllable envelope) exactly long enough for ``windows``."""
    frames = FRAMES_PER_CLIP + (windows - 1) * (FRAMES_PER_CLIP - MOTION_FRAMES)
    n = frames * rate // 25
    t = np.arange(n) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.7
    noise = np.random.RandomState(0).standard_normal(n)
    return (0.2 * voice * envelope + 0.01 * noise).astype(np.float32)


@dataclass
class WindowSampler:
    """A progress callback: one sample at the end of every window."""

    device: str
    census_at: frozenset[int] = frozenset()  # windows whose sample also counts the live tensors
    samples: list[dict] = field(default_factory=list)
    _clip: int = 0
    _start: float = field(default_factory=time.perf_counter)

    def __call__(self, progress) -> None:
        ended = None
        if progress.stage in ("muxing", "done") and self._clip and not self._ended(self._clip):
            ended = self._clip
        elif progress.clip > self._clip:
            ended = self._clip if self._clip else None
            self._clip = progress.clip
        if ended:
            self.sample(ended)

    def _ended(self, window: int) -> bool:
        return bool(self.samples) and self.samples[-1]["window"] == window

    def sample(self, window: int) -> None:
        row = {"window": window, "rss_mb": round(rss_mb(), 2), "t_s": round(time.perf_counter() - self._start, 3)}
        if self.device.startswith("cuda"):
            import torch

            row["cuda_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 2)
            row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 2)
        if window in self.census_at:
            row.update(tensor_census())
        self.samples.append(row)


def tensor_census() -> dict:
    """The tensors alive now (found by the garbage collector) and their storage in MB, each storage counted once:
    exact where RSS is blurred by the allocator, so a tensor kept per window shows at any size."""
    import gc
    import warnings

    import torch

    storages: dict[int, int] = {}
    count = 0
    with warnings.catch_warnings():  # isinstance on every object wakes deprecated module attributes
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if not isinstance(obj, torch.Tensor) or obj.device.type == "meta":
                continue
            try:  # fake / functional tensors left by torch.compile elsewhere in the process have no storage
                storage = obj.untyped_storage()
                key = storage.data_ptr()
            except (RuntimeError, NotImplementedError):
                continue
            count += 1
            storages[key] = storage.nbytes()
    return {"live_tensors": count, "live_tensor_mb": round(sum(storages.values()) / 2**20, 3)}


def takes_job_dir() -> bool:
    from multitalk_serve.engine.pipeline.generate import MultiTalkPipeline

    return "job_dir" in inspect.signature(MultiTalkPipeline.generate).parameters


def run_job(
    pipe, windows: int, out: Path, job_dir: Path | None = None, device: str = "cpu", census_at: tuple[int, ...] = ()
) -> dict:
    """One long tiny job; returns its per-window samples, the output's probe and the summary."""
    from PIL import Image

    from multitalk_serve.engine import GenerateOptions
    from multitalk_serve.engine.pipeline.video import probe

    image = Image.fromarray(np.random.RandomState(1).randint(0, 256, (64, 64, 3), dtype=np.uint8))
    wave = audio_for(windows)
    options = GenerateOptions(
        size=SIZE, steps=1, frames_per_clip=FRAMES_PER_CLIP, motion_frames=MOTION_FRAMES, seed=0, crf=30
    )
    sampler = WindowSampler(device, frozenset(census_at))
    extra = {"job_dir": job_dir} if job_dir is not None else {}
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = pipe.generate(image, [wave], "a person talks", out, options=options, callback=sampler, **extra)
    seconds = time.perf_counter() - start
    info = probe(out)
    rows = sampler.samples
    by_window = {r["window"]: r for r in rows}
    last = rows[-1]
    tenth = by_window.get(10, rows[0])
    return {
        "path": "job_dir (segments)" if job_dir is not None else "in-memory writer",
        "windows": result.clips,
        "frames": result.frames,
        "probe": {"frames": info.frames, "seconds": info.seconds, "audio_seconds": info.audio_seconds},
        "seconds": round(seconds, 2),
        "seconds_per_window": round(seconds / max(result.clips, 1), 4),
        "growth_mb": round(last["rss_mb"] - tenth["rss_mb"], 2),
        "growth_per_window_kb": round((last["rss_mb"] - tenth["rss_mb"]) * 1024 / max(last["window"] - 10, 1), 2),
        "samples": rows,
    }


def load(root: Path | None, device: str):
    import torch

    from multitalk_serve.engine import MultiTalkPipeline
    from multitalk_serve.tiny import write_tiny_models

    if root is None:
        root = Path(tempfile.mkdtemp(prefix="tiny-models-"))
        write_tiny_models(root)
    return MultiTalkPipeline.from_pretrained(root, dtype=torch.float32, device=device)


def table(report: dict) -> str:
    cuda = "cuda_peak_mb" in report["samples"][0]
    head = f"{'window':>7} {'RSS MB':>9} {'t s':>8} {'tensors':>8} {'tensor MB':>10}"
    head += f" {'CUDA alloc MB':>14} {'CUDA peak MB':>13}" if cuda else ""
    lines = [f"{report['path']}: {report['windows']} windows, {report['frames']} frames, {report['seconds']} s", head]
    last = report["samples"][-1]["window"]
    for row in report["samples"]:
        if row["window"] in REPORTED or row["window"] == last or "live_tensors" in row:
            line = f"{row['window']:>7} {row['rss_mb']:>9.1f} {row['t_s']:>8.2f}"
            line += f" {row.get('live_tensors', ''):>8} {row.get('live_tensor_mb', ''):>10}"
            if cuda:
                line += f" {row['cuda_allocated_mb']:>14.2f} {row['cuda_peak_mb']:>13.2f}"
            lines.append(line)
    growth, per_window = report["growth_mb"], report["growth_per_window_kb"]
    lines.append(f"RSS growth window 10 -> {last}: {growth:+.2f} MB ({per_window:+.2f} KB/window)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=30, help="windows in the job (4 new frames each)")
    p.add_argument("--json", help="write every window's sample here")
    p.add_argument("--job-dir", type=Path, help="also run the job with generate(job_dir=...) when the engine has it")
    p.add_argument("--root", type=Path, help="tiny model folder (default: written to a temporary folder)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    args = p.parse_args(argv)
    if args.windows < 2:
        p.error("--windows must be 2 or more")
    pipe = load(args.root, args.device)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        census = (1, 10, 30, args.windows - 2, args.windows - 1)  # the same point of every window: the next one starts
        runs.append(run_job(pipe, args.windows, Path(tmp) / "memory.mp4", device=args.device, census_at=census))
        print(table(runs[-1]), flush=True)
        if args.job_dir is not None:
            if takes_job_dir():
                args.job_dir.mkdir(parents=True, exist_ok=True)
                out = Path(tmp) / "segments.mp4"
                runs.append(run_job(pipe, args.windows, out, args.job_dir, args.device, census))
                print(table(runs[-1]), flush=True)
            else:
                print("--job-dir: this engine's generate takes no job_dir (segments): measured the in-memory path only")
    if args.json:
        machine = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch_threads": __import__("torch").get_num_threads(),
            "device": args.device,
        }
        command = "python bench/bench_long_job.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.json).write_text(json.dumps({"machine": machine, "command": command, "runs": runs}, indent=1))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
