"""One entry point that loads the MultiTalk transformer from any published layout.

``load_transformer(path, multitalk=...)`` accepts:

- an original-layout directory (``Wan-AI/Wan2.1-I2V-14B-480P``; its index may already point at
  ``multitalk.safetensors``, as MultiTalk's README instructs),
- a diffusers-layout directory (``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` or its ``transformer/`` folder),
- a single ``.safetensors`` or ``.gguf`` transformer file with official key names (community repacks,
  city96's GGUF quantizations); the architecture is read off the tensor shapes,

plus the audio weights (``multitalk.safetensors`` or the ``MeiGen-MultiTalk`` directory, or InfiniteTalk's
``single/`` / ``multi/infinitetalk.safetensors``: ``adapters.py``) unless the source already holds them.
Tensors are read one by one, cast straight to their final dtype and device, and never held twice: peak host
memory stays near the size of the loaded model (see ``bench/bench_load.py``).
GGUF-quantized linears stay quantized (diffusers' ``GGUFLinear``); the audio layers stay in ``dtype``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

from ..errors import CheckpointError
from ..models.transformer import TEXT_TOKENS, Fp32Linear, MultiTalkTransformer3DModel
from .formats import GGUF, SAFETENSORS, format_of, read_index
from .layouts import (
    CONFIG_NAME,
    INFINITETALK_WEIGHTS_NAME,
    MODEL_INDEX_NAME,
    MULTITALK_WEIGHTS_NAME,
    WEIGHTS_NAME,
    WanDims,
    audio_dims_from_shapes,
    is_audio_key,
)
from .weights import TensorRef, building, empty_weights, folder_refs, read_json

logger = logging.getLogger(__name__)

MAX_LISTED = 12  # keys named in an error message before "... and N more"
SCRATCH_BYTES = 4 << 20  # per reading thread: the only memory loading needs beyond the model itself


@dataclass
class TransformerSource:
    """A resolved set of tensor files: what layout they are in and which tensor each model key comes from."""

    layout: str  # "original", "diffusers", "single-file", "gguf"
    dims: WanDims
    refs: dict[str, TensorRef] = field(default_factory=dict)  # keyed by the model's (diffusers) parameter names
    files: list[Path] = field(default_factory=list)
    audio_file: Path | None = None  # the separate audio-weights file, if any (which adapter: adapters.py)

    @property
    def quantized(self) -> bool:
        return any(r.gguf_type is not None for r in self.refs.values())


@dataclass
class LoadReport:
    layout: str
    files: list[Path]
    tensors: int
    bytes_read: int
    seconds: float


def _fmt_keys(keys: list[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f" ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def _sharded_refs(directory: Path) -> tuple[dict[str, TensorRef], list[Path]]:
    """Tensors of ``diffusion_pytorch_model[-0000N-of-0000M].safetensors`` in ``directory``, and their files."""
    refs = folder_refs(directory, WEIGHTS_NAME.removesuffix(".safetensors"))
    return refs, sorted({ref.path for ref in refs.values()})


def _to_model_names(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """Official key names -> the model's names (diffusers' converter for the Wan part; audio keys are shared)."""
    audio = {k: v for k, v in refs.items() if is_audio_key(k)}
    base = {k: v for k, v in refs.items() if not is_audio_key(k)}
    for prefix in ("model.diffusion_model.", "diffusion_model."):
        audio = {k.removeprefix(prefix): v for k, v in audio.items()}
    return {**convert_wan_transformer_to_diffusers(base), **audio}


def _dims_from_shapes(refs: dict[str, TensorRef], where: Path, num_heads: int | None = None) -> WanDims:
    """Architecture from the tensor shapes (model names). Heads are not visible in shapes: every Wan2.1 model uses
    128-wide heads, which is assumed when no config says otherwise."""
    shapes = {k: r.shape for k, r in refs.items()}
    try:
        dim, in_dim = shapes["patch_embedding.weight"][:2]
        blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
        dims = WanDims(
            dim=dim,
            in_dim=in_dim,
            ffn_dim=shapes["blocks.0.ffn.net.0.proj.weight"][0],
            freq_dim=shapes["condition_embedder.time_embedder.linear_1.weight"][1],
            text_dim=shapes["condition_embedder.text_embedder.linear_1.weight"][1],
            out_dim=shapes["proj_out.weight"][0] // 4,
            num_heads=num_heads or dim // 128,
            num_layers=len(blocks),
            image_dim=shapes["condition_embedder.image_embedder.ff.net.0.proj.weight"][1],
        )
    except KeyError as exc:
        raise CheckpointError(f"{where}: not a Wan2.1 I2V transformer (no tensor {exc.args[0]!r})") from None
    if dims.in_dim != 36:
        raise CheckpointError(
            f"{where}: patch_embedding takes {dims.in_dim} channels; MultiTalk needs the image-to-video model (36)"
        )
    return dims


# Architecture numbers each config layout states (WanDims field -> config key), checked against the weights.
ORIGINAL_CONFIG_KEYS = {f: f for f in ("dim", "ffn_dim", "freq_dim", "in_dim", "out_dim", "num_layers", "text_dim")}
DIFFUSERS_CONFIG_KEYS = {
    "ffn_dim": "ffn_dim",
    "freq_dim": "freq_dim",
    "in_dim": "in_channels",
    "out_dim": "out_channels",
    "num_layers": "num_layers",
    "text_dim": "text_dim",
    "image_dim": "image_dim",
    "dim": "num_attention_heads x attention_head_dim",
}


def _dims_checked_against_config(
    refs: dict[str, TensorRef], config_dims: WanDims, stated: dict[str, str], config: dict, where: Path
) -> WanDims:
    """Shape-derived dims, after checking that every architecture number the config states matches the weights."""
    dims = _dims_from_shapes(refs, where, num_heads=config_dims.num_heads)
    wrong = [
        f"{key}={getattr(config_dims, name)} but the weights have {getattr(dims, name)}"
        for name, key in stated.items()
        if (key in config or " x " in key) and getattr(config_dims, name) != getattr(dims, name)
    ]
    if dims.dim % dims.num_heads:
        wrong.append(f"{dims.num_heads} heads do not divide dim {dims.dim}")
    if wrong:
        raise CheckpointError(f"{where}: config does not match the weights: " + "; ".join(wrong))
    return dims.replace(eps=config_dims.eps)


def _check_text_len(config: dict, where: Path) -> None:
    """``text_len`` (original-layout configs) is how many text tokens the official model pads the prompt to and
    attends to. Ours always uses 512 (diffusers' Wan cross-attention splits image and text context at 512, and the
    T5 encoder pads to 512): a config that says otherwise describes a model we would not compute, so it is refused."""
    text_len = config.get("text_len", TEXT_TOKENS)
    if text_len != TEXT_TOKENS:
        raise CheckpointError(
            f"{where}: text_len={text_len!r} is not supported: this transformer pads and attends to exactly "
            f"{TEXT_TOKENS} text tokens (every published Wan2.1 I2V / MultiTalk config says text_len {TEXT_TOKENS})"
        )


def _multitalk_refs(path: Path) -> tuple[dict[str, TensorRef], Path]:
    """The audio tensors of ``multitalk.safetensors`` / ``infinitetalk.safetensors`` (or a GGUF of them), given the
    file or its directory."""
    if path.is_dir():
        found = [path / n for n in (MULTITALK_WEIGHTS_NAME, INFINITETALK_WEIGHTS_NAME) if (path / n).is_file()]
        path = found[0] if found else path / MULTITALK_WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"missing audio weights (multitalk.safetensors or infinitetalk.safetensors): {path}")
    if format_of(path) not in (SAFETENSORS, GGUF):
        raise CheckpointError(f"{path}: audio weights are a .safetensors or .gguf file")
    refs = read_index(path)
    other = [k for k in refs if not is_audio_key(k.removeprefix("model.diffusion_model."))]
    if other:
        raise CheckpointError(
            f"{path}: holds non-audio tensors, is it multitalk.safetensors or infinitetalk.safetensors? "
            f"({_fmt_keys(other)})"
        )
    return refs, path


# Audio numbers the official InfiniteTalk / FlashTalk ``WanModel`` registers in its config.json (WanDims field ->
# config key), checked against the audio weights; and switches whose other value we do not compute.
ORIGINAL_AUDIO_CONFIG_KEYS = {
    "audio_window": "audio_window",
    "vae_scale": "vae_scale",
    "audio_intermediate_dim": "intermediate_dim",
    "audio_output_dim": "output_dim",
    "audio_context_tokens": "context_tokens",
}
REQUIRED_CONFIG_SWITCHES = {"norm_input_visual": True, "norm_output_audio": True}


def _check_audio_config(config: dict, dims: WanDims, where: Path) -> None:
    """A config that states the audio layers (FlashTalk's) must describe the audio weights it comes with."""
    wrong = [
        f"{key}={config[key]} but the weights have {getattr(dims, name)}"
        for name, key in ORIGINAL_AUDIO_CONFIG_KEYS.items()
        if key in config and config[key] != getattr(dims, name)
    ]
    wrong += [
        f"{key}={config[key]!r} is not supported (this transformer computes {key}={value})"
        for key, value in REQUIRED_CONFIG_SWITCHES.items()
        if key in config and config[key] != value
    ]
    if wrong:
        raise CheckpointError(f"{where}: config does not match the audio weights: " + "; ".join(wrong))


def resolve_transformer(
    path: str | Path, multitalk: str | Path | None = None, *, own_audio: bool = False
) -> TransformerSource:
    """Find the layout of ``path`` and index every tensor the model needs (no tensor data is read).

    ``own_audio``: the checkpoint must hold its audio layers itself (FlashTalk's folder); no separate file is
    looked for or accepted."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model path does not exist: {path}")
    if own_audio and multitalk is not None:
        raise CheckpointError(f"{path} holds its own audio layers: no separate audio weights ({multitalk}) apply")
    config: dict = {}

    fmt = format_of(path) if path.is_file() else None
    if fmt is not None and fmt.transformer:
        refs = _to_model_names(read_index(path))
        layout = "gguf" if fmt.quantized else "single-file"
        source = TransformerSource(layout, _dims_from_shapes(refs, path), refs, [path])
    elif path.is_dir() and (path / MODEL_INDEX_NAME).is_file():
        return resolve_transformer(path / "transformer", multitalk)
    elif path.is_dir() and (path / CONFIG_NAME).is_file():
        config = read_json(path / CONFIG_NAME)
        _check_text_len(config, path / CONFIG_NAME)
        refs, files = _sharded_refs(path)
        if config.get("_class_name") in ("WanTransformer3DModel", "MultiTalkTransformer3DModel"):
            try:
                config_dims = WanDims.from_diffusers_config(config)
            except KeyError as exc:
                raise CheckpointError(f"{path / CONFIG_NAME}: missing {exc.args[0]!r}") from None
            dims = _dims_checked_against_config(refs, config_dims, DIFFUSERS_CONFIG_KEYS, config, path / CONFIG_NAME)
            source = TransformerSource("diffusers", dims, refs, files)
        elif config.get("_class_name") == "WanModel" or "dim" in config:
            if config.get("model_type", "i2v") != "i2v":
                raise CheckpointError(
                    f"{path / CONFIG_NAME}: model_type {config.get('model_type')!r}; MultiTalk needs i2v"
                )
            refs = _to_model_names(refs)
            config_dims = WanDims.from_original_config(config)
            dims = _dims_checked_against_config(refs, config_dims, ORIGINAL_CONFIG_KEYS, config, path / CONFIG_NAME)
            source = TransformerSource("original", dims, refs, files)
        else:
            raise CheckpointError(f"{path / CONFIG_NAME}: neither a WanModel nor a WanTransformer3DModel config")
    else:
        raise CheckpointError(
            f"{path}: not a transformer checkpoint (expected a directory with config.json or model_index.json, "
            "or a .safetensors / .gguf file)"
        )

    if multitalk is not None:
        audio, audio_path = _multitalk_refs(Path(multitalk))
        dropped = [k for k in source.refs if is_audio_key(k)]
        if dropped:
            logger.info("using audio weights from %s instead of the %d in %s", audio_path, len(dropped), path)
        source.refs = {k: v for k, v in source.refs.items() if not is_audio_key(k)} | _to_model_names(audio)
        source.files.append(audio_path)
        source.audio_file = audio_path
    elif own_audio and not any(is_audio_key(k) for k in source.refs):
        raise CheckpointError(
            f"{path}: no audio layers (audio_proj.*, blocks.N.audio_cross_attn.*, blocks.N.norm_x.*) in its "
            "weights, so it is not a FlashTalk checkpoint (Soul-AILab/SoulX-FlashTalk-14B)"
        )
    elif not any(is_audio_key(k) for k in source.refs):
        beside = (path if path.is_dir() else path.parent) / MULTITALK_WEIGHTS_NAME
        if not beside.is_file():
            raise CheckpointError(
                f"{path} has no MultiTalk audio weights: pass multitalk= the path of multitalk.safetensors "
                "(from MeiGen-AI/MeiGen-MultiTalk)"
            )
        return resolve_transformer(path, beside)

    shapes = {k: r.shape for k, r in source.refs.items() if is_audio_key(k)}
    source.dims = audio_dims_from_shapes(shapes, source.dims)
    if source.audio_file is None and source.layout == "original":
        _check_audio_config(config, source.dims, path / CONFIG_NAME)
    return source


def keeps_fp32(name: str) -> bool:
    """Parameters the model keeps in float32 whatever its dtype (norms, modulation, time embedder, audio norm)."""
    parts = name.split(".")
    return any(m in parts for m in MultiTalkTransformer3DModel._keep_in_fp32_modules)


def _check_keys_and_shapes(model: torch.nn.Module, source: TransformerSource) -> None:
    expected = {k: tuple(p.shape) for k, p in model.named_parameters()}
    missing = [k for k in expected if k not in source.refs]
    unexpected = [k for k in source.refs if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors: {_fmt_keys(unexpected)}")
    wrong = [
        f"{k} {list(r.shape)} (model expects {list(expected[k])})"
        for k, r in source.refs.items()
        if k in expected and tuple(r.shape) != expected[k]
    ]
    if wrong:
        problems.append(f"{len(wrong)} tensors have the wrong shape: {_fmt_keys(wrong)}")
    if problems:
        files = ", ".join(str(f) for f in source.files)
        raise CheckpointError(f"{source.layout} checkpoint ({files}) does not match the model: " + "; ".join(problems))


def build_empty_model(dims: WanDims) -> MultiTalkTransformer3DModel:
    """The model with parameters on the meta device (buffers real), ready to receive weights."""
    with empty_weights():
        model = MultiTalkTransformer3DModel(**dims.model_kwargs())
    return model.eval().requires_grad_(False)


def _gguf_linear_plan(model: torch.nn.Module, source: TransformerSource, compute_dtype: torch.dtype) -> set[str]:
    """Swap the linears whose weights stay GGUF-quantized for diffusers' ``GGUFLinear``; return those weight keys."""
    from diffusers.quantizers.gguf.utils import GGUFParameter, _replace_with_gguf_linear

    keep = set()
    markers = {}
    for key, ref in source.refs.items():
        if ref.gguf_type is None or not key.endswith(".weight") or keeps_fp32(key):
            continue
        logical = tuple(int(n) for n in ref.shape)
        if len(logical) != 2 or logical != _quant_logical_shape(ref):
            continue  # stored reshaped: dequantized at load time
        markers[key] = GGUFParameter(
            torch.empty(ref.byte_shape, dtype=torch.uint8, device="meta"), quant_type=ref.gguf_type
        )
        keep.add(key)
    # The float32-computed linears (time projection, output head) keep their GGUF weights and dequantize them
    # themselves (``Fp32Linear``); GGUFLinear would compute them in ``compute_dtype``.
    fp32_compute = [name.rpartition(".")[2] for name, m in model.named_modules() if isinstance(m, Fp32Linear)]
    _replace_with_gguf_linear(model, compute_dtype, markers, modules_to_not_convert=fp32_compute)
    return keep


def _quant_logical_shape(ref: TensorRef) -> tuple[int, ...]:
    import gguf

    return tuple(gguf.quant_shape_from_byte_shape(ref.byte_shape, gguf.GGMLQuantizationType(ref.gguf_type)))


def _dequantize(ref: TensorRef, raw: torch.Tensor) -> torch.Tensor:
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    return dequantize_gguf_tensor(GGUFParameter(raw, quant_type=ref.gguf_type)).float().reshape(ref.shape)


def load_transformer(
    path: str | Path,
    multitalk: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    workers: int = 4,
    fp8: bool = False,
    fused_lora: dict[str, torch.Tensor] | None = None,
    audio_adapter: str | None = None,
) -> MultiTalkTransformer3DModel:
    """Load the MultiTalk transformer from any supported layout (see module docstring).

    Args:
        path: checkpoint directory or file.
        multitalk: ``multitalk.safetensors`` (or its directory) when ``path`` does not include the audio weights.
        dtype: dtype of every parameter except the small fp32 ones (norms, modulation, time embedder) and
            GGUF-quantized linears, which keep their quantized bytes and compute in ``dtype``.
        device: where the parameters are created; tensors go there one by one.
        workers: parallel tensor reads.
        fp8: store the linears of every block in fp8 (``memory.py``), each block quantised as soon as its
            tensors are in, so the bf16 model is never held whole.
        fused_lora: weight deltas (``lora.lora_deltas``) added before quantisation (a speed LoRA with fp8).
        audio_adapter: which published adapter the audio weights are (``adapters.AUDIO_ADAPTERS``); by default it
            is read off the audio file's name (``multitalk.safetensors``, ``single|multi/infinitetalk.safetensors``).
            It sets ``model.audio_adapter`` and the adapter's numerics (``audio_norm_fp32``). A full model
            (``adapters.FULL_MODELS``: ``flashtalk``) names ``path`` itself, which must hold its audio layers.

    Returns the model; ``model.load_report`` says what was read (layout, files, tensors, bytes, seconds).

    Raises:
        CheckpointError: naming the missing file, missing/unexpected keys, wrong shapes or bad config.
    """
    from .adapters import adapter_for_file, adapter_spec, apply_spec

    start = time.perf_counter()
    device = torch.device(device)
    spec = adapter_spec(audio_adapter) if audio_adapter is not None else None
    source = resolve_transformer(path, multitalk, own_audio=bool(spec and spec.full_transformer))
    if spec is None and source.audio_file is not None:
        spec = adapter_for_file(source.audio_file)
    if fp8 and source.quantized:
        raise CheckpointError(f"{path}: fp8 is for bf16/fp32 checkpoints; this GGUF file is quantized already")
    fp8_config = None
    if fp8:
        from ..speed.memory import fp8_config as make_fp8_config

        fp8_config = make_fp8_config(device)
    model = build_empty_model(source.dims)
    apply_spec(model, spec)
    _check_keys_and_shapes(model, source)
    with building():  # swapping in GGUF layers constructs modules too
        quantized_keys = _gguf_linear_plan(model, source, dtype) if source.quantized else set()

    from diffusers.quantizers.gguf.utils import GGUFParameter

    modules = dict(model.named_modules())
    lock = threading.Lock()
    local = threading.local()
    pending: dict[str, int] = {}  # fp8 or a fused LoRA: tensors each block still waits for
    if fp8_config is not None or fused_lora:
        for key in source.refs:
            if key.startswith("blocks."):
                block = ".".join(key.split(".")[:2])
                pending[block] = pending.get(block, 0) + 1

    def load_one(key: str) -> None:
        ref = source.refs[key]
        target = torch.float32 if keeps_fp32(key) else dtype
        if key in quantized_keys:
            value: torch.Tensor = GGUFParameter(ref.read().to(device), quant_type=ref.gguf_type)
        elif ref.gguf_type is not None:
            value = _dequantize(ref, ref.read()).to(device=device, dtype=target)
        else:
            if not hasattr(local, "scratch"):
                local.scratch = torch.empty(SCRATCH_BYTES, dtype=torch.uint8)
            value = torch.empty(ref.shape, dtype=target, device=device)
            ref.read_into(value, local.scratch)
        module_name, _, attr = key.rpartition(".")
        param = value if isinstance(value, GGUFParameter) else torch.nn.Parameter(value, requires_grad=False)
        block, complete = ".".join(key.split(".")[:2]), False
        with lock:
            modules[module_name]._parameters[attr] = param
            if block in pending:
                pending[block] -= 1
                complete = pending[block] == 0
        if complete:
            modules[block].to(device)  # buffers too, before torchao swaps the weights
            if fused_lora:
                from ..speed.lora import apply_deltas

                apply_deltas(modules[block], fused_lora, prefix=f"{block}.")
            if fp8_config is not None:
                from ..speed.memory import quantize_block_fp8

                quantize_block_fp8(modules[block], fp8_config)

    keys = sorted(source.refs, key=lambda k: (str(source.refs[k].path), source.refs[k].offset))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for future in [pool.submit(load_one, k) for k in keys]:
            future.result()
    leftover = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if leftover:  # pragma: no cover - guarded by _check_keys_and_shapes
        raise CheckpointError(f"parameters left unloaded: {_fmt_keys(leftover)}")
    model.to(device)  # buffers (RoPE tables) follow the parameters
    if fused_lora:  # the layers outside the blocks (embeddings, head)
        from ..speed.lora import apply_deltas

        outside = {k: v for k, v in fused_lora.items() if not k.startswith("blocks.")}
        apply_deltas(model, outside)
    report = LoadReport(
        layout=source.layout,
        files=source.files,
        tensors=len(keys),
        bytes_read=sum(r.nbytes for r in source.refs.values()),
        seconds=time.perf_counter() - start,
    )
    logger.info(
        "loaded %s transformer: %d tensors, %.2f GB read in %.1f s",
        report.layout,
        report.tensors,
        report.bytes_read / 1e9,
        report.seconds,
    )
    model.load_report = report
    return model
