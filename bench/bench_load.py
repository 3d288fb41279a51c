"""Loading a transformer checkpoint: seconds and peak host RAM, next to a raw read of the same bytes.

    python bench/bench_load.py [--dir /tmp/mt-bench] [--layers 12]

Writes (once) an original-layout checkpoint of Wan-1.3B-like width (dim 1536, ffn 8960) with MultiTalk audio
weights, fp32 like the published files (~3.2 GB for 12 blocks), then, each in a fresh process with the files
evicted from the page cache first:

1. raw read: every byte of the same files, 16 MB reads on 4 threads (the disk's speed, read the way we read);
2. ours: ``load_transformer(..., dtype=bf16)`` (the engine's loader);
3. naive: ``safetensors.torch.load_file`` of every shard, then cast to bf16 (what loading whole fp32 state dicts
   and casting afterwards costs; the official MultiTalk loader does this through diffusers, for 75 GB at 14B).

Peak host RAM is the growth of the process's peak resident size (VmHWM, reset before loading).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PRELUDE = r"""
import json, os, sys, time
sys.path.insert(0, {src!r})
import torch, gguf, diffusers.quantizers.gguf.utils
from multitalk_serve.engine.loading.transformer import load_transformer
from safetensors.torch import load_file

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
baseline = status("VmRSS:")
start = time.perf_counter()
"""

MODES = {
    "raw": """
from concurrent.futures import ThreadPoolExecutor
CHUNK = 16 << 20
jobs = [(p, off) for p in sys.argv[1:] for off in range(0, os.path.getsize(p), CHUNK)]
def read(job):
    path, off = job
    buf = bytearray(CHUNK)
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.preadv(fd, [buf], off)
    finally:
        os.close(fd)
with ThreadPoolExecutor(4) as pool:  # the loader's parallelism: a fair floor
    result = {"bytes": sum(pool.map(read, jobs))}
""",
    "ours": """
model = load_transformer(sys.argv[1], sys.argv[2], dtype=torch.bfloat16)
result = {"model_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}
""",
    "naive": """
state = {}
for path in sys.argv[3:]:
    state.update(load_file(path))
state = {k: v.to(torch.bfloat16) for k, v in state.items()}
result = {"model_bytes": sum(v.numel() * v.element_size() for v in state.values())}
""",
}

EPILOGUE = """
result.update(seconds=time.perf_counter() - start, peak_growth=status("VmHWM:") - baseline)
print(json.dumps(result))
"""


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache so every measurement reads from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run(mode: str, args: list[str], files: list[Path]) -> dict:
    evict(files)
    code = PRELUDE.format(src=str(ROOT / "src")) + MODES[mode] + EPILOGUE
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from multitalk_serve.engine.loading.layouts import WanDims
    from multitalk_serve.tiny import MULTITALK_DIR, ORIGINAL_DIR, write_original_layout

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mt-bench"))
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode; the median is reported")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    dims = WanDims(dim=1536, ffn_dim=8960, num_heads=12, num_layers=args.layers)
    wan, mt = args.dir / ORIGINAL_DIR, args.dir / MULTITALK_DIR
    if not (wan / "config.json").exists():
        print(f"writing a {args.layers}-block fp32 checkpoint to {args.dir} ...", flush=True)
        write_original_layout(args.dir, dims, seed=0, shards=4)
    files = [*sorted(wan.glob("*.safetensors")), mt / "multitalk.safetensors"]
    size = sum(f.stat().st_size for f in files)
    runs: dict[str, list[dict]] = {"raw": [], "ours": [], "naive": []}
    for _ in range(args.repeats):  # interleaved, so a slow spell of a shared disk hits every mode alike
        runs["raw"].append(run("raw", [str(f) for f in files], files))
        runs["ours"].append(run("ours", [str(wan), str(mt)], files))
        runs["naive"].append(run("naive", [str(wan), str(mt), *map(str, files)], files))
    raw, ours, naive = (
        sorted(runs[m], key=lambda r: r["seconds"])[len(runs[m]) // 2] for m in ("raw", "ours", "naive")
    )
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "checkpoint_gb": round(size / 1e9, 3),
        "runs_s": {m: [round(r["seconds"], 2) for r in rs] for m, rs in runs.items()},
        "loaded_model_gb": round(ours["model_bytes"] / 1e9, 3),
        "raw_read_s": round(raw["seconds"], 2),
        "raw_read_gb_per_s": round(size / raw["seconds"] / 1e9, 2),
        "ours_s": round(ours["seconds"], 2),
        "ours_vs_raw_read": round(ours["seconds"] / raw["seconds"], 2),
        "ours_peak_ram_gb": round(ours["peak_growth"] / 1e9, 3),
        "ours_peak_ram_vs_model": round(ours["peak_growth"] / ours["model_bytes"], 3),
        "naive_s": round(naive["seconds"], 2),
        "naive_peak_ram_gb": round(naive["peak_growth"] / 1e9, 3),
        "naive_peak_ram_vs_model": round(naive["peak_growth"] / naive["model_bytes"], 3),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
