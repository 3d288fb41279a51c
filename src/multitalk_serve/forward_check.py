"""One timed transformer forward on random inputs of a real video shape: for the CLI, the demo and the benchmarks."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from .engine.loading.layouts import WanDims
from .engine.models.transformer import MultiTalkTransformer3DModel, latent_frames


def random_inputs(
    model: MultiTalkTransformer3DModel,
    speakers: int,
    frames: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    device: str | torch.device,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Inputs of ``model.forward`` for a ``frames x height x width`` video (pixels; VAE stride 8x8, 4 in time)."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    t, h, w = latent_frames(frames, cfg.vae_scale), height // 8, width // 8

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    masks = torch.zeros(3, h, w)
    masks[0, :, : w // 2] = 1
    masks[1, :, w // 2 :] = 1
    return {
        "hidden_states": randn(1, cfg.in_channels, t, h, w),
        "timestep": torch.tensor([900.0], device=device),
        "encoder_hidden_states": randn(1, 512, cfg.text_dim),
        "encoder_hidden_states_image": randn(1, 257, cfg.image_dim),
        "audio": randn(speakers, frames, cfg.audio_window, cfg.audio_layers, cfg.audio_channels),
        "ref_masks": masks.to(device),
    }


@torch.no_grad()
def random_model(
    dims: WanDims, dtype: torch.dtype, device: str | torch.device, seed: int = 0
) -> MultiTalkTransformer3DModel:
    """A randomly initialised model built straight on ``device`` (no host copy): for timing full-size shapes.

    Weights are N(0, 1/fan_in) (norms near 1, biases small), the dtype policy is the loader's (norms, modulation and
    time embedder in fp32, the rest in ``dtype``).
    """
    from .engine.loading.transformer import build_empty_model, keeps_fp32

    model = build_empty_model(dims)  # parameters on the meta device, buffers (RoPE tables) real
    g = torch.Generator(device=device).manual_seed(seed)
    for name, meta in list(model.named_parameters()):
        p = torch.empty(meta.shape, dtype=torch.float32 if keeps_fp32(name) else dtype, device=device)
        if p.ndim == 1:
            p.normal_(1.0 if "norm" in name else 0.0, 0.02, generator=g)
        else:
            p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
        module_name, _, attr = name.rpartition(".")
        model.get_submodule(module_name)._parameters[attr] = torch.nn.Parameter(p, requires_grad=False)
    model.to(device)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_host_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_forward(
    model: MultiTalkTransformer3DModel, inputs: dict[str, torch.Tensor], repeats: int = 1
) -> tuple[list[float], torch.Tensor]:
    """Seconds of each of ``repeats`` forwards (after one warm-up when repeats > 1) and the last output."""
    device = inputs["hidden_states"].device
    runs = []
    with torch.inference_mode():
        if repeats > 1:
            out = model(**inputs).sample
            _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            out = model(**inputs).sample
            _sync(device)
            runs.append(time.perf_counter() - start)
    return runs, out


def run_forward(
    model_path: str | Path,
    multitalk: str | Path | None = None,
    *,
    speakers: int = 1,
    frames: int = 81,
    height: int = 480,
    width: int = 832,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cpu",
    repeats: int = 1,
) -> dict:
    from .engine.loading.transformer import load_transformer

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    model = load_transformer(model_path, multitalk, dtype=dtype, device=dev)
    report = model.load_report
    inputs = random_inputs(model, speakers, frames, height, width, dtype, dev)
    runs, out = time_forward(model, inputs, repeats)
    result = {
        "layout": report.layout,
        "load_seconds": round(report.seconds, 3),
        "bytes_read": report.bytes_read,
        "input_shape": list(inputs["hidden_states"].shape),
        "audio_shape": list(inputs["audio"].shape),
        "output_shape": list(out.shape),
        "tokens": out.shape[2] * out.shape[3] * out.shape[4] // 4,
        "speakers": speakers,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(dev),
        "forward_seconds": [round(s, 4) for s in runs],
        "peak_host_rss_gb": round(peak_host_rss_bytes() / 1e9, 3),
    }
    if dev.type == "cuda":
        result["peak_device_memory_gb"] = round(torch.cuda.max_memory_allocated(dev) / 1e9, 3)
        result["gpu"] = torch.cuda.get_device_name(dev)
    return result


def compare_layouts(root: str | Path, speakers: int = 2) -> list[dict]:
    """Load the tiny model of ``root`` (see ``multitalk_serve.tiny``) from each layout and run the same forward."""
    from .engine.loading.transformer import load_transformer
    from .tiny import DIFFUSERS_DIR, GGUF_NAMES, MULTITALK_DIR, ORIGINAL_DIR

    root = Path(root)
    sources = [
        ("original", root / ORIGINAL_DIR),
        ("diffusers", root / DIFFUSERS_DIR),
        *((f"gguf {k}", root / name) for k, name in GGUF_NAMES.items()),
    ]
    rows, reference = [], None
    for name, path in sources:
        model = load_transformer(path, root / MULTITALK_DIR, dtype=torch.float32)
        report = model.load_report
        inputs = random_inputs(model, speakers, frames=9, height=64, width=96, dtype=torch.float32, device="cpu")
        runs, out = time_forward(model, inputs)
        reference = out if reference is None else reference
        rows.append(
            {
                "layout": name,
                "load_s": report.seconds,
                "forward_s": runs[0],
                "shape": tuple(out.shape),
                "max_abs_diff_vs_original": float((out - reference).abs().max()),
            }
        )
    return rows
