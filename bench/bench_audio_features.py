"""Peak host memory and time of the wav2vec2 features for long audio (issue 14: ten-minute jobs).

Each length runs in a fresh process (so that its peak RSS is its own): the features of N seconds of speech-like
audio through ``Wav2Vec2Features``, with the tiny test model (``--model tiny``) or a randomly initialised model of
chinese-wav2vec2-base's configuration (``--model base``: 12 layers x 768, 12 heads, 512-channel CNN, group norm;
95 M parameters; the figures depend on the shapes, not the weights). Prints a table; ``--json`` writes it.

    PYTHONPATH=src python bench/bench_audio_features.py --model base --seconds 30 60 120 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _features(model: str, root: str, seconds: float) -> dict:
    import numpy as np
    import torch

    from multitalk_serve.engine.pipeline.audio import Wav2Vec2Features

    if model == "tiny":
        encoder = Wav2Vec2Features.from_pretrained(Path(root) / "chinese-wav2vec2-base")
    else:
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        torch.manual_seed(0)
        config = Wav2Vec2Config(feat_extract_norm="group", conv_bias=False, attn_implementation="sdpa")
        encoder = Wav2Vec2Features(Wav2Vec2Model(config), Wav2Vec2FeatureExtractor(return_attention_mask=False))
    t = np.arange(int(seconds * 16000), dtype=np.float64) / 16000
    wave = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    del t
    before = _rss_mb()
    start = time.perf_counter()
    out = encoder(wave)
    spent = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds_of_audio": seconds,
        "tokens": out.shape[0],
        "features_mb": round(out.numel() * out.element_size() / 2**20, 1),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_over_before_mb": round(peak - before, 1),
        "time_s": round(spent, 2),
        "chunked": getattr(encoder, "last_chunks", None),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("tiny", "base"), default="tiny")
    p.add_argument("--seconds", type=float, nargs="+", default=[60, 300, 600])
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--one", type=float, help=argparse.SUPPRESS)  # internal: one length, in this process
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(_features(args.model, args.root, args.one)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as root:
        if args.model == "tiny":
            from multitalk_serve.tiny import write_tiny_models

            write_tiny_models(root)
        for seconds in args.seconds:
            cmd = [sys.executable, __file__, "--model", args.model, "--root", root, "--one", str(seconds)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return done.returncode
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'audio s':>8} {'tokens':>7} {'features MB':>12} {'peak-before MB':>15} {'peak RSS MB':>12} {'time s':>7}")
    for r in rows:
        print(
            f"{r['seconds_of_audio']:>8g} {r['tokens']:>7} {r['features_mb']:>12} {r['peak_over_before_mb']:>15} "
            f"{r['peak_rss_mb']:>12} {r['time_s']:>7}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
