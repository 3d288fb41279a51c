"""Tensor files read tensor by tensor with plain ``pread`` calls.

No memory map and no whole-file read: a tensor's bytes go straight into the buffer that will hold it (or into a
small reusable buffer when it must change dtype), so loading never holds a shard, only the model being built.
Three containers are indexed the same way (header only, no tensor data read): ``.safetensors``, ``.gguf`` and
PyTorch's zip ``.pth`` (through a restricted unpickler that only rebuilds tensor references, never runs code).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

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
    stride: tuple[int, ...] | None = None  # element strides when not contiguous (``.pth`` views); None: contiguous

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def read(self) -> torch.Tensor:
        """The tensor as stored (dtype ``self.dtype``; raw ``uint8`` bytes for GGUF-quantized ones), in a new buffer."""
        buf = torch.empty(self.nbytes, dtype=torch.uint8)
        self._pread(buf, 0)
        if self.gguf_type is not None:
            return buf.view(self.byte_shape)
        if self.stride is not None:
            return buf.view(self.dtype).as_strided(self.shape, self.stride).contiguous()
        return buf.view(self.dtype).view(self.shape)

    def reshaped(self, shape: tuple[int, ...]) -> TensorRef:
        """The same bytes seen with another shape of the same size (``[1, 1, C]`` -> ``[C]``)."""
        if math.prod(shape) != math.prod(self.shape) or self.stride is not None or self.gguf_type is not None:
            raise CheckpointError(f"{self.path}: cannot view {self.name} {list(self.shape)} as {list(shape)}")
        return replace(self, shape=tuple(shape))

    def rows(self, start: int, stop: int, name: str | None = None) -> TensorRef:
        """Rows ``start:stop`` of the first dimension (a contiguous byte range): splits fused projections."""
        if self.stride is not None or self.gguf_type is not None or not 0 <= start < stop <= self.shape[0]:
            raise CheckpointError(f"{self.path}: cannot take rows {start}:{stop} of {self.name} {list(self.shape)}")
        row = math.prod(self.shape[1:]) * self.itemsize
        return replace(
            self,
            name=name or f"{self.name}[{start}:{stop}]",
            offset=self.offset + start * row,
            nbytes=(stop - start) * row,
            shape=(stop - start, *self.shape[1:]),
        )

    def read_into(self, dest: torch.Tensor, scratch: torch.Tensor) -> None:
        """Decode into ``dest`` (any dtype and device, shape ``self.shape``) through ``scratch``, a CPU ``uint8``
        buffer: the file is read in ``len(scratch)``-byte pieces, each cast and copied into place, so converting a
        tensor never needs a second full-size copy of it."""
        if self.gguf_type is not None:
            raise ValueError(f"{self.name} is GGUF-quantized: use read()")
        if self.stride is not None:  # rare (views saved into a .pth): whole tensor through a temporary
            dest.copy_(self.read())
            return
        flat = dest.view(-1)
        if dest.device.type == "cpu" and dest.dtype == self.dtype and dest.is_contiguous():
            self._pread(flat.view(torch.uint8), 0)  # same dtype on CPU: straight into place
            return
        itemsize = self.itemsize
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


# --- PyTorch zip checkpoints (.pth) -------------------------------------------------------------------------------
_PTH_STORAGES = {
    "FloatStorage": torch.float32,
    "BFloat16Storage": torch.bfloat16,
    "HalfStorage": torch.float16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: torch.dtype
    numel: int


class _PthIndexer(pickle.Unpickler):
    """Unpickles a ``torch.save``d state dict into ``TensorRef``s: only tensor rebuilds, storages and
    ``OrderedDict`` are allowed (anything else in the pickle is refused), and no tensor data is read."""

    def __init__(self, file, path: Path, offsets: dict[str, int]):
        super().__init__(file)
        self.path, self.offsets = path, offsets

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "torch" and name in _PTH_STORAGES:
            return _PTH_STORAGES[name]
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks: data
        raise CheckpointError(f"{self.path}: refusing to load {module}.{name} (not a plain state dict of tensors)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self.path}: unsupported storage type {dtype!r}")
        return _Storage(str(key), dtype, int(numel))

    def _rebuild_tensor(self, storage: _Storage, offset: int, size, stride, *_ignored) -> TensorRef:
        shape, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
        itemsize = torch.empty((), dtype=storage.dtype).element_size()
        contiguous = all(
            st == math.prod(shape[i + 1 :]) for i, (st, n) in enumerate(zip(stride, shape, strict=True)) if n != 1
        )
        span = 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True)) if all(shape) else 0
        if offset + span > storage.numel or storage.key not in self.offsets:
            raise CheckpointError(f"{self.path}: tensor outside its storage {storage.key} (corrupt file?)")
        return TensorRef(
            self.path,
            "",
            self.offsets[storage.key] + offset * itemsize,
            span * itemsize,
            storage.dtype,
            shape,
            stride=None if contiguous else stride,
        )


def read_pth_header(path: Path) -> dict[str, TensorRef]:
    """Tensor index of a PyTorch zip checkpoint (``torch.save`` of a flat ``{name: tensor}`` dict)."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            infos = archive.infolist()
            pickles = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(pickles) != 1:
                raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (no single data.pkl)")
            prefix = pickles[0].filename[: -len("data.pkl")]
            offsets = {}
            for info in infos:
                if not info.filename.startswith(prefix + "data/"):
                    continue
                if info.compress_type != zipfile.ZIP_STORED:
                    raise CheckpointError(f"{path}: compressed tensor data is not supported")
                raw.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", raw.read(4))
                start = info.header_offset + 30 + name_len + extra_len
                if start + info.file_size > size:
                    raise CheckpointError(f"{path}: file ends inside {info.filename} (truncated download?)")
                offsets[info.filename[len(prefix) + len("data/") :]] = start
            with archive.open(pickles[0]) as pkl:
                state = _PthIndexer(pkl, path, offsets).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read PyTorch checkpoint ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, TensorRef) for v in state.values()):
        raise CheckpointError(f"{path}: not a flat state dict of tensors")
    return {str(k): replace(v, name=str(k)) for k, v in state.items()}


