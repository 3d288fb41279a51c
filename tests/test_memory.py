"""Loading holds only the model: peak host RAM while loading fp32 shards into a bf16 model stays within 1.2x of
the loaded model's bytes (the official loader casts after loading everything in fp32 and needs ~2x the fp32 size)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from multitalk_serve.engine.loading.layouts import WanDims
from multitalk_serve.tiny import MULTITALK_DIR, ORIGINAL_DIR, write_original_layout

# ~100 M parameters: 0.4 GB of fp32 files -> a 0.2 GB bf16 model.
MEMORY_DIMS = WanDims(
    dim=768,
    ffn_dim=3072,
    freq_dim=256,
    text_dim=256,
    num_heads=6,
    num_layers=8,
    image_dim=256,
    audio_channels=64,
    audio_intermediate_dim=64,
    audio_output_dim=64,
    audio_context_tokens=4,
)

MEASURE = r"""
import json, sys, torch
import diffusers.quantizers.gguf.utils, gguf  # everything loading may import, imported before measuring
from multitalk_serve.engine.loading.transformer import load_transformer

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
baseline = status("VmRSS:")
model = load_transformer(sys.argv[1], sys.argv[2], dtype=torch.bfloat16, workers=int(sys.argv[3]))
peak = status("VmHWM:")
model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"baseline": baseline, "peak": peak, "model_bytes": model_bytes}))
"""


def clear_refs_works() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not clear_refs_works(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
def test_peak_host_ram_while_loading_is_within_1_2x_of_the_model(tmp_path):
    write_original_layout(tmp_path, MEMORY_DIMS, seed=1)
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path / ORIGINAL_DIR), str(tmp_path / MULTITALK_DIR), "4"],
        capture_output=True,
        text=True,
        check=True,
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    grown = m["peak"] - m["baseline"]
    assert m["model_bytes"] > 150e6
    print(
        f"peak host RAM grew {grown / 1e6:.1f} MB loading a {m['model_bytes'] / 1e6:.1f} MB model "
        f"({grown / m['model_bytes']:.3f}x)"
    )
    assert grown <= 1.2 * m["model_bytes"], (
        f"peak grew {grown / 1e6:.0f} MB for a {m['model_bytes'] / 1e6:.0f} MB model"
    )
