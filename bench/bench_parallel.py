"""Seconds per MultiTalk transformer forward on 1, 2, 4, 8 ranks (context parallel, Ulysses), and the difference
of the N-rank output to the one-rank output.

    python bench/bench_parallel.py                                  # GPUs: the 14B at 81x480x832, every 2^k <= GPUs
    python bench/bench_parallel.py --ranks 1 2 --config tiny-cp     # CPU (gloo): correctness and overhead figure

It starts its own processes (one per GPU, NCCL; or gloo ranks on CPU, each with cores/N threads), so run it with
plain ``python``, not torchrun. Weights are random (a forward's cost does not depend on them). The 14B has 40 heads:
Ulysses splits them, so 3, 6 or 7 ranks need ``--anything`` (diffusers' "Ulysses anything": uneven shards).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from multitalk_serve.engine.loading.layouts import WanDims
from multitalk_serve.engine.parallel import run_on_ranks
from multitalk_serve.parallel_check import Case, rank_timing
from multitalk_serve.tiny import TINY_DIMS

CONFIGS = {
    "14b": WanDims(),
    # the tiny model (2 layers, 256 wide) with 4 heads: Ulysses needs heads % ranks == 0
    "tiny-cp": TINY_DIMS.replace(num_heads=4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpus = torch.cuda.device_count()
    parser.add_argument("--config", choices=sorted(CONFIGS), default="14b" if gpus else "tiny-cp")
    parser.add_argument("--ranks", type=int, nargs="+", default=None, help="default: 1, 2, 4, 8 up to the GPUs")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--speakers", type=int, choices=[1, 2], default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default=None, help="diffusers attention backend (native, flash, _flash_3, ...)")
    parser.add_argument("--anything", action="store_true", help="uneven shards (any rank count)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for each rank count")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    ranks = args.ranks or ([n for n in (1, 2, 4, 8) if n <= gpus] if gpus else [1, 2])
    dtype = args.dtype or ("bfloat16" if gpus else "float32")
    dims = CONFIGS[args.config]
    case = Case(args.speakers, "multitalk", args.frames, args.height, args.width, args.anything)
    machine = torch.cuda.get_device_name(0) if gpus else f"{platform.processor() or 'cpu'}, {_cores()} cores"
    rows, baseline = [], None
    for world in ranks:
        results = run_on_ranks(
            rank_timing, world, (dims, case, dtype, args.repeats, args.backend), timeout_s=args.timeout
        )
        # a forward ends when its slowest rank ends: per repeat, the slowest rank's time
        per_repeat = [max(r["seconds"][i] for r in results) for i in range(args.repeats)]
        seconds = statistics.median(per_repeat)
        output = results[0]["output"]
        if baseline is None and world == 1:
            baseline = (seconds, output)
        row = {
            "config": args.config,
            "ranks": world,
            "shape": f"{args.frames}x{args.height}x{args.width}",
            "tokens": ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16),
            "speakers": args.speakers,
            "dtype": dtype,
            "device": machine,
            "threads_per_rank": results[0]["threads"],
            "seconds": [round(s, 4) for s in per_repeat],
            "median_seconds": round(seconds, 4),
        }
        if baseline is not None:
            row["speedup"] = round(baseline[0] / seconds, 2)
            row["max_abs_diff_to_1_rank"] = float((output - baseline[1]).abs().max())
        if gpus:
            row["peak_gb_rank0"] = round(results[0]["peak_bytes"] / 1e9, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
