"""Segments joined vs one continuous encode: bytes at the same CRF, and that the join decodes to the segments.

``python bench/bench_segments.py [--height 240 --width 416 --frames 360 --segment 72]``: a moving test pattern with
sensor-like noise, encoded once as one stream (``Mp4Writer``) and once as window segments (``write_segment``) joined
by ``assemble`` (packets copied). Prints both sizes, their ratio, and whether the joined frames equal the segments'.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import numpy as np

from multitalk_serve.engine.pipeline.segments import Segment, assemble, write_segment
from multitalk_serve.engine.pipeline.video import Mp4Writer


def pattern(i: int, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = w * (0.2 + 0.6 * ((i / 50) % 1.0))
    img = np.stack([xx / w * 180 + 30, yy / h * 160 + 40, np.full_like(xx, 90 + (i * 3) % 100)], axis=-1)
    img += 70 * np.exp(-(((yy - h / 2) / 12) ** 2 + ((xx - cx) / 12) ** 2))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=416)
    parser.add_argument("--frames", type=int, default=360)
    parser.add_argument("--segment", type=int, default=72)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = np.stack([pattern(i, args.height, args.width) for i in range(args.frames)])
    frames = np.clip(frames.astype(int) + rng.integers(-6, 7, frames.shape), 0, 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writer = Mp4Writer(root / "single.mp4", args.width, args.height)
        writer.write(frames)
        writer.close(None)
        segments = []
        for k, start in enumerate(range(0, args.frames, args.segment)):
            part = frames[start : start + args.segment]
            path = write_segment(root / f"seg_{k:05d}.ts", part, start, None)
            segments.append(Segment(k, 0, path, start, len(part)))
        assemble(segments, root / "joined.mp4", None)
        single, joined = (root / "single.mp4").stat().st_size, (root / "joined.mp4").stat().st_size
        same = np.array_equal(decoded(root / "joined.mp4"), np.concatenate([decoded(s.path) for s in segments]))
    print(
        f"{args.height}x{args.width}, {args.frames} frames, segments of {args.segment}: one stream {single} B, "
        f"joined segments {joined} B ({joined / single:.3f}x); joined frames equal the segments': {same}"
    )


if __name__ == "__main__":
    main()
