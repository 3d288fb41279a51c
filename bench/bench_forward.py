"""Seconds per MultiTalk transformer forward and peak memory, one and two speakers, at a real video shape.

    python bench/bench_forward.py                       # GPU: the real 14B + audio dims; CPU: the tiny dims
    python bench/bench_forward.py --config tiny --device cpu --frames 81 --height 480 --width 832

Weights are random (the cost of a forward does not depend on them), created straight on the device.
The compute limit printed next to the time counts the matrix FLOPs of one forward (peers.md part C formulas):
linears 2*(4d^2 + 2d^2 + 2*d*ffn + 2d^2 audio) per token and layer, self-attention 4*S^2*d, cross-attention
4*S*(512+257)*d, the two-speaker reference map 2*S*S1*d.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from multitalk_serve.engine.loading.layouts import WanDims
from multitalk_serve.engine.models.transformer import latent_frames
from multitalk_serve.forward_check import random_inputs, random_model, time_forward
from multitalk_serve.tiny import TINY_DIMS

CONFIGS = {
    "14b": WanDims(),
    "mid": TINY_DIMS.replace(dim=1024, num_heads=8, ffn_dim=4096, num_layers=8),
    "tiny": TINY_DIMS,
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def forward_flops(d: WanDims, frames: int, height: int, width: int, speakers: int) -> float:
    t, h, w = latent_frames(frames), height // 16, width // 16
    s, s1 = t * h * w, h * w
    per_token = 2 * (4 * d.dim**2 + 2 * d.dim**2 + 2 * d.dim * d.ffn_dim + 2 * d.dim**2)
    per_layer = s * per_token + 4 * s * s * d.dim + 4 * s * (512 + 257) * d.dim
    per_layer += 4 * s * d.audio_context_tokens * speakers * d.dim
    if speakers == 2:
        per_layer += 2 * s * s1 * d.dim
    return d.num_layers * per_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--config", choices=sorted(CONFIGS), default="14b" if cuda else "tiny")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default=None, help="diffusers attention backend (e.g. native, flash, _flash_3)")
    parser.add_argument("--fp8", action="store_true", help="block linears in fp8 (torchao), as memory_plan=fp8")
    parser.add_argument("--group-offload", action="store_true", help="weights in host memory, streamed per block")
    parser.add_argument("--compile", action="store_true", help="regional torch.compile of the blocks")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    dims, dtype, device = CONFIGS[args.config], DTYPES[args.dtype], torch.device(args.device)
    model = random_model(dims, dtype, torch.device("cpu") if args.group_offload else device)
    if args.fp8:
        from multitalk_serve.engine.speed.memory import fp8_config, quantize_block_fp8

        config = fp8_config(device)
        for block in model.blocks:
            quantize_block_fp8(block, config)
    if args.group_offload:
        from multitalk_serve.engine.speed.memory import group_offload

        group_offload(model, device)
    if args.backend:
        model.set_attention_backend(args.backend)
    if args.compile:
        model.compile_repeated_blocks(fullgraph=False, dynamic=False)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    results = []
    for speakers in (1, 2):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        inputs = random_inputs(model, speakers, args.frames, args.height, args.width, dtype, device)
        runs, _ = time_forward(model, inputs, args.repeats)
        best = min(runs)
        flops = forward_flops(dims, args.frames, args.height, args.width, speakers)
        row = {
            "config": args.config,
            "speakers": speakers,
            "shape": f"{args.frames}x{args.height}x{args.width}",
            "tokens": inputs["hidden_states"][0, 0].numel() // 4,
            "dtype": args.dtype,
            "weights": "fp8" if args.fp8 else args.dtype,
            "group_offload": args.group_offload,
            "compile": args.compile,
            "device": machine,
            "threads": torch.get_num_threads(),
            "seconds": [round(r, 4) for r in runs],
            "best_seconds": round(best, 4),
            "tflop": round(flops / 1e12, 3),
            "achieved_tflops": round(flops / best / 1e12, 3),
        }
        if device.type == "cuda":
            row["peak_device_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
        results.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
