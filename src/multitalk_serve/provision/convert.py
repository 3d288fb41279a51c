"""float32 safetensors -> half-precision safetensors, streamed (a few MB of memory whatever the file size).

Same file name, same tensor names and order, same ``__metadata__`` (plus a note of the conversion); float32 tensors
become the half dtype their component runs in (``half_dtype_for``: bfloat16, but float16 for the CLIP image encoder,
which a half-precision pipeline runs in float16 as the official does), rounded to nearest even (what
``tensor.to(dtype)`` does, hence exactly what a loader casting at load time would compute), except those the
transformer keeps in float32 at run time (norms, modulation, time embedder: ``loading.keeps_fp32``), which stay
float32; every other dtype is copied as is.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch

from ..engine.loading.transformer import keeps_fp32
from ..engine.loading.weights import read_safetensors_header
from ..engine.models.encoders import clip_dtype

CHUNK = 16 << 20


HALF = {torch.bfloat16: "BF16", torch.float16: "F16"}


def half_dtype_for(path: str) -> torch.dtype:
    """The dtype a converted file's float32 tensors are stored in: the dtype its component runs in when the pipeline
    runs in bfloat16 (the CLIP image encoder: float16, ``models.encoders.clip_dtype``)."""
    return clip_dtype(torch.bfloat16) if path.startswith("image_encoder/") else torch.bfloat16


def _narrowed(name: str, dtype: torch.dtype) -> bool:
    return dtype == torch.float32 and not keeps_fp32(name)


def has_float32(path: Path) -> bool:
    """Does converting ``path`` change anything?"""
    return any(_narrowed(name, ref.dtype) for name, ref in read_safetensors_header(path).items())


def to_half(src: Path, dst: Path, note: str = "", half: torch.dtype = torch.bfloat16) -> str:
    """Write the ``half`` (bfloat16 or float16) version of ``src`` to ``dst`` (complete or absent: written to a
    temporary name first); return its sha256."""
    with open(src, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    refs = read_safetensors_header(src)
    metadata = dict(header.get("__metadata__") or {})
    if note:
        metadata["multitalk_serve"] = note
    out_header: dict = {"__metadata__": metadata} if metadata else {}
    order = sorted(refs, key=lambda k: refs[k].offset)
    offset = 0
    for name in order:
        info = header[name]
        narrow = _narrowed(name, refs[name].dtype)
        dtype = HALF[half] if narrow else info["dtype"]
        nbytes = refs[name].nbytes // 2 if narrow else refs[name].nbytes
        out_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(out_header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    digest = hashlib.sha256()
    tmp = dst.with_name(dst.name + ".converting")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:

        def emit(data: bytes) -> None:
            fout.write(data)
            digest.update(data)

        emit(struct.pack("<Q", len(blob)) + blob)
        for name in order:
            ref = refs[name]
            fin.seek(ref.offset)
            remaining = ref.nbytes
            while remaining:
                piece = fin.read(min(CHUNK, remaining))
                if not piece:
                    raise OSError(f"{src}: ends inside tensor {name}")
                remaining -= len(piece)
                if _narrowed(name, ref.dtype):
                    piece = torch.frombuffer(bytearray(piece), dtype=torch.float32).to(half)
                    piece = piece.view(torch.int16).numpy().tobytes()
                emit(piece)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)
    return digest.hexdigest()
