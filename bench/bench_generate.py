"""A whole generation: seconds per stage, transformer forwards, and the share of time spent outside them.

    python bench/bench_generate.py                                 # tiny model on CPU (written on the fly)
    python bench/bench_generate.py --config mid --size 256x448     # a mid-size transformer, bigger frames
    python bench/bench_generate.py --model /runpod-volume/models --device cuda --size 480x832 --seconds 3.2

With ``--model`` it uses real weights (any folder ``multitalk-serve generate`` accepts); otherwise it writes seeded
random models in the published layouts: ``tiny`` (dim 256, 2 blocks) or ``mid`` (dim 1024, 8 blocks), with the tiny
encoders and VAE. The transformer's forward is timed separately (synchronised on CUDA), so the report shows how
much of the job is the transformer and how much everything else (audio, encoders, VAE, colour, encoding).
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

from multitalk_serve.demo_media import portrait, voice
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline
from multitalk_serve.tiny import TINY_DIMS, write_tiny_models

CONFIGS = {"tiny": TINY_DIMS, "mid": TINY_DIMS.replace(dim=1024, num_heads=8, ffn_dim=4096, num_layers=8)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class TimedForward:
    def __init__(self, module, device: torch.device):
        self.module, self.device, self.seconds, self.calls = module, device, 0.0, 0
        self.forward = module.forward

    def __call__(self, *args, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = self.forward(*args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="real model folder; default: random models written to a temp dir")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--size", default="128x192", help="HEIGHTxWIDTH")
    parser.add_argument("--seconds", type=float, default=3.0, help="audio length (3.2 s = one 81-frame clip)")
    parser.add_argument("--speakers", type=int, choices=(1, 2), default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--text-scale", type=float, default=5.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16" if torch.cuda.is_available() else "fp32")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    height, width = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.model
        if root is None:
            root = Path(tmp)
            write_tiny_models(root, dims=CONFIGS[args.config])
        start = time.perf_counter()
        pipe = MultiTalkPipeline.from_pretrained(root, device=device, dtype=DTYPES[args.dtype])
        load_seconds = time.perf_counter() - start
        timed = TimedForward(pipe.transformer, device)
        pipe.transformer.forward = timed
        voices = [voice(args.seconds / args.speakers, 120 + 90 * i, seed=i) for i in range(args.speakers)]
        options = GenerateOptions(steps=args.steps, seed=1, size=(height, width), text_scale=args.text_scale)
        result = pipe.generate(portrait(), voices, "two people talk", Path(tmp) / "bench.mp4", options=options)
    total = result.timings["total"]
    report = {
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU",
        "threads": torch.get_num_threads(),
        "model": str(args.model) if args.model else f"random {args.config}",
        "size": f"{height}x{width}",
        "frames": result.frames,
        "clips": result.clips,
        "steps": args.steps,
        "forwards": timed.calls,
        "load_seconds": round(load_seconds, 2),
        "stage_seconds": result.timings,
        "transformer_seconds": round(timed.seconds, 3),
        "seconds_per_forward": round(timed.seconds / max(timed.calls, 1), 4),
        "share_outside_transformer": round(1 - timed.seconds / total, 4),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
