"""Command line: ``multitalk-serve <verb>``.

Verbs:
  make-tiny DIR      write seeded random-weight models in every published layout (see ``multitalk_serve.tiny``)
  forward MODEL      load a transformer from any layout and time one forward pass on random inputs
  demo [DIR]         make-tiny, then one forward from each layout, side by side
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _cmd_make_tiny(args: argparse.Namespace) -> int:
    from .tiny import PARITY_DIMS, write_original_layout, write_tiny_models

    start = time.perf_counter()
    if args.parity:
        write_original_layout(Path(args.dir), PARITY_DIMS, args.seed)
        print(f"wrote the parity checkpoint (original layout + MultiTalk) to {args.dir}")
    else:
        manifest = write_tiny_models(args.dir, seed=args.seed)
        print(json.dumps(manifest, indent=2))
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_forward(args: argparse.Namespace) -> int:
    from .engine.forward_check import run_forward

    result = run_forward(
        args.model,
        args.multitalk,
        speakers=args.speakers,
        frames=args.frames,
        height=args.height,
        width=args.width,
        dtype=DTYPES[args.dtype],
        device=args.device,
        repeats=args.repeats,
    )
    print(json.dumps(result, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .engine.forward_check import compare_layouts
    from .tiny import write_tiny_models

    root = Path(args.dir)
    if not (root / "TINY.json").exists():
        print(f"writing tiny models to {root} ...")
        write_tiny_models(root)
    print("one transformer forward from each layout (tiny random weights: the numbers are noise, the plumbing is real)")
    rows = compare_layouts(root, speakers=args.speakers)
    header = f"{'layout':<22}{'load s':>8}{'forward s':>11}  {'output shape':<22}{'max |diff| vs original':>24}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['layout']:<22}{row['load_s']:>8.2f}{row['forward_s']:>11.3f}  {row['shape']!s:<22}"
            f"{row['max_abs_diff_vs_original']:>24.2e}"
        )
    print(
        "\nThis was a tiny random model. For real output, fetch the published weights "
        "(Wan-AI/Wan2.1-I2V-14B-480P[-Diffusers], MeiGen-AI/MeiGen-MultiTalk, TencentGameMate/chinese-wav2vec2-base)."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multitalk-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("make-tiny", help="write seeded random-weight models in the published layouts")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parity", action="store_true", help="only the original-layout checkpoint used by parity fixtures")
    p.set_defaults(func=_cmd_make_tiny)

    p = sub.add_parser("forward", help="time one transformer forward pass on random inputs")
    p.add_argument("model", help="checkpoint directory, .safetensors or .gguf")
    p.add_argument("--multitalk", help="multitalk.safetensors (or its directory) if the model lacks the audio weights")
    p.add_argument("--speakers", type=int, default=1, choices=(1, 2))
    p.add_argument("--frames", type=int, default=81, help="video frames (4k+1)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=1)
    p.set_defaults(func=_cmd_forward)

    p = sub.add_parser("demo", help="make-tiny + one forward from each layout")
    p.add_argument("dir", nargs="?", default="tiny")
    p.add_argument("--speakers", type=int, default=2, choices=(1, 2))
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from .engine.errors import EngineError

    try:
        return args.func(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
