"""Tensor files read tensor by tensor with plain ``pread`` calls.

No memory map and no whole-file read: a tensor's bytes go straight into the buffer that will hold it (or into a
small reusable buffer when it must change dtype), so loading never holds a shard, only the model being built.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives in a file and what it decodes to.

    ``shape`` is the logical shape. ``gguf_type`` is set for GGUF block-quantized tensors, whose bytes are kept
    as they are (``byte_shape``) and dequantized by diffusers' GGUF layers at run time.
    """

    path: Path
    name: str
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    gguf_type: int | None = None
    byte_shape: tuple[int, ...] | None = None

    def read(self) -> torch.Tensor:
        """The tensor as stored (dtype ``self.dtype``; raw ``uint8`` bytes for GGUF-quantized ones), in a new buffer."""
        buf = torch.empty(self.nbytes, dtype=torch.uint8)
        self._pread(buf, 0)
        if self.gguf_type is not None:
            return buf.view(self.byte_shape)
        return buf.view(self.dtype).view(self.shape)

    def read_into(self, dest: torch.Tensor, scratch: torch.Tensor) -> None:
        """Decode into ``dest`` (any dtype and device, shape ``self.shape``) through ``scratch``, a CPU ``uint8``
        buffer: the file is read in ``len(scratch)``-byte pieces, each cast and copied into place, so converting a
        tensor never needs a second full-size copy of it."""
        if self.gguf_type is not None:
            raise ValueError(f"{self.name} is GGUF-quantized: use read()")
        flat = dest.view(-1)
        if dest.device.type == "cpu" and dest.dtype == self.dtype and dest.is_contiguous():
            self._pread(flat.view(torch.uint8), 0)  # same dtype on CPU: straight into place
            return
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        step = max(1, len(scratch) // itemsize)
        for start in range(0, flat.numel(), step):
            count = min(step, flat.numel() - start)
            piece = scratch[: count * itemsize]
            self._pread(piece, start * itemsize)
            flat[start : start + count].copy_(piece.view(self.dtype))

    def _pread(self, buf: torch.Tensor, skip: int) -> None:
        """Fill the contiguous CPU ``uint8`` tensor ``buf`` with the bytes at ``offset + skip``."""
        view = memoryview(buf.numpy())
        fd = os.open(self.path, os.O_RDONLY)
        try:
            done = 0
            while done < len(view):
                n = os.preadv(fd, [view[done:]], self.offset + skip + done)
                if n <= 0:
                    raise CheckpointError(f"{self.path}: file ends inside tensor {self.name!r} (truncated download?)")
                done += n
        finally:
            os.close(fd)


def read_safetensors_header(path: Path) -> dict[str, TensorRef]:
    """Tensor index of a ``.safetensors`` file (header only)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path}: not a safetensors file (too short)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > 100_000_000:
                raise CheckpointError(f"{path}: not a safetensors file (header length {header_len})")
            header = json.loads(f.read(header_len))
        size = path.stat().st_size
    except (OSError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot read safetensors header ({exc})") from exc
    start = 8 + header_len
    refs = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        if start + end > size:
            raise CheckpointError(f"{path}: file ends inside tensor {name!r} (truncated download?)")
        refs[name] = TensorRef(
            path, name, start + begin, end - begin, SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"])
        )
    return refs


def read_gguf_header(path: Path) -> tuple[dict[str, TensorRef], dict[str, object]]:
    """Tensor index and metadata of a ``.gguf`` file.

    Block-quantized tensors are kept raw; F32/F16/BF16 become plain tensors. ComfyUI-GGUF's
    ``comfy.gguf.orig_shape.<name>`` metadata (tensors stored flattened) is honoured.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read GGUF file ({exc})") from exc
    metadata: dict[str, object] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        try:
            metadata[name] = field.contents()
        except (ValueError, IndexError):  # pragma: no cover - exotic field types
            continue
    plain = {
        gguf.GGMLQuantizationType.F32: torch.float32,
        gguf.GGMLQuantizationType.F16: torch.float16,
        gguf.GGMLQuantizationType.BF16: torch.bfloat16,
    }
    refs = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        orig = metadata.get(f"comfy.gguf.orig_shape.{t.name}")
        qtype = gguf.GGMLQuantizationType(t.tensor_type)
        if qtype in plain:
            if orig is not None:
                shape = tuple(int(n) for n in orig)
            refs[t.name] = TensorRef(path, t.name, int(t.data_offset), int(t.n_bytes), plain[qtype], shape)
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
            logical = tuple(int(n) for n in orig) if orig is not None else shape
            refs[t.name] = TensorRef(
                path, t.name, int(t.data_offset), int(t.n_bytes), torch.uint8, logical, int(qtype), tuple(byte_shape)
            )
    return refs, metadata


def total_bytes(refs: Iterable[TensorRef]) -> int:
    return sum(r.nbytes for r in refs)
