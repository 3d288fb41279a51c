"""The tiny pipeline rendering every job at 96x64 with at most 2 sampling steps.

Clients of the original worker send no size (the worker picks a 480p bucket) and 20-40 steps: on the tiny model on
two CPU cores one such job takes many minutes. Tests that check how requests are recognised and answered run the
real worker (local API, or the production job loop: ``python tests/small_render.py``) with this cap; what the
requests translate to (sizes, steps, ...) is checked without generating, on ``LegacyRequest.translate``.
"""

from __future__ import annotations

import dataclasses

SIZE = (64, 96)  # (height, width)
MAX_STEPS = 2


def small(options):
    return dataclasses.replace(options, size=SIZE, steps=min(options.steps, MAX_STEPS))


class SmallRender:
    """Wraps a loaded pipeline (everything else passes through)."""

    def __init__(self, pipeline):
        self._pipeline = pipeline

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def generate(self, *args, options=None, **kwargs):
        return self._pipeline.generate(*args, options=small(options), **kwargs)


def main() -> None:
    """The production worker (``python -m multitalk_serve.worker``) with every job rendered small."""
    from multitalk_serve.engine import MultiTalkPipeline
    from multitalk_serve.worker.__main__ import main as worker_main

    generate = MultiTalkPipeline.generate

    def small_generate(self, *args, options=None, **kwargs):
        return generate(self, *args, options=small(options), **kwargs)

    MultiTalkPipeline.generate = small_generate
    worker_main()


if __name__ == "__main__":
    main()