# --- indexes of sharded files ---------------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    """A JSON config or index of a checkpoint; ``CheckpointError`` naming the file when missing or malformed."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"missing file: {path}") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


def index_refs(index_path: Path) -> dict[str, TensorRef]:
    """Tensors of a sharded checkpoint through its ``*.index.json`` (every shard it names must exist)."""
    from .formats import read_index

    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: no weight_map")
    by_file: dict[str, list[str]] = {}
    for key, filename in weight_map.items():
        by_file.setdefault(filename, []).append(key)
    missing = sorted(f for f in by_file if not (index_path.parent / f).is_file())
    if missing:
        raise CheckpointError(
            f"{index_path.parent}: missing shard files named in {index_path.name}: {', '.join(missing)}"
        )
    refs: dict[str, TensorRef] = {}
    for filename, keys in sorted(by_file.items()):
        header = read_index(index_path.parent / filename)
        absent = sorted(k for k in keys if k not in header)
        if absent:
            shown = ", ".join(absent[:8]) + (f" ... and {len(absent) - 8} more" if len(absent) > 8 else "")
            raise CheckpointError(
                f"{index_path.parent / filename}: the index places these tensors here but the file lacks them: {shown}"
            )
        refs.update({k: header[k] for k in keys})
    return refs


def folder_refs(folder: Path, stem: str) -> dict[str, TensorRef]:
    """Tensors of ``folder/<stem>.safetensors`` or of its sharded form (``<stem>.safetensors.index.json``)."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        return index_refs(index)
    single = folder / f"{stem}.safetensors"
    if single.is_file():
        return read_safetensors_header(single)
    raise CheckpointError(f"{folder}: no {stem}.safetensors and no {index.name}")


# --- reading ahead --------------------------------------------------------------------------------------------------
def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return 0


def prefetch(files: Iterable[Path], share_of_free_memory: float = 0.5) -> threading.Thread | None:
    """Ask the kernel to start reading ``files`` now (``posix_fadvise(WILLNEED)``, in a background thread), so the
    disk works while Python imports and builds the models. Stops at ``share_of_free_memory`` of the available RAM:
    pages read ahead and evicted before use would be read twice."""
    if not hasattr(os, "posix_fadvise"):
        return None
    budget = int(_available_memory() * share_of_free_memory)
    chosen, total = [], 0
    for path in dict.fromkeys(Path(f) for f in files):
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if total + size > budget:
            break
        chosen.append(path)
        total += size

    def run() -> None:
        for path in chosen:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    thread = threading.Thread(target=run, name="multitalk-prefetch", daemon=True)
    thread.start()
    return thread


# --- building modules from references -----------------------------------------------------------------------------
_BUILD_LOCK = threading.RLock()


@contextmanager
def building() -> Iterator[None]:
    """Hold while constructing a model: accelerate's ``init_empty_weights`` (and transformers' loaders) patch
    ``torch.nn.Module`` process-wide, so components loading in parallel threads must not build at the same time.
    Reading tensors (``materialize``) needs no lock."""
    with _BUILD_LOCK:
        yield


@contextmanager
def empty_weights() -> Iterator[None]:
    """``init_empty_weights`` (parameters on the meta device, buffers real) under the build lock."""
    from accelerate import init_empty_weights

    with building(), init_empty_weights():
        yield


def materialize(
    module: torch.nn.Module,
    refs: dict[str, TensorRef],
    *,
    dtype: torch.dtype | Callable[[str], torch.dtype],
    device: str | torch.device = "cpu",
    workers: int = 4,
    scratch_bytes: int = 4 << 20,
) -> int:
    """Fill every parameter of ``module`` (built on the meta device, buffers real) from ``refs``, keyed by the
    module's parameter names; each tensor is read straight into its final dtype and device. Tied parameters are
    read once. Returns the bytes read. Raises ``CheckpointError`` on missing, unexpected or misshapen tensors."""
    device = torch.device(device)
    names: dict[int, list[str]] = {}
    params: dict[int, torch.nn.Parameter] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
        params[id(param)] = param
    check_refs({ns[0]: tuple(params[i].shape) for i, ns in names.items()}, refs, aliases=names.values())
    modules = dict(module.named_modules())
    local = threading.local()
    lock = threading.Lock()

    def load(ident: int) -> int:
        key = next(n for n in names[ident] if n in refs)
        ref = refs[key]
        target = dtype(key) if callable(dtype) else dtype
        if not ref.dtype.is_floating_point:
            target = ref.dtype
        value = torch.empty(ref.shape, dtype=target, device=device)
        if not hasattr(local, "scratch"):
            local.scratch = torch.empty(scratch_bytes, dtype=torch.uint8)
        ref.read_into(value, local.scratch)
        param = torch.nn.Parameter(value, requires_grad=False)
        with lock:
            for name in names[ident]:
                owner, _, attr = name.rpartition(".")
                modules[owner]._parameters[attr] = param
        return ref.nbytes

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        total = sum(pool.map(load, list(names)))
    module.to(device)  # buffers follow
    return total


def check_refs(
    expected: dict[str, tuple[int, ...]], refs: dict[str, TensorRef], aliases: Iterable[list[str]] = ()
) -> None:
    """Every expected tensor present (under one of its alias names) with its shape, and nothing else."""
    groups = [list(a) for a in aliases] or [[k] for k in expected]
    known = {n for g in groups for n in g}
    missing = [g[0] for g in groups if not any(n in refs for n in g)]
    unexpected = sorted(k for k in refs if k not in known)
    wrong = []
    for group in groups:
        key = next((n for n in group if n in refs), None)
        if key is not None and tuple(refs[key].shape) != tuple(expected[group[0]]):
            wrong.append(f"{key} {list(refs[key].shape)} (expected {list(expected[group[0]])})")
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(sorted(items)[:12]) + (f" ... and {len(items) - 12} more" if len(items) > 12 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        files = sorted({str(r.path) for r in refs.values()})
        raise CheckpointError(f"{', '.join(files[:3])}: tensors do not match the model: " + "; ".join(problems))
