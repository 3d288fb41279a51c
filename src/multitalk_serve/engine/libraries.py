"""The third-party libraries the engine loads models with: imported once up front, and kept quiet while loading."""

from __future__ import annotations

import logging
import re
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


# Lines the libraries print on every start that no user can act on (logger name -> message patterns). Each is
# matched exactly; anything else those loggers say still shows.
LIBRARY_NOISE: dict[str, tuple[str, ...]] = {
    # torchao's optional C++ kernels (mxfp8, CUTLASS), built for another Python or GPU: nothing here uses them
    "torchao": (r"^Failed to load \S*torchao[/\\]_C\w*\S*\.so: ",),
    # torchao's int8 matmul kernels without triton (CPU-only installs): nothing here uses them
    "torchao.kernel.intmm": (r"Detected no triton, on systems without Triton certain kernels will not work",),
    # torchao registers Enums with torch's pytree, which newer torch calls deprecated
    "torch.utils._pytree": (r"is an Enum subclass and is now natively supported by torch\.compile",),
    # diffusers' torchao quantizer on a torchao version it does not know: only torchao-serialized checkpoints, unused
    "diffusers.quantizers.torchao.torchao_quantizer": (r"^Unable to import `torchao` Tensor objects",),
}


class _DropNoise(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]):
        super().__init__()
        self.patterns = tuple(re.compile(p) for p in patterns)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to hide
            return True
        return not any(p.search(message) for p in self.patterns)


def quiet_library_noise() -> None:
    """Hide ``LIBRARY_NOISE`` (filters on those loggers, installed before the libraries import; idempotent). Real
    warnings and errors of the same libraries still show."""
    for name, patterns in LIBRARY_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise(patterns))
