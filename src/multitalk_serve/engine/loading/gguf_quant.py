"""Writing GGUF transformer files the way the community Wan2.1 quantizations are laid out.

gguf-py can quantize Q8_0 but not the K-quants, so Q4_K and Q6_K encoders are here (ggml block layouts,
simple max/min scale search rather than llama.cpp's iterative one: the bytes decode with any GGUF reader).

Tensor type rules follow city96's ComfyUI-GGUF converter for arch ``wan``: 1-D tensors, tensors of at most
1024 elements and ``*.modulation`` stay F32, the 5-D ``patch_embedding.weight`` is F32; the rest is quantized.
For ``Q4_K_M`` the value and FFN-down projections take Q6_K (as llama.cpp's ``_M`` mixes do) and rows that are not
a multiple of 256 fall back to Q8_0.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

QK_K = 256
Q = gguf.GGMLQuantizationType


def _blocks(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] % QK_K:
        raise ValueError(f"row length {x.shape[-1]} is not a multiple of {QK_K}")
    return x.astype(np.float32).reshape(-1, QK_K)


def _finish(out: np.ndarray, x: np.ndarray, type_size: int) -> np.ndarray:
    return out.reshape(*x.shape[:-1], x.shape[-1] // QK_K * type_size)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Q4_K: per 256 values, fp16 ``d``/``dmin``, 8 six-bit (scale, min) pairs, 4-bit quants (144 bytes)."""
    b = _blocks(x)
    n = b.shape[0]
    sub = b.reshape(n, 8, 32)
    lo = np.minimum(sub.min(axis=-1), 0.0)
    hi = sub.max(axis=-1)
    scales = (hi - lo) / 15.0
    mins = -lo
    d = scales.max(axis=-1) / 63.0
    dmin = mins.max(axis=-1) / 63.0
    d16, dmin16 = d.astype(np.float16), dmin.astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.where(d[:, None] > 0, np.rint(scales / d[:, None]), 0).clip(0, 63).astype(np.uint8)
        lm = np.where(dmin[:, None] > 0, np.rint(mins / dmin[:, None]), 0).clip(0, 63).astype(np.uint8)
    packed = np.zeros((n, 12), dtype=np.uint8)
    packed[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    step = d16.astype(np.float32)[:, None] * ls
    offset = dmin16.astype(np.float32)[:, None] * lm
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step[..., None] > 0, np.rint((sub + offset[..., None]) / step[..., None]), 0)
    q = q.clip(0, 15).astype(np.uint8).reshape(n, 4, 2, 32)  # 4 chunks of 64 = (low nibble 32, high nibble 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
    out = np.concatenate([d16.view(np.uint8).reshape(n, 2), dmin16.view(np.uint8).reshape(n, 2), packed, qs], axis=1)
    return _finish(out, x, 144)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Q6_K: per 256 values, 16 int8 sub-block scales, one fp16 ``d``, 6-bit quants (210 bytes)."""
    b = _blocks(x)
    n = b.shape[0]
    sub = b.reshape(n, 16, 16)
    amax = np.abs(sub).max(axis=-1)
    scales = amax / 31.0
    d = scales.max(axis=-1) / 127.0
    d16 = d.astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d[:, None] > 0, np.rint(scales / d[:, None]), 0).clip(-128, 127).astype(np.int8)
        step = d16.astype(np.float32)[:, None] * sc
        q = np.where(step[..., None] != 0, np.rint(sub / step[..., None]), 0)
    q = (q.clip(-32, 31) + 32).astype(np.uint8).reshape(n, 2, 4, 32)  # 2 halves of 128 = 4 rows of 32
    ql = np.concatenate(
        [(q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4), (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)], axis=-1
    )
    qh = (q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)
    out = np.concatenate(
        [ql.reshape(n, 128), qh.reshape(n, 64), sc.view(np.uint8), d16.view(np.uint8).reshape(n, 2)], axis=1
    )
    return _finish(out, x, 210)


def quantize(x: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    if qtype == Q.Q4_K:
        return quantize_q4_k(x)
    if qtype == Q.Q6_K:
        return quantize_q6_k(x)
    return gguf.quants.quantize(x.astype(np.float32), qtype)


def tensor_type(name: str, shape: tuple[int, ...], file_type: str) -> gguf.GGMLQuantizationType:
    """The GGML type a community Wan GGUF file gives ``name`` (see module docstring)."""
    elements = int(np.prod(shape))
    if len(shape) == 1 or len(shape) > 4 or elements <= 1024 or ".modulation" in name or name == "head.modulation":
        return Q.F32
    if file_type == "Q8_0":
        return Q.Q8_0 if shape[-1] % 32 == 0 else Q.F16
    if file_type == "Q4_K_M":
        if shape[-1] % QK_K:
            return Q.Q8_0 if shape[-1] % 32 == 0 else Q.F16
        return Q.Q6_K if (".ffn.2." in name or ".self_attn.v." in name) else Q.Q4_K
    raise ValueError(f"unsupported GGUF file type {file_type!r} (Q8_0, Q4_K_M)")


FILE_TYPES = {"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_K_M": gguf.LlamaFileType.MOSTLY_Q4_K_M}


def write_wan_gguf(path: str | Path, tensors: dict[str, np.ndarray], file_type: str) -> dict[str, str]:
    """Write ``tensors`` (official Wan names, float arrays) as a GGUF file; return each tensor's type name."""
    writer = gguf.GGUFWriter(str(path), arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(FILE_TYPES[file_type])
    types = {}
    for name, data in tensors.items():
        qtype = tensor_type(name, data.shape, file_type)
        writer.add_tensor(
            name,
            quantize(data, qtype)
            if qtype not in (Q.F32, Q.F16)
            else data.astype(np.float32 if qtype == Q.F32 else np.float16),
            raw_dtype=qtype,
        )
        types[name] = qtype.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return types
