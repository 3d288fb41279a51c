"""Speech speed of Kokoro-82M at its published size: seconds of speech per second of compute.

The real weights cannot be downloaded here, so the model is built at the published config (``tiny_speech``'s full
dimensions, random weights, in a temporary folder) and loaded through the same code as the real one. Compute per
second of speech is the same as the real model's: the decoder and generator work per output frame, and the duration
head is biased to real phoneme lengths (about 100 ms). What differs: the sound (noise) and the exact durations.

    python bench/bench_speech.py [--device cpu] [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

TEXT = (
    "Welcome to multi-talk, this is an audio-driven video generation model for multiple person. "
    "It turns a picture and a voice into a talking video, one clip after another, for as long as the voice lasts."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from multitalk_serve.engine import SpeechRequest, SpeechSynthesizer
    from multitalk_serve.tiny_speech import write_kokoro_layout

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_kokoro_layout(tmp, full=True)
        written = time.perf_counter() - start
        start = time.perf_counter()
        synth = SpeechSynthesizer.from_pretrained(tmp, device=args.device)
        loaded = time.perf_counter() - start
        params = sum(p.numel() for p in synth.model.parameters())
        request = SpeechRequest.from_text(TEXT, "af_heart")
        start = time.perf_counter()
        synth.synthesize(request)  # warm-up: first-call allocations, G2P dictionaries
        warmup = time.perf_counter() - start
        runs = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            speech = synth.synthesize(request)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - start)
    best = min(runs)
    print(
        json.dumps(
            {
                "device": args.device,
                "threads": torch.get_num_threads(),
                "parameters": params,
                "characters": len(TEXT),
                "speech_seconds": round(speech.seconds, 2),
                "compute_seconds": [round(r, 2) for r in runs],
                "speech_per_compute_second": round(speech.seconds / best, 2),
                "first_call_seconds": round(warmup, 2),
                "load_seconds": round(loaded, 2),
                "write_seconds": round(written, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
