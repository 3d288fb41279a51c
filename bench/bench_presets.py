"""Every preset (quality, balanced, fast, realtime) on the same speech: transformer forwards per second of video,
seconds per second of video, time to the first segment.

    python bench/bench_presets.py                                   # random mid-size models on CPU, 128x192, 6.4 s
    python bench/bench_presets.py --model /runpod-volume/models --speed-lora LORA --device cuda --size 480x832
    python bench/bench_presets.py --model M --speed-lora L --device cuda --memory-plan fp8+t5-offload

Without ``--model`` it writes seeded random models in the published layouts (``--config tiny|mid``, SoulX-FlashTalk
included) with a random speed LoRA in the lightx2v layout. Each preset generates the same speech (streaming: as many
windows as the audio needs) from the same seed, through ``generate`` with a job folder as the worker runs it, so the
first segment is timed as a user would see it. ``quality``, ``balanced`` and ``fast`` run MultiTalk (81-frame
windows, 56 new frames each after the first); ``realtime`` runs FlashTalk (33-frame windows, 28 new frames each), a
second pipeline (another transformer), loaded after the first is released. ``--size`` applies to every preset, so
the forwards differ only by their frames; the real presets also differ in size (realtime ~768x448, the others 480p
buckets such as 480x832).

Caveat for random weights: TeaCache decides from how much the timestep embedding moves between steps, and its
rescaling polynomial is fitted to the real Wan2.1 weights; a random time embedding moves far more, so ``balanced``
reuses no forward on a random model. Its speed-up is only measurable with the real weights.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_generate import CONFIGS, DTYPES, TimedForward
from multitalk_serve.demo_media import portrait, voice
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline
from multitalk_serve.engine.speed.presets import PRESETS
from multitalk_serve.tiny import SPEED_LORA_NAME, write_tiny_models


def run_preset(pipe: MultiTalkPipeline, name: str, speech, size: tuple[int, int], work: Path) -> dict:
    timed = TimedForward(pipe.transformer, pipe.device)
    pipe.transformer.forward = timed
    options = GenerateOptions.from_preset(name, seed=1, size=size)
    first: list[float] = []
    started = time.perf_counter()

    def on_segment(segment) -> None:
        if not first:
            first.append(time.perf_counter() - started)

    try:
        result = pipe.generate(
            portrait(),
            speech,
            "a person talks",
            work / f"{name}.mp4",
            options=options,
            job_dir=work / f"{name}-job",
            on_segment=on_segment,
        )
    finally:
        del pipe.transformer.forward
    video_s = result.frames / 25
    resolved = options.resolved()
    return {
        "preset": name,
        "model": result.model,
        "steps": options.steps,
        "window_frames": resolved.frames_per_clip,
        "windows": result.clips,
        "frames": result.frames,
        "transformer_calls": timed.calls,
        "forwards_reused": result.forwards.get("reused", 0),
        "forwards_per_video_s": round(timed.calls / video_s, 2),
        "transformer_seconds": round(timed.seconds, 2),
        "total_seconds": result.timings["total"],
        "seconds_per_video_s": round(result.timings["total"] / video_s, 2),
        "first_segment_s": round(first[0], 2) if first else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="real model folder; default: random models in a temp dir")
    parser.add_argument("--speed-lora", type=Path, help="lightx2v / FusionX LoRA (default with --model: no fast)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="mid")
    parser.add_argument("--size", default="128x192", help="HEIGHTxWIDTH")
    parser.add_argument("--seconds", type=float, default=6.4, help="speech length (6.4 s = 160 frames)")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--memory-plan", help="e.g. fp8+t5-offload (default: everything resident)")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16" if torch.cuda.is_available() else "fp32")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    size = tuple(int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    rows, loads = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root, lora = args.model, args.speed_lora
        if root is None:
            root = work / "models"
            write_tiny_models(root, dims=CONFIGS[args.config])
            lora = root / SPEED_LORA_NAME
        wanted = [p for p in args.presets.split(",") if p != "fast" or lora is not None]
        speech = [voice(args.seconds, 140, seed=0)]
        groups = {"flashtalk": [p for p in wanted if PRESETS[p].model == "flashtalk"]}
        groups["multitalk"] = [p for p in wanted if p not in groups["flashtalk"]]
        for model, presets in groups.items():
            if not presets:
                continue
            start = time.perf_counter()
            pipe = MultiTalkPipeline.from_pretrained(
                root,
                device=device,
                dtype=DTYPES[args.dtype],
                memory_plan=args.memory_plan,
                attention=args.attention,
                speed_lora=lora if model == "multitalk" else None,
                adapters=[model],
            )
            loads[model] = round(time.perf_counter() - start, 2)
            for name in presets:
                row = run_preset(pipe, name, speech, size, work)
                rows.append(row)
                print(json.dumps(row), flush=True)
            attention = pipe.attention_backend
            del pipe
            gc.collect()
    quality = next((r for r in rows if r["preset"] == "quality"), None)
    for row in rows:
        if quality:
            row["speed_up_vs_quality"] = round(quality["seconds_per_video_s"] / row["seconds_per_video_s"], 2)
    report = {
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "model": str(args.model) if args.model else f"random {args.config}",
        "size": f"{size[0]}x{size[1]}",
        "speech_s": args.seconds,
        "memory_plan": args.memory_plan or "all resident",
        "attention": attention,
        "load_seconds": loads,
        "presets": rows,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
