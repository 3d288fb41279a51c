"""The third-party libraries the engine loads models with: imported once up front, and kept quiet while loading."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


def import_libraries() -> None:
    """Import every model class loading uses, in the calling thread: Python's import lock serialises imports, so
    components loading in parallel threads would otherwise wait on each other's first imports."""
    import diffusers.models.autoencoders.autoencoder_kl_wan
    import diffusers.models.transformers.transformer_wan  # noqa: F401
    from transformers import (  # noqa: F401
        AutoTokenizer,
        CLIPVisionModel,
        T5TokenizerFast,
        UMT5EncoderModel,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )


_QUIET_LOCK = threading.Lock()
_quiet = {"depth": 0, "level": 0, "bars": False}


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration (restored when the last of several
    overlapping uses, e.g. components loading in parallel threads, ends)."""
    from transformers.utils import logging as tlog

    with _QUIET_LOCK:
        if _quiet["depth"] == 0:
            _quiet["level"], _quiet["bars"] = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
            tlog.set_verbosity_error()
            tlog.disable_progress_bar()
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                tlog.set_verbosity(_quiet["level"])
                if _quiet["bars"]:
                    tlog.enable_progress_bar()
