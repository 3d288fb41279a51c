"""One clip per preset (quality, balanced, fast): seconds end to end, transformer forwards run and reused.

    python bench/bench_presets.py                                   # random mid-size model on CPU, 128x192
    python bench/bench_presets.py --model /runpod-volume/models --speed-lora LORA --device cuda --size 480x832
    python bench/bench_presets.py --model M --speed-lora L --device cuda --memory-plan fp8+t5-offload

Without ``--model`` it writes seeded random models in the published layouts (``--config tiny|mid``) with a random
speed LoRA in the lightx2v layout. Each preset generates the same 3.2 s of speech (one 81-frame clip) from the same
seed. Caveat for random weights: TeaCache decides from how much the timestep embedding moves between steps, and its
rescaling polynomial is fitted to the real Wan2.1 weights; a random time embedding moves far more, so ``balanced``
reuses no forward on a random model. Its speed-up is only measurable with the real weights.
"""

from __future__ import annotations

import argparse
import json
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
from multitalk_serve.engine.pipeline.sampling import Guidance
from multitalk_serve.engine.speed.presets import PRESETS
from multitalk_serve.tiny import SPEED_LORA_NAME, write_tiny_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="real model folder; default: random models in a temp dir")
    parser.add_argument("--speed-lora", type=Path, help="lightx2v / FusionX LoRA (default with --model: no fast)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="mid")
    parser.add_argument("--size", default="128x192", help="HEIGHTxWIDTH")
    parser.add_argument("--seconds", type=float, default=3.2, help="speech length (3.2 s = one 81-frame clip)")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--memory-plan", help="e.g. fp8+t5-offload (default: everything resident)")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16" if torch.cuda.is_available() else "fp32")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    height, width = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, lora = args.model, args.speed_lora
        if root is None:
            root = Path(tmp)
            write_tiny_models(root, dims=CONFIGS[args.config])
            lora = root / SPEED_LORA_NAME
        presets = [p for p in args.presets.split(",") if p != "fast" or lora is not None]
        start = time.perf_counter()
        pipe = MultiTalkPipeline.from_pretrained(
            root,
            device=device,
            dtype=DTYPES[args.dtype],
            memory_plan=args.memory_plan,
            attention=args.attention,
            speed_lora=lora,
        )
        load_seconds = time.perf_counter() - start
        timed = TimedForward(pipe.transformer, device)
        pipe.transformer.forward = timed
        speech = [voice(args.seconds, 140, seed=0)]
        for name in presets:
            timed.seconds, timed.calls = 0.0, 0
            options = GenerateOptions.from_preset(name, seed=1, size=(height, width), mode="clip")
            result = pipe.generate(portrait(), speech, "a person talks", Path(tmp) / f"{name}.mp4", options=options)
            row = {
                "preset": name,
                "steps": options.steps,
                "passes_per_step": len(Guidance(options.text_scale).passes()),
                "transformer_calls": timed.calls,
                "forwards_reused": result.forwards.get("reused", 0),
                "transformer_seconds": round(timed.seconds, 2),
                "clip_seconds": result.timings["total"],
                "frames": result.frames,
            }
            rows.append(row)
            print(json.dumps(row))
    quality = next((r for r in rows if r["preset"] == "quality"), None)
    for row in rows:
        if quality:
            row["speed_up_vs_quality"] = round(quality["clip_seconds"] / row["clip_seconds"], 2)
    report = {
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU",
        "threads": torch.get_num_threads(),
        "model": str(args.model) if args.model else f"random {args.config}",
        "size": f"{height}x{width}",
        "memory_plan": pipe.memory_plan.name if pipe.memory_plan else "all resident",
        "attention": pipe.attention_backend,
        "load_seconds": round(load_seconds, 2),
        "presets": rows,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
