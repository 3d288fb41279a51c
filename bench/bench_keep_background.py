"""Keep the rest of the frame: how close the output stays to the source outside the speaker region.

    python bench/bench_keep_background.py [--size 128x224] [--seconds 1.0] [--dir /tmp/keep-bench]

Dubs a synthetic moving 25 fps source (a gradient with a moving bright blob, 2x the output size) with the tiny
InfiniteTalk model, once with ``keep_background`` (one speaker box) and once without, and reports, per region:

- before encoding: the largest difference from the source frames outside the feathered region (0 by
  construction: those pixels are the source's), and the mean difference inside (generated content);
- after H.264 (the pipeline's own encoder settings): the PSNR of the output against the source frames encoded the
  same way, outside the region, inside it, and over the whole frame; and without keep_background for comparison.

The tiny model's frames are noise from random weights, the worst case for the encoder's spill across the region's
edge: with real frames (similar content on both sides of the edge) the outside PSNR can only be higher.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def moving_frame(i: int, size: tuple[int, int]):
    import numpy as np

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = w * (0.2 + 0.6 * ((i / 50) % 1.0))
    img = np.stack([xx / w * 180 + 30, yy / h * 160 + 40, np.full_like(xx, 90 + (i * 3) % 100)], axis=-1)
    img += 70 * np.exp(-(((yy - h / 2) / (h / 8)) ** 2 + ((xx - cx) / (h / 8)) ** 2))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_source(path: Path, seconds: float, size: tuple[int, int]) -> Path:
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.height, v.width = size
        v.pix_fmt, v.options = "yuv420p", {"crf": "12"}
        for i in range(round(seconds * 25)):
            frame = av.VideoFrame.from_ndarray(moving_frame(i, size), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in v.encode(frame):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="128x224", help="output HEIGHTxWIDTH (multiples of 16)")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--dir", default="/tmp/keep-bench")
    args = parser.parse_args()
    import av
    import numpy as np
    import torch

    from multitalk_serve.engine import Box, GenerateOptions, MultiTalkPipeline, VideoSource, psnr, region_mask
    from multitalk_serve.engine.pipeline.video import Mp4Writer, frames_to_uint8
    from multitalk_serve.tiny import write_tiny_models

    torch.set_num_threads(2)
    height, width = (int(v) for v in args.size.split("x"))
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "models" / "TINY.json").exists():
        write_tiny_models(folder / "models")
    source_size = (2 * height, 2 * width)
    video = write_source(folder / "source.mp4", args.seconds + 0.5, source_size)
    box = Box(x_min=width * 0.6, y_min=height * 0.4, x_max=width * 1.4, y_max=height * 1.6)  # the middle
    pipe = MultiTalkPipeline.from_pretrained(folder / "models", dtype=torch.float32, adapters=["infinitetalk-single"])
    t = np.arange(int(args.seconds * 16000)) / 16000
    wave = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)

    def encode(frames: torch.Tensor, path: Path) -> np.ndarray:
        writer = Mp4Writer(path, width, height)
        writer.write(frames_to_uint8(frames))
        writer.close()
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])

    report: dict = {"size": [height, width], "seconds": args.seconds, "machine": platform.processor() or "cpu"}
    region = region_mask((height, width), source_size, boxes=[box])
    outside, inside = (region == 0), (region == 1)
    report["outside_share"] = round(float(outside.float().mean()), 3)
    for keep in (True, False):
        options = GenerateOptions(
            model="infinitetalk", size=(height, width), steps=2, seed=1, keep_background=keep, frames_per_clip=17
        )
        start = time.perf_counter()
        job = pipe.prepare(None, [wave], "a person talks", video=video, boxes=[box] if keep else None, options=options)
        frames = torch.cat(list(pipe.frames(job)), dim=1)
        seconds = time.perf_counter() - start
        with VideoSource(video) as src:
            behind = src.clip(0, frames.shape[1], (height, width))
        ours, theirs = encode(frames, folder / f"out-{keep}.mp4"), encode(behind, folder / "source-reencoded.mp4")
        key = "keep_background" if keep else "plain"
        report[key] = {
            "seconds": round(seconds, 1),
            "raw_max_diff_outside": float((frames[:, :, outside] - behind[:, :, outside]).abs().max()),
            "raw_mean_diff_inside": round(float((frames[:, :, inside] - behind[:, :, inside]).abs().mean()), 3),
            "psnr_outside_db": round(psnr(ours, theirs, outside.numpy()), 1),
            "psnr_inside_db": round(psnr(ours, theirs, inside.numpy()), 1),
            "psnr_frame_db": round(psnr(ours, theirs), 1),
        }
        print(key, report[key], flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
