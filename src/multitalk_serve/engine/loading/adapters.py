"""Audio adapters: the audio layers that turn a Wan2.1-I2V-14B base into MultiTalk or InfiniteTalk.

MeiGen's MultiTalk and InfiniteTalk share the base transformer and the structure of the audio layers
(``audio_proj.*``, ``blocks.N.audio_cross_attn.*``, ``blocks.N.norm_x.*``: 330 tensors, 2.49 B parameters at 14B,
about 15% of the model); only the audio weights and one numerical detail differ (``audio_norm_fp32``, see
``models/transformer.py``). So one process holds ONE base transformer and switches the audio layers per job:

- ``AUDIO_ADAPTERS``: the published adapters, by name (``multitalk``, ``infinitetalk-single``,
  ``infinitetalk-multi``), with their repository, file and folder under a model root;
- ``read_adapter``: one adapter file's tensors, checked against a model's audio layers (names, shapes), in the
  dtype the model computes them in, on a store device (host memory by default);
- ``AdapterBank``: the adapters one model can switch between; ``activate(name)`` copies the adapter's tensors
  into the model's audio parameters in place (the base is never touched or reloaded) and sets the model's
  ``audio_norm_fp32``. Its cost is one copy of the audio layers: ``bench/bench_adapter_switch.py`` measures it.

FlashTalk (``FULL_MODELS``: ``flashtalk``, Soul-AILab/SoulX-FlashTalk-14B) has the same audio layers but is not an
adapter: its whole transformer is distilled (InfiniteTalk's, trained on), so it is loaded as the transformer itself
(``load_transformer`` of its folder, audio weights inside) and can share a process with no other model.

In-place copies keep every parameter object, so whatever holds references to them (offload hooks, compiled graphs,
a fused speed LoRA on the base layers) stays valid. Linears stored in fp8 (torchao) are re-quantized from the
adapter's tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from .layouts import INFINITETALK_WEIGHTS_NAME, MULTITALK_WEIGHTS_NAME, is_audio_key
from .paths import FLASHTALK_DIR, INFINITETALK_DIR, MULTITALK_DIR


@dataclass(frozen=True)
class AdapterSpec:
    """One published set of audio weights."""

    name: str  # what a request or the env names
    repo: str  # Hugging Face repository
    repo_file: str  # the weights' path inside the repository
    folder: str  # the repository's folder under a model root (as the official READMEs download it)
    audio_norm_fp32: bool  # the audio projection's LayerNorm computes in float32 (InfiniteTalk)
    speakers: int  # speakers it was trained for
    title: str
    full_transformer: bool = False  # a whole transformer with its audio layers (FlashTalk), not audio layers alone

    def local_path(self, root: str | Path) -> Path:
        """Where the weights lie under a model root: ``ROOT/<folder>/<repo_file>`` (a full transformer: its folder)."""
        return Path(root) / self.folder / self.repo_file


AUDIO_ADAPTERS: dict[str, AdapterSpec] = {
    spec.name: spec
    for spec in (
        AdapterSpec(
            "multitalk", "MeiGen-AI/MeiGen-MultiTalk", MULTITALK_WEIGHTS_NAME, MULTITALK_DIR, False, 2, "MultiTalk"
        ),
        AdapterSpec(
            "infinitetalk-single",
            "MeiGen-AI/InfiniteTalk",
            f"single/{INFINITETALK_WEIGHTS_NAME}",
            INFINITETALK_DIR,
            True,
            1,
            "InfiniteTalk (one speaker)",
        ),
        AdapterSpec(
            "infinitetalk-multi",
            "MeiGen-AI/InfiniteTalk",
            f"multi/{INFINITETALK_WEIGHTS_NAME}",
            INFINITETALK_DIR,
            True,
            2,
            "InfiniteTalk (two speakers)",
        ),
    )
}
# Models published as a whole transformer with its audio layers (ModelPaths field: ``paths.FULL_MODEL_FIELDS``).
# FlashTalk's weights: ROOT/SoulX-FlashTalk-14B/ holds the original-layout transformer (config.json, sharded
# ``diffusion_pytorch_model*.safetensors`` + index; Wan key names plus the audio keys) and the Wan encoders.
FULL_MODELS: dict[str, AdapterSpec] = {
    "flashtalk": AdapterSpec(
        "flashtalk",
        "Soul-AILab/SoulX-FlashTalk-14B",
        "",
        FLASHTALK_DIR,
        True,  # InfiniteTalk's model code: the audio projection's LayerNorm in float32
        1,
        "SoulX-FlashTalk (one speaker, real time)",
        full_transformer=True,
    ),
}
DEFAULT_ADAPTER = "multitalk"


def adapter_spec(name: str) -> AdapterSpec:
    """The adapter (or full model, ``FULL_MODELS``) called ``name``; ``ConfigError`` naming the known ones otherwise."""
    key = name.strip().lower() if isinstance(name, str) else None
    spec = AUDIO_ADAPTERS.get(key) or FULL_MODELS.get(key) if key is not None else None
    if spec is None:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join((*AUDIO_ADAPTERS, *FULL_MODELS))}")
    return spec


def check_model_set(names: list[str] | tuple[str, ...]) -> list[str]:
    """The canonical names of the models one process is to hold; ``ConfigError`` when a full-transformer model
    (FlashTalk) is named with any other: a process holds one transformer, and only audio adapters share it."""
    specs = list(dict.fromkeys(adapter_spec(n).name for n in names))
    full = [n for n in specs if adapter_spec(n).full_transformer]
    if full and len(specs) > 1:
        others = ", ".join(n for n in specs if n != full[0])
        raise ConfigError(
            f"{full[0]} cannot be loaded together with {others}: {full[0]} is a whole transformer of its own "
            f"({adapter_spec(full[0]).repo}), not audio layers for the Wan base, and one process holds one "
            f"transformer; run {full[0]} in a worker of its own"
        )
    return specs


def adapter_for_file(path: str | Path) -> AdapterSpec | None:
    """Which published adapter a weights file (or its folder) is, from the published names; None if unknown.

    ``multitalk.safetensors`` -> ``multitalk``; ``.../single/infinitetalk.safetensors`` -> ``infinitetalk-single``,
    ``.../multi/infinitetalk.safetensors`` -> ``infinitetalk-multi`` (the two InfiniteTalk files have the same name
    and key set: only their folder tells them apart).
    """
    path = Path(path)
    if path.is_dir():
        for name in (MULTITALK_WEIGHTS_NAME, INFINITETALK_WEIGHTS_NAME):
            if (path / name).is_file():
                return adapter_for_file(path / name)
        return None
    if path.name == MULTITALK_WEIGHTS_NAME:
        return AUDIO_ADAPTERS["multitalk"]
    if path.name == INFINITETALK_WEIGHTS_NAME:
        return AUDIO_ADAPTERS.get(f"infinitetalk-{path.parent.name.lower()}")
    return None


def apply_spec(model: torch.nn.Module, spec: AdapterSpec | None, name: str | None = None) -> None:
    """Set the model's adapter-dependent numerics (``audio_norm_fp32``) and remember which adapter it holds."""
    fp32 = bool(spec and spec.audio_norm_fp32)
    model.audio_proj.norm_fp32 = fp32
    model.register_to_config(audio_norm_fp32=fp32)
    model.audio_adapter = name or (spec.name if spec else None)


