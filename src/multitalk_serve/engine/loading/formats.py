"""The weight file formats we read, in one table: what each is, how its tensor index is read, and whether its tensors
may stay quantized on the device. Every suffix check in the engine goes through ``format_of``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .weights import TensorRef, read_gguf_header, read_pth_header, read_safetensors_header


@dataclass(frozen=True)
class WeightFormat:
    name: str
    suffixes: tuple[str, ...]
    what: str
    read_index: Callable[[Path], dict[str, TensorRef]]  # header only: no tensor data read
    quantized: bool = False  # linears may stay quantized on the device (diffusers' GGUFLinear)
    transformer: bool = False  # a whole transformer may come as one file of this format


SAFETENSORS = WeightFormat(
    "safetensors",
    (".safetensors",),
    "safetensors: diffusers and MultiTalk weights, single-file repacks (read by offset, straight into the tensors)",
    read_safetensors_header,
    transformer=True,
)
GGUF = WeightFormat(
    "gguf",
    (".gguf",),
    "GGUF (city96 layout, Q8_0 / K-quants / float): quantized linears stay quantized, the rest is dequantized",
    lambda path: read_gguf_header(path)[0],
    quantized=True,
    transformer=True,
)
PTH = WeightFormat(
    "pth",
    (".pth", ".pt", ".bin"),
    "PyTorch zip checkpoint: the original layout's T5 / CLIP / VAE, wav2vec2's pytorch_model.bin (a restricted "
    "unpickler rebuilds tensor references only, never runs code)",
    read_pth_header,
)
FORMATS = (SAFETENSORS, GGUF, PTH)


def format_of(path: str | Path) -> WeightFormat | None:
    """The format of a weight file by its suffix, or ``None``."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS if suffix in f.suffixes), None)


def read_index(path: str | Path) -> dict[str, TensorRef]:
    """Tensor index of one weight file of any format in ``FORMATS``."""
    fmt = format_of(path)
    if fmt is None:
        known = ", ".join(s for f in FORMATS for s in f.suffixes)
        raise CheckpointError(f"{path}: not a weight file we read ({known})")
    return fmt.read_index(Path(path))
