"""Switching the audio adapter (MultiTalk <-> InfiniteTalk) on one loaded base, against reloading the transformer.

    python bench/bench_adapter_switch.py [--dir /tmp/adapter-bench] [--device cpu] [--sizes tiny,mid]

For each size: writes (once) an original-layout checkpoint with MultiTalk and InfiniteTalk audio weights (fp32,
as published), loads it in bf16 (``load_transformer``), reads the InfiniteTalk adapter into an ``AdapterBank``
(host memory, pinned when CUDA is there) and times ``activate`` back and forth (median of the repeats), next to
a full ``load_transformer`` of the same checkpoint (the alternative: a reload, files in the page cache).

- ``tiny``: the test model (dim 256, 2 blocks, 64-wide audio features);
- ``mid``: dim 1536 (12 heads, Wan-1.3B width), 4 blocks, the real audio widths (12 x 768 wav2vec2 features,
  512 intermediate, 32 tokens of 768): the audio projection is full size (74 M parameters), the blocks are not.

The 14B figure is extrapolated from the measured bandwidth: 2.49 G audio parameters (4.97 GB in bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

AUDIO_BYTES_14B = 2_488_000_000 * 2  # bf16


def sizes():
    from multitalk_serve.tiny import TINY_DIMS

    return {
        "tiny": TINY_DIMS,
        "mid": TINY_DIMS.replace(
            dim=1536,
            ffn_dim=8960,
            num_heads=12,
            num_layers=4,
            text_dim=64,
            image_dim=64,
            audio_channels=768,
            audio_intermediate_dim=512,
            audio_output_dim=768,
            audio_context_tokens=32,
        ),
    }


def bench(name, dims, root: Path, device: str, repeats: int) -> dict:
    import torch

    from multitalk_serve.engine.loading.adapters import AUDIO_ADAPTERS, AdapterBank, audio_parameters
    from multitalk_serve.engine.loading.transformer import load_transformer
    from multitalk_serve.tiny import ORIGINAL_DIR, write_original_layout

    folder = root / name
    if not (folder / "TINY-BENCH.json").is_file():
        write_original_layout(folder, dims, seed=0)
        (folder / "TINY-BENCH.json").write_text(json.dumps({"dims": name}))
    wan, mt = folder / ORIGINAL_DIR, folder / "MeiGen-MultiTalk"
    start = time.perf_counter()
    model = load_transformer(wan, mt, dtype=torch.bfloat16, device=device)
    reload_s = time.perf_counter() - start
    start = time.perf_counter()
    bank = AdapterBank(model)
    snapshot_s = time.perf_counter() - start
    start = time.perf_counter()
    bank.add("infinitetalk-single", AUDIO_ADAPTERS["infinitetalk-single"].local_path(folder))
    read_s = time.perf_counter() - start
    times = []
    for i in range(repeats):
        report = bank.activate("infinitetalk-single" if i % 2 == 0 else "multitalk")
        times.append(report.seconds)
    switch_s = statistics.median(times)
    audio = sum(p.numel() * p.element_size() for p in audio_parameters(model).values())
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "size": name,
        "device": device,
        "model_bytes": total,
        "audio_bytes": audio,
        "audio_fraction": round(audio / total, 3),
        "switch_s_median": round(switch_s, 5),
        "switch_s_all": [round(t, 5) for t in times],
        "switch_gb_per_s": round(audio / switch_s / 1e9, 2),
        "reload_s": round(reload_s, 3),
        "snapshot_s": round(snapshot_s, 3),
        "read_adapter_s": round(read_s, 3),
        "extrapolated_14b_switch_s": round(AUDIO_BYTES_14B / (audio / switch_s), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/adapter-bench"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="tiny,mid")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (a copy is memory-bound; on a shared, "
        "oversubscribed machine more threads mostly wait for each other)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = [bench(n, sizes()[n], args.dir, args.device, args.repeats) for n in args.sizes.split(",")]
    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
        "threads": args.threads,
    }
    print(json.dumps({"machine": machine, "torch": torch.__version__, "results": results}, indent=1))


if __name__ == "__main__":
    main()