def audio_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The model's audio-layer parameters by name (a small fraction of the model)."""
    return {k: p for k, p in model.named_parameters() if is_audio_key(k)}


def _is_fp8(param: torch.Tensor) -> bool:
    return "float8" in type(param.data).__name__.lower()


def _compute_dtype(model: torch.nn.Module) -> torch.dtype:
    return model.audio_proj.proj1.weight.dtype  # the audio projection is never quantized


def _target_dtype(key: str, param: torch.Tensor, compute: torch.dtype) -> torch.dtype:
    from .transformer import keeps_fp32

    if keeps_fp32(key):
        return torch.float32
    if _is_fp8(param) or not param.dtype.is_floating_point or param.dtype.itemsize < 2:
        return compute  # fp8-stored linears are re-quantized from the compute dtype
    return param.dtype


@dataclass
class AudioAdapter:
    """One adapter's audio tensors (model parameter names), ready to be copied into a model."""

    name: str
    spec: AdapterSpec | None
    path: Path | None
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def read_adapter(
    path: str | Path,
    model: torch.nn.Module,
    name: str | None = None,
    *,
    device: str | torch.device = "cpu",
) -> AudioAdapter:
    """Read an adapter file (``multitalk.safetensors``, ``infinitetalk.safetensors`` or its folder) for ``model``.

    Every audio parameter of the model must be in the file with its shape, and the file may hold nothing else
    (``CheckpointError`` lists what differs). Tensors are cast to the dtype the model holds (or computes, for
    fp8-stored linears) and kept on ``device``; on CPU they are pinned when CUDA is available, so copies to the
    GPU run at full bus speed.
    """
    from .transformer import _dequantize, _fmt_keys, _multitalk_refs, _to_model_names

    if name in FULL_MODELS:
        raise ConfigError(f"{name} is a whole transformer, not an audio adapter: load it with load_transformer")
    spec = adapter_spec(name) if name in AUDIO_ADAPTERS else None
    refs, file = _multitalk_refs(Path(path))
    spec = spec or adapter_for_file(file)
    refs = _to_model_names(refs)
    params = audio_parameters(model)
    missing = [k for k in params if k not in refs]
    unexpected = [k for k in refs if k not in params]
    wrong = [
        f"{k} {list(r.shape)} (model expects {list(params[k].shape)})"
        for k, r in refs.items()
        if k in params and tuple(r.shape) != tuple(params[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors: {_fmt_keys(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} tensors have the wrong shape: {_fmt_keys(wrong)}")
    if problems:
        raise CheckpointError(f"{file} does not fit this transformer's audio layers: " + "; ".join(problems))
    device = torch.device(device)
    pin = device.type == "cpu" and torch.cuda.is_available()
    compute = _compute_dtype(model)
    tensors = {}
    for key, ref in refs.items():
        value = _dequantize(ref, ref.read()) if ref.gguf_type is not None else ref.read()
        value = value.to(device=device, dtype=_target_dtype(key, params[key], compute))
        tensors[key] = value.pin_memory() if pin else value.contiguous()
    return AudioAdapter(name or (spec.name if spec else file.stem), spec, file, tensors)


def snapshot_adapter(model: torch.nn.Module, name: str, spec: AdapterSpec | None, device="cpu") -> AudioAdapter:
    """The audio weights the model holds now, copied to ``device`` (fp8-stored linears dequantized)."""
    compute = _compute_dtype(model)
    tensors = {}
    with torch.no_grad():
        for key, param in audio_parameters(model).items():
            value = param.data.dequantize() if _is_fp8(param) else param.data
            value = value.to(device=device, dtype=_target_dtype(key, param, compute), copy=True)
            tensors[key] = value.pin_memory() if value.device.type == "cpu" and torch.cuda.is_available() else value
    return AudioAdapter(name, spec, None, tensors)


@dataclass
class SwitchReport:
    name: str
    previous: str | None
    seconds: float
    bytes_copied: int
    requantized: int  # fp8 linears re-quantized


class AdapterBank:
    """The audio adapters one loaded transformer can switch between without reloading its base.

    The adapter the model was loaded with is kept as a snapshot (so switching back costs a copy, not a read);
    others are added by name or path. Host memory: one copy of the audio layers per adapter (about 5 GB each in
    bf16 at 14B); device memory: nothing beyond the model.
    """

    def __init__(self, model: torch.nn.Module, *, store_device: str | torch.device = "cpu"):
        self.model = model
        self.store_device = torch.device(store_device)
        self.adapters: dict[str, AudioAdapter] = {}
        name = getattr(model, "audio_adapter", None) or "loaded"
        spec = AUDIO_ADAPTERS.get(name)
        self.adapters[name] = snapshot_adapter(model, name, spec, self.store_device)
        self.active: str = name

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    def add(self, name: str, path: str | Path) -> AudioAdapter:
        """Read the adapter ``name`` from ``path`` (checked against the model) and keep it for ``activate``."""
        adapter = read_adapter(path, self.model, name, device=self.store_device)
        self.adapters[name] = adapter
        return adapter

    def activate(self, name: str) -> SwitchReport:
        """Make ``name`` the model's audio layers (in place; the base is untouched). A no-op if it is active."""
        if name not in self.adapters:
            known = ", ".join(self.adapters) or "none"
            raise ConfigError(f"model {name!r} is not loaded in this process (loaded: {known})")
        previous = self.active
        if name == previous:
            return SwitchReport(name, previous, 0.0, 0, 0)
        adapter = self.adapters[name]
        start = time.perf_counter()
        copied = requantized = 0
        params = audio_parameters(self.model)
        modules = dict(self.model.named_modules())
        fp8_config = None
        targets, sources = [], []
        with torch.no_grad():
            for key, value in adapter.tensors.items():
                param = params[key]
                copied += value.numel() * value.element_size()
                if not _is_fp8(param):
                    targets.append(param.data)
                    sources.append(value)
                    continue
                if fp8_config is None:
                    from ..speed.memory import fp8_config as make_fp8_config

                    fp8_config = make_fp8_config(param.device)
                module = modules[key.rpartition(".")[0]]
                _requantize_fp8(module, value.to(param.device, non_blocking=True), fp8_config)
                requantized += 1
            torch._foreach_copy_(targets, sources, non_blocking=True)  # one dispatch for all plain tensors
        if any(p.is_cuda for p in params.values()):
            torch.cuda.synchronize()
        apply_spec(self.model, adapter.spec, name)
        self.active = name
        return SwitchReport(name, previous, time.perf_counter() - start, copied, requantized)


def _requantize_fp8(linear: torch.nn.Module, weight: torch.Tensor, config) -> None:
    """Give an fp8-stored linear new weights: set them in the compute dtype, then quantize again (torchao)."""
    from ..speed.memory import quantize_block_fp8

    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    quantize_block_fp8(linear, config)
