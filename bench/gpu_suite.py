"""One bounded GPU run that measures the speed and memory claims: random weights at the real sizes, nothing downloaded.

    python bench/gpu_suite.py                      # one CUDA GPU: the 14B transformer + audio layers, real encoders
    python bench/gpu_suite.py --out results/ --budget-s 400
    python bench/gpu_suite.py --official /path/to/MultiTalk [--official-python /venv/bin/python]
    python bench/gpu_suite.py --smoke              # every code path at a tiny config on CPU (what CI runs)

Every model is built on the meta device from its real configuration (WanDims() for the transformer; the UMT5-XXL,
ViT-H/14 and Wan VAE configurations read off the official checkpoints' key shapes recorded in
``tests/fixtures/official/original_encoder_shapes.json``; wav2vec2-base for ``chinese-wav2vec2-base``) and
materialised with random values straight on the device. Items, in order (each writes its row as soon as it ends):

- the encoders: T5 encode of one prompt (512 tokens), CLIP encode of one frame, wav2vec2 on 10 s of audio, VAE
  decode of one 81-frame 480p window;
- seconds per transformer forward at 480p (81x480x832) for one and two speakers, bf16, PyTorch SDPA; the same at
  720p (81x720x1280); at 480p for every other attention backend that is installed and passes the probe (FA3, Sage,
  FA2, and SDPA's own flash / cuDNN / efficient kernels); with fp8 weights (torchao, fp8 matmuls on compute
  capability 8.9+) at 480p and 720p; peak device memory for each;
- a full 81-frame 480p clip with the ``fast`` preset (a random speed LoRA of the published rank, as an adapter) end
  to end through ``MultiTalkPipeline.generate`` (audio, encoders, 8 forwards, VAE, colour, MP4), with the share of
  time outside the transformer;
- the memory planner's estimate for each plan (bf16, bf16+t5-offload, fp8, fp8+t5-offload and the 24 GB plan
  fp8+t5-offload+group-offload) next to the peak measured in a ``fast`` job under that plan, and each plan's seconds
  per forward against bf16's;
- the official ``WanModel`` forward on the same GPU (``--official CHECKOUT``; skipped otherwise);
- InfiniteTalk's forward at 480p (the same network with its audio norm in float32), 1 and 2 speakers;
- SoulX-FlashTalk (the ``realtime`` preset): its forward at its shape (33x768x448, one speaker), and two of its
  33-frame windows end to end through ``generate`` with a job folder (4 forwards a window, no guidance), with the
  time to the first segment and the seconds per second of video.

Time bound: ``--budget-s`` (default 450 s, counted from the start of this process, imports included) keeps the run
under 8 minutes on one H100 / H200. Before each item its cost is estimated from what was already measured (forward
FLOPs scaled by the measured 480p forward, etc.); an item that would not fit what is left is skipped and the JSON says
so. Outputs: ``OUT/gpu_suite.json`` (every item: status, seconds, estimate, figures, or the reason it was skipped or
failed) and ``OUT/gpu_suite.md`` (the tables), rewritten after every item, so a run that is killed keeps its data.

``--smoke`` runs the same items at a tiny configuration on the CPU (about 20 s): fp8 is torchao's weight-only path
there, group offload runs without CUDA streams, and what needs CUDA (peak device memory, fp8 matmuls, side-stream
copies, SDPA's CUDA kernels) is reported as skipped with its reason. ``tests/test_gpu_suite.py`` runs it in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

START = time.monotonic()  # the budget counts from here (imports included)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

from bench_forward import forward_flops  # noqa: E402
from multitalk_serve.engine.loading.layouts import WanDims  # noqa: E402
from multitalk_serve.engine.models.transformer import latent_frames  # noqa: E402

SHAPES_FIXTURE = REPO / "tests" / "fixtures" / "official" / "original_encoder_shapes.json"
GB = 1e9
TEXT_LEN = 512
PROMPT = "two people talk in a sunny office, close-up, natural light"
PLANS = ("bf16", "bf16+t5-offload", "fp8", "fp8+t5-offload", "fp8+t5-offload+group-offload")
PLAN_24GB = "fp8+t5-offload+group-offload"
# SDPA's own kernels, selectable through diffusers' dispatcher: always there with a CUDA build of torch
SDPA_KERNELS = ("_native_flash", "_native_cudnn", "_native_efficient")
DEFAULT_BUDGET_S = 450.0
# 24 GB plan and fast clip targets (issue 6 / 17): H100 bf16 480p forward <= ~3 s, fast clip < 30 s, 24 GB < 2x
TARGETS = {"forward_480p_s": 3.0, "fast_clip_s": 30.0, "plan_24gb_vs_bf16": 2.0}


# --- scales ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """What the items run at: ``full`` (the published sizes) or ``smoke`` (tiny, CPU)."""

    name: str
    dims: WanDims
    shapes: dict[str, tuple[int, int, int]]  # resolution -> (frames, height, width)
    audio_seconds: float  # the wav2vec2 item
    clip_seconds: float  # speech of the fast clip (3.2 s = 80 frames of an 81-frame clip)
    frames_per_clip: int
    motion_frames: int
    lora_rank: int
    repeats: dict[str, int]  # resolution -> timed forwards per case (after one warm-up)
    encoder_repeats: int  # timed calls of the T5, CLIP and wav2vec2 items (after one warm-up)
    plan_steps: int  # sampling steps of a plan's job (peak memory does not depend on it)
    clip_steps: int | None  # sampling steps of the fast clip (None: the preset's 4)


def full_scale() -> Scale:
    return Scale(
        name="full",
        dims=WanDims(),
        shapes={"480p": (81, 480, 832), "720p": (81, 720, 1280), "flashtalk": (33, 768, 448)},
        audio_seconds=10.0,
        clip_seconds=3.2,
        frames_per_clip=81,
        motion_frames=25,
        lora_rank=128,  # lightx2v_I2V_14B_480p_cfg_step_distill_rank128
        repeats={"480p": 2, "720p": 1, "flashtalk": 3},
        encoder_repeats=3,
        plan_steps=2,
        clip_steps=None,
    )


def smoke_scale() -> Scale:
    from multitalk_serve.tiny import TINY_DIMS

    return Scale(
        name="smoke",
        dims=TINY_DIMS,
        shapes={"480p": (5, 32, 48), "720p": (5, 48, 80), "flashtalk": (5, 48, 32)},
        audio_seconds=1.0,
        clip_seconds=0.2,
        frames_per_clip=5,
        motion_frames=1,
        lora_rank=4,
        repeats={"480p": 1, "720p": 1, "flashtalk": 1},
        encoder_repeats=1,
        plan_steps=1,
        clip_steps=1,
    )


# --- random models ----------------------------------------------------------------------------------------------
def _fill(t: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1/fan_in) for matrices and kernels, norms near 1, biases and other vectors small (as forward_check)."""
    if t.ndim <= 1:
        return t.normal_(1.0 if "norm" in name else 0.0, 0.02, generator=generator)
    return t.normal_(0.0, t[0].numel() ** -0.5, generator=generator)


@torch.no_grad()
def materialise(
    model: torch.nn.Module,
    device: torch.device,
    dtype_of: Callable[[str], torch.dtype],
    seed: int = 0,
    prefix: str = "",
    home: torch.device | None = None,
) -> torch.nn.Module:
    """Give every parameter of ``model`` still on the meta device (under ``prefix``) a random value made on
    ``device`` and kept on ``home`` (default: ``device``); tied parameters stay tied."""
    generator = torch.Generator(device=device).manual_seed(seed)
    made: dict[int, torch.nn.Parameter] = {}
    for name, meta in list(model.named_parameters(remove_duplicate=False)):
        if not name.startswith(prefix) or not meta.is_meta:
            continue
        if id(meta) not in made:
            value = _fill(torch.empty(meta.shape, dtype=dtype_of(name), device=device), name, generator)
            made[id(meta)] = torch.nn.Parameter(value.to(home or device), requires_grad=False)
        module_name, _, attr = name.rpartition(".")
        model.get_submodule(module_name)._parameters[attr] = made[id(meta)]
    return model


def random_transformer(
    dims: WanDims,
    dtype: torch.dtype,
    device: torch.device,
    home: torch.device | None = None,
    fp8_config=None,
    seed: int = 0,
):
    """The MultiTalk transformer with random weights, built block by block as the loader builds it: each block is
    made on ``device``, quantised to fp8 when ``fp8_config`` is given, then moved to ``home`` (host memory for group
    offload), so at most one bf16 block exists beside the result."""
    from multitalk_serve.engine.loading.transformer import build_empty_model, keeps_fp32
    from multitalk_serve.engine.speed.memory import quantize_block_fp8

    home = home or device
    model = build_empty_model(dims)

    def dtype_of(name: str) -> torch.dtype:
        return torch.float32 if keeps_fp32(name) else dtype

    for i, block in enumerate(model.blocks):
        materialise(model, device, dtype_of, seed + i, prefix=f"blocks.{i}.")
        if fp8_config is not None:
            quantize_block_fp8(block, fp8_config)
        block.to(home)
    materialise(model, device, dtype_of, seed + 1000, home=home)  # everything outside the blocks
    model.to(home)  # buffers (RoPE tables)
    return model.eval()


def encoder_configs(scale: Scale) -> dict[str, dict]:
    """Library configurations of T5, CLIP and the VAE: the official checkpoints' (full) or the tiny models' (smoke)."""
    if scale.name == "smoke":
        from multitalk_serve.tiny import TINY_TEXT_ENCODER

        return {
            "text_encoder": {
                "relative_attention_num_buckets": 32,
                "relative_attention_max_distance": 128,
                "feed_forward_proj": "gated-gelu",
                "dropout_rate": 0.0,
                "tie_word_embeddings": False,
                "vocab_size": 512,
                **TINY_TEXT_ENCODER,
            },
            "image_encoder": {
                "hidden_size": scale.dims.image_dim,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 224,
                "patch_size": 14,
                "projection_dim": 32,
                "hidden_act": "gelu",
            },
            "vae": {
                "base_dim": 8,
                "z_dim": 16,
                "dim_mult": [1, 2, 2, 2],
                "num_res_blocks": 1,
                "attn_scales": [],
                "temperal_downsample": [False, True, True],
                "dropout": 0.0,
            },
        }
    from multitalk_serve.engine.loading import original_encoders as orig
    from multitalk_serve.engine.loading.weights import TensorRef

    shapes = json.loads(SHAPES_FIXTURE.read_text())

    def refs(part: str) -> dict:
        return {
            key: TensorRef(SHAPES_FIXTURE, key, 0, 0, getattr(torch, dtype), tuple(shape))
            for key, (dtype, shape) in shapes[part].items()
        }

    vae_refs = refs("vae")
    return {
        "text_encoder": orig.t5_config(refs("t5")),
        "image_encoder": orig.clip_config(refs("clip")),
        "vae": orig.vae_config(vae_refs),
    }


def wav2vec2_config(scale: Scale):
    from transformers import Wav2Vec2Config

    if scale.name == "smoke":
        from multitalk_serve.tiny import TINY_WAV2VEC

        return Wav2Vec2Config(
            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16, **TINY_WAV2VEC
        )
    # chinese-wav2vec2-base: the wav2vec2-base architecture (transformers' defaults): 7 conv layers of 512,
    # 12 layers of 768, 12 heads, group-norm feature extractor
    return Wav2Vec2Config(conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False)


# --- the run --------------------------------------------------------------------------------------------------------
class Skip(Exception):
    """An item that cannot run here, with the reason."""


@dataclass
class Item:
    name: str
    run: Callable[[Suite], dict]
    estimate: Callable[[Suite], float]
    what: str


@dataclass
class Suite:
    args: argparse.Namespace
    scale: Scale
    device: torch.device
    dtype: torch.dtype = torch.bfloat16
    results: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    encoders: dict = field(default_factory=dict)
    transformers: dict = field(default_factory=dict)  # kind -> model ("bf16", "fp8", "fp8-host")
    lora_path: Path | None = None
    speed: dict = field(default_factory=dict)  # measured figures later estimates use
    pipes: dict = field(default_factory=dict)  # the bf16 pipeline with the speed LoRA loaded
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpu_suite_")))

    # --- helpers ------------------------------------------------------------------------------------------------
    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def elapsed(self) -> float:
        return time.monotonic() - START

    def left(self) -> float:
        return self.args.budget_s - self.elapsed()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def allocated_gb(self) -> float | None:
        return round(torch.cuda.memory_allocated(self.device) / GB, 2) if self.cuda else None

    def reset_peak(self) -> None:
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> dict:
        if not self.cuda:
            return {"peak_gb": None, "peak_reserved_gb": None}
        return {
            "peak_gb": round(torch.cuda.max_memory_allocated(self.device) / GB, 2),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved(self.device) / GB, 2),
        }

    def free_transformers(self, keep: str | None = None) -> None:
        """One transformer on the device at a time: plans' peaks must not count another, and an 80 GB GPU holds
        the bf16 model (37.8 GB) or the fp8 one, not both beside the encoders."""
        for kind in [k for k in self.transformers if k != keep]:
            del self.transformers[kind]
            self.pipes.pop(kind, None)  # a pipeline holds its transformer too
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def transformer(self, kind: str):
        """``bf16`` and ``fp8`` live on the device; ``fp8-host`` is the 24 GB plan's (weights in host memory,
        quantised there weight-only, as the loader does for group offload)."""
        if kind in self.transformers:
            return self.transformers[kind]
        from multitalk_serve.engine.speed.memory import fp8_config

        self.free_transformers()
        start = time.perf_counter()
        if kind == "bf16":
            model = random_transformer(self.scale.dims, self.dtype, self.device)
        elif kind == "fp8":
            model = random_transformer(self.scale.dims, self.dtype, self.device, fp8_config=fp8_config(self.device))
        elif kind == "fp8-host":
            host = torch.device("cpu")
            model = random_transformer(self.scale.dims, self.dtype, self.device, home=host, fp8_config=fp8_config(host))
        else:
            raise ValueError(kind)
        self.sync()
        self.speed[f"build_{kind}_s"] = time.perf_counter() - start
        self.transformers[kind] = model
        return model

    def fwd_estimate(self, resolution: str, speakers: int = 1) -> float:
        """Seconds of one forward: the measured 480p bf16 forward scaled by FLOPs, or a prior (40 % of an H100's
        bf16 peak on CUDA; 0.3 TFLOP/s on a CPU)."""
        frames, height, width = self.scale.shapes[resolution]
        flops = forward_flops(self.scale.dims, frames, height, width, speakers)
        measured = self.speed.get("fwd_480p_s")
        if measured:
            f0, h0, w0 = self.scale.shapes["480p"]
            return measured * flops / forward_flops(self.scale.dims, f0, h0, w0, 1)
        return flops / (400e12 if self.cuda else 0.3e12)

    def prior(self, full: float, smoke: float = 1.0) -> float:
        return full if self.scale.name == "full" else smoke

    # --- outputs ------------------------------------------------------------------------------------------------
    def write(self) -> None:
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = {
            "suite": "bench/gpu_suite.py",
            "scale": self.scale.name,
            "budget_s": self.args.budget_s,
            "elapsed_s": round(self.elapsed(), 1),
            "complete": len(self.results) == self.meta.get("items_total"),
            "machine": self.meta.get("machine", {}),
            "targets": TARGETS,
            "items": self.results,
        }
        tmp = out / "gpu_suite.json.tmp"
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        tmp.replace(out / "gpu_suite.json")
        (out / "gpu_suite.md").write_text(markdown(report))


def log(message: str) -> None:
    print(f"[gpu_suite {time.monotonic() - START:7.1f} s] {message}", flush=True)


def run_items(suite: Suite, items: list[Item]) -> None:
    suite.meta["items_total"] = len(items)
    for item in items:
        row: dict = {"item": item.name, "what": item.what}
        left = suite.left()
        try:
            estimate = float(item.estimate(suite))
        except Skip as exc:
            estimate, row["status"], row["reason"] = 0.0, "skipped", str(exc)
        row["estimate_s"] = round(estimate, 1)
        if "status" not in row and estimate > max(left, 0.0):  # free items (environment, reasons) always run
            row["status"] = "skipped"
            row["reason"] = f"would take about {estimate:.0f} s; {max(left, 0):.0f} s of --budget-s left"
        if "status" in row:
            log(f"skip {item.name}: {row['reason']}")
        else:
            log(f"run  {item.name} (estimated {estimate:.0f} s, {left:.0f} s left): {item.what}")
            start, cpu = time.perf_counter(), time.process_time()
            try:
                row.update(item.run(suite))
                row["status"] = "ok"
            except Skip as exc:
                row["status"], row["reason"] = "skipped", str(exc)
            except torch.OutOfMemoryError as exc:
                row["status"], row["error"] = "failed", f"out of device memory: {str(exc).splitlines()[0]}"
            except Exception as exc:
                row["status"], row["error"] = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                row["traceback"] = traceback.format_exc()[-3000:]
            row["seconds"] = round(time.perf_counter() - start, 2)
            row["cpu_s"] = round(time.process_time() - cpu, 2)  # this process's CPU time (all threads)
            if row["status"] == "failed":
                gc.collect()
                if suite.cuda:
                    torch.cuda.empty_cache()
            log(f"{row['status']} {item.name} in {row['seconds']} s" + _brief(row))
        suite.results.append(row)
        suite.write()


def _brief(row: dict) -> str:
    if row["status"] != "ok":
        return f": {row.get('reason') or row.get('error')}"
    keys = ("s_per_forward", "clip_s", "seconds_each", "peak_gb", "estimate_gb", "vs_bf16")
    parts = [f"{k}={row[k]}" for k in keys if row.get(k) is not None]
    for case in row.get("cases", []):
        parts.append(f"{case['speakers']}spk {case['s_per_forward']} s peak {case['peak_gb']} GB")
    return (": " + ", ".join(parts)) if parts else ""


# --- items: environment and encoders -----------------------------------------------------------------------------
def item_environment(suite: Suite) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from multitalk_serve.engine.speed.backends import installed_backends

    versions = {}
    for name in ("torch", "diffusers", "transformers", "torchao", "peft", "av", "gguf", "huggingface_hub", "numpy"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:  # reported; the items that need it fail on their own
            versions[name] = "missing"
    machine = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "device": str(suite.device),
        "versions": versions,
        "scale": suite.scale.name,
    }
    if suite.cuda:
        props = torch.cuda.get_device_properties(suite.device)
        machine |= {
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / GB, 1),
            "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(suite.device))),
            "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda,
        }
    else:
        machine["cpu"] = _cpu_model()
    machine["attention_backends"] = installed_backends(suite.device)
    suite.meta["machine"] = machine
    return {"machine": machine}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def item_build_encoders(suite: Suite) -> dict:
    """T5 (bf16), CLIP (bf16), VAE (fp32) and wav2vec2 (fp32), as ``MultiTalkPipeline.from_pretrained`` holds them."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from multitalk_serve.engine.loading.encoders import ComponentSource, empty_model
    from multitalk_serve.engine.loading.original_encoders import CLIP_MEAN, CLIP_STD
    from multitalk_serve.engine.loading.weights import empty_weights
    from multitalk_serve.engine.models.encoders import ClipImageEncoder, T5TextEncoder, WanVideoVAE
    from multitalk_serve.engine.pipeline.audio import Wav2Vec2Features
    from multitalk_serve.tiny import _tiny_tokenizer

    configs = encoder_configs(suite.scale)
    dtypes = {"text_encoder": suite.dtype, "image_encoder": suite.dtype, "vae": torch.float32}
    rows = {}
    for seed, kind in enumerate(("text_encoder", "image_encoder", "vae")):
        start = time.perf_counter()
        source = ComponentSource(kind, "random", Path(f"random {kind}"), configs[kind], {})
        model = materialise(empty_model(source), suite.device, lambda _n, k=kind: dtypes[k], seed=seed)
        model.to(suite.device)  # buffers
        suite.sync()
        params = sum(p.numel() for p in model.parameters())
        if kind == "text_encoder":
            # the UMT5 tokenizer (250k pieces) cannot be made offline: the tiny one; the encoder always runs on
            # 512 padded tokens, so the cost is the real encoder's
            suite.encoders[kind] = T5TextEncoder(_tiny_tokenizer(), model, suite.device)
        elif kind == "image_encoder":
            suite.encoders[kind] = ClipImageEncoder(model, CLIP_MEAN, CLIP_STD, suite.device)
        else:
            suite.encoders[kind] = WanVideoVAE(model, suite.device)
        rows[kind] = {"parameters": params, "seconds": round(time.perf_counter() - start, 2)}
    start = time.perf_counter()
    with empty_weights():
        wav2vec = Wav2Vec2Model(wav2vec2_config(suite.scale))
    wav2vec.config._attn_implementation = "sdpa"
    materialise(wav2vec, suite.device, lambda _n: torch.float32, seed=3).to(suite.device)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    suite.encoders["audio_encoder"] = Wav2Vec2Features(wav2vec.eval(), extractor, suite.device)
    rows["audio_encoder"] = {
        "parameters": sum(p.numel() for p in wav2vec.parameters()),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return {"components": rows, "allocated_gb": suite.allocated_gb()}


def _timed(suite: Suite, fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """``repeats`` timed calls after one warm-up call."""
    with torch.inference_mode():
        out = fn()
        suite.sync()
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            suite.sync()
            runs.append(time.perf_counter() - start)
    return runs, out


def _need_encoders(suite: Suite) -> None:
    if not suite.encoders:
        raise Skip("the encoders were not built (see encoders.build)")


def item_t5(suite: Suite) -> dict:
    _need_encoders(suite)
    suite.reset_peak()
    runs, _ = _timed(suite, lambda: suite.encoders["text_encoder"]([PROMPT]), suite.scale.encoder_repeats)
    return {"seconds_each": round(min(runs), 4), "runs": _r(runs), "tokens": TEXT_LEN, **suite.peak()}


def item_clip(suite: Suite) -> dict:
    _need_encoders(suite)
    height, width = suite.scale.shapes["480p"][1:]
    frame = torch.rand(3, height, width, device=suite.device) * 2 - 1
    suite.reset_peak()
    runs, out = _timed(suite, lambda: suite.encoders["image_encoder"](frame), suite.scale.encoder_repeats)
    return {"seconds_each": round(min(runs), 4), "runs": _r(runs), "output": list(out.shape), **suite.peak()}


def item_wav2vec(suite: Suite) -> dict:
    _need_encoders(suite)
    from multitalk_serve.demo_media import voice

    wave = voice(suite.scale.audio_seconds, 140, seed=0)
    suite.reset_peak()
    runs, out = _timed(suite, lambda: suite.encoders["audio_encoder"](wave), suite.scale.encoder_repeats)
    return {
        "audio_s": suite.scale.audio_seconds,
        "seconds_each": round(min(runs), 4),
        "runs": _r(runs),
        "output": list(out.shape),
        **suite.peak(),
    }


def item_vae_decode(suite: Suite) -> dict:
    _need_encoders(suite)
    frames, height, width = suite.scale.shapes["480p"]
    latents = torch.randn(16, latent_frames(frames), height // 8, width // 8, device=suite.device)
    suite.reset_peak()
    runs, out = _timed(suite, lambda: suite.encoders["vae"].decode(latents), 1)
    suite.speed["vae_decode_s"] = min(runs)
    return {"seconds_each": round(min(runs), 3), "runs": _r(runs), "output": list(out.shape), **suite.peak()}


def _r(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]


# --- items: transformer forwards ---------------------------------------------------------------------------------
def forward_item(
    resolution: str, weights: str, backend: str, speakers: tuple[int, ...] = (1, 2)
) -> Callable[[Suite], dict]:
    def run(suite: Suite) -> dict:
        from multitalk_serve.engine.speed.backends import NATIVE, probe
        from multitalk_serve.forward_check import random_inputs

        if weights == "fp8" and not suite.cuda:
            note = "weight-only fp8 (no fp8 matmuls on a CPU)"
        elif weights == "fp8":
            cap = torch.cuda.get_device_capability(suite.device)
            note = "fp8 matmuls (torchao, per-row)" if cap >= (8, 9) else "weight-only fp8 (compute capability < 8.9)"
        else:
            note = None
        model = suite.transformer(weights)
        if getattr(model, "peft_config", None):  # the fast clip's speed LoRA adapter: not part of a plain forward
            model.disable_adapters()
        if backend != NATIVE:
            error = probe(backend, suite.device, suite.dtype)  # raises if the kernel does not run here
            if error > 0.05:
                raise Skip(f"backend {backend} differs from SDPA by {error:.3g} on the probe")
        model.set_attention_backend(backend)
        frames, height, width = suite.scale.shapes[resolution]
        cases = []
        try:
            for n in speakers:
                inputs = random_inputs(model, n, frames, height, width, suite.dtype, suite.device)
                resident = suite.allocated_gb()
                suite.reset_peak()
                runs, out = _timed(suite, lambda inputs=inputs: model(**inputs).sample, suite.scale.repeats[resolution])
                if not torch.isfinite(out).all():
                    raise RuntimeError(f"non-finite output ({n} speaker(s))")
                best = min(runs)
                flops = forward_flops(suite.scale.dims, frames, height, width, n)
                peak = suite.peak()
                case = {
                    "speakers": n,
                    "s_per_forward": round(best, 4),
                    "runs": _r(runs),
                    "tflop": round(flops / 1e12, 3),
                    "achieved_tflops": round(flops / best / 1e12, 2),
                    "resident_gb": resident,
                    **peak,
                }
                if peak["peak_gb"] is not None and resident is not None:
                    case["workspace_gb"] = round(peak["peak_gb"] - resident, 2)
                cases.append(case)
                del inputs, out
                if (resolution, weights, backend, n) == ("480p", "bf16", NATIVE, 1):
                    suite.speed["fwd_480p_s"] = best
        finally:
            model.set_attention_backend(NATIVE)
        tokens = latent_frames(frames) * (height // 16) * (width // 16)
        row = {"resolution": resolution, "shape": f"{frames}x{height}x{width}", "tokens": tokens}
        row |= {"weights": weights, "backend": backend, "cases": cases}
        if note:
            row["note"] = note
        return row

    return run


def forward_estimate(resolution: str, weights: str, backend: str = "native") -> Callable[[Suite], float]:
    def estimate(suite: Suite) -> float:
        if backend in SDPA_KERNELS and not suite.cuda:
            raise Skip(f"SDPA's {backend.strip('_')} kernel needs CUDA")
        if resolution != "480p" and suite.scale.name == "smoke":
            raise Skip("smoke run: the same code as the 480p item, only the shape differs")
        n = suite.scale.repeats[resolution] + 1  # + the warm-up
        cost = n * (suite.fwd_estimate(resolution, 1) + suite.fwd_estimate(resolution, 2))
        if weights not in suite.transformers:
            cost += suite.prior(15.0 if weights == "fp8" else 5.0, 0.5)
        return cost

    return estimate


def backend_items(suite: Suite) -> list[Item]:
    """One 480p bf16 item per attention backend besides SDPA: the installed fast kernels, then SDPA's own kernels
    (CUDA); on a CPU, ``_native_math`` stands in so that the smoke run goes through the same code."""
    from multitalk_serve.engine.speed.backends import NATIVE, installed_backends

    names = [b for b in installed_backends(suite.device) if b != NATIVE] + list(SDPA_KERNELS)
    if not suite.cuda:
        names.append("_native_math")
    return [
        Item(
            f"forward.bf16.480p.{name}",
            forward_item("480p", "bf16", name),
            forward_estimate("480p", "bf16", name),
            f"seconds per forward at 480p, 1 and 2 speakers, bf16, attention backend {name}",
        )
        for name in names
    ]


# --- items: a whole clip and the memory plans --------------------------------------------------------------------
class CallTimer:
    """Wraps ``transformer.forward``: seconds of each call (synchronised on CUDA)."""

    def __init__(self, module, suite: Suite):
        self.module, self.suite, self.calls = module, suite, []
        self.forward = module.forward

    def __call__(self, *args, **kwargs):
        self.suite.sync()
        start = time.perf_counter()
        out = self.forward(*args, **kwargs)
        self.suite.sync()
        self.calls.append(time.perf_counter() - start)
        return out

    def __enter__(self) -> CallTimer:
        self.module.forward = self
        return self

    def __exit__(self, *exc) -> None:
        self.module.forward = self.forward


def write_random_lora(suite: Suite) -> Path:
    """A speed LoRA in the published lightx2v layout at the published rank: the key set of
    ``multitalk_serve.tiny.speed_lora_tensors`` at the real dims; every block reuses block 0's random factors (the
    values do not change the cost, and drawing 1.4 GB of them would)."""
    from safetensors.torch import save_file

    from multitalk_serve.tiny import speed_lora_tensors

    dims = suite.scale.dims
    one = speed_lora_tensors(dims.replace(num_layers=1), rank=suite.scale.lora_rank)
    tensors = {}
    for key, value in one.items():
        value = value.to(torch.bfloat16).contiguous()
        if ".blocks.0." in key:
            for i in range(dims.num_layers):  # copies: safetensors refuses shared storage
                tensors[key.replace(".blocks.0.", f".blocks.{i}.")] = value.clone()
        else:
            tensors[key] = value
    path = suite.tmp / "lightx2v_random_speed_lora.safetensors"
    save_file(tensors, str(path))
    return path


def make_pipeline(suite: Suite, transformer):
    from multitalk_serve.engine import MultiTalkPipeline

    pipe = MultiTalkPipeline(
        transformer,
        suite.encoders["vae"],
        suite.encoders["text_encoder"],
        suite.encoders["image_encoder"],
        suite.encoders["audio_encoder"],
        device=suite.device,
        dtype=suite.dtype,
    )
    pipe.set_attention_backend("auto")
    return pipe


def run_job(suite: Suite, pipe, steps: int | None, speed_lora: bool) -> dict:
    """One ``fast`` clip (81 frames, 480p, one speaker) through ``generate``: stage seconds, every forward's
    seconds, the share of time outside the transformer, peak device memory."""
    from multitalk_serve.demo_media import portrait, voice
    from multitalk_serve.engine import GenerateOptions

    height, width = suite.scale.shapes["480p"][1:]
    overrides = {"steps": steps} if steps else {}
    options = GenerateOptions.from_preset(
        "fast",
        seed=1,
        size=(height, width),
        mode="clip",
        frames_per_clip=suite.scale.frames_per_clip,
        motion_frames=suite.scale.motion_frames,
        speed_lora=speed_lora,
        **overrides,
    )
    speech = [voice(suite.scale.clip_seconds, 140, seed=0)]
    suite.reset_peak()
    with CallTimer(pipe.transformer, suite) as timer:
        result = pipe.generate(portrait(), speech, PROMPT, suite.tmp / "clip.mp4", options=options)
    suite.sync()
    total = result.timings["total"]
    transformer_s = sum(timer.calls)
    return {
        "clip_s": round(total, 3),
        "frames": result.frames,
        "size": f"{result.height}x{result.width}",
        "steps": options.steps,
        "forwards": len(timer.calls),
        "transformer_s": round(transformer_s, 3),
        "s_per_forward": round(statistics.median(timer.calls), 4) if timer.calls else None,
        "forward_runs": _r(timer.calls),
        "share_outside_transformer": round(1 - transformer_s / total, 4),
        "stage_s": result.timings,
        "attention": pipe.attention_backend,
        **suite.peak(),
    }


def item_fast_clip(suite: Suite) -> dict:
    """The ``fast`` preset end to end, bf16, everything resident: also the ``bf16`` plan's measured peak."""
    from multitalk_serve.engine.speed.memory import parse_plan

    _need_encoders(suite)
    pipe = make_pipeline(suite, suite.transformer("bf16"))
    start = time.perf_counter()
    suite.lora_path = write_random_lora(suite)
    lora_write = time.perf_counter() - start
    start = time.perf_counter()
    pipe.load_speed_lora(suite.lora_path)
    lora_load = time.perf_counter() - start
    start = time.perf_counter()
    pipe.warm_up()
    warm = time.perf_counter() - start
    row = run_job(suite, pipe, suite.scale.clip_steps, speed_lora=True)
    suite.speed["clip_fast_s"] = row["clip_s"]
    suite.speed["plan_forward_s"] = row["s_per_forward"]
    suite.pipes["bf16"] = pipe
    row |= {"plan": "bf16", "estimate_gb": parse_plan("bf16", "480p").gpu_gb}
    row |= {
        "lora_rank": suite.scale.lora_rank,
        "lora_write_s": round(lora_write, 2),
        "lora_load_s": round(lora_load, 2),
    }
    row["warm_up_s"] = round(warm, 2)
    return row


def fast_clip_estimate(suite: Suite) -> float:
    fwd = suite.fwd_estimate("480p", 1)
    extra = suite.prior(25.0, 2.0)  # LoRA file, adapter, warm-up, MP4
    vae = suite.speed.get("vae_decode_s", suite.prior(8.0, 0.5))
    return 2 * (suite.scale.clip_steps or 4) * fwd + 2.5 * vae + extra


def plan_item(plan_name: str) -> Callable[[Suite], dict]:
    def run(suite: Suite) -> dict:
        from multitalk_serve.engine.speed.memory import group_offload, parse_plan

        _need_encoders(suite)
        plan = parse_plan(plan_name, "480p")
        kind = plan.weights if not plan.group_offload else "fp8-host"
        model = suite.transformer(kind)
        notes = []
        if plan.weights == "bf16":
            pipe = suite.pipes.get("bf16")
            if pipe is None or pipe.transformer is not model:
                pipe = make_pipeline(suite, model)
            speed_lora = pipe.speed_lora is not None
        else:
            pipe = make_pipeline(suite, model)
            speed_lora = False
            notes.append(
                "fast preset without an adapter: an fp8 worker merges the speed LoRA into the weights before "
                "quantising (same bytes, same matmuls)"
            )
        if plan.group_offload:
            if not getattr(model, "_gpu_suite_offloaded", False):
                group_offload(model, suite.device)
                model._gpu_suite_offloaded = True
            if not suite.cuda:
                notes.append("group offload without CUDA streams (CPU): the side-stream copy is not exercised")
        text = suite.encoders["text_encoder"]
        if plan.offload_text_encoder:
            text.offload("cpu")
        try:
            row = run_job(suite, pipe, suite.scale.plan_steps, speed_lora)
        finally:
            if plan.offload_text_encoder:
                text.home = suite.device
                text.model.to(suite.device)
        row |= {"plan": plan_name, "estimate_gb": plan.gpu_gb}
        # against the bf16 fast job's forwards (speed LoRA as an adapter, as a bf16 worker runs fast) and against
        # the plain bf16 480p forward (no adapter): the second is the stricter comparison for the step-time target
        for key, bf16 in (
            ("vs_bf16", suite.speed.get("plan_forward_s")),
            ("vs_bf16_forward", suite.speed.get("fwd_480p_s")),
        ):
            if bf16 and row["s_per_forward"]:
                row[key] = round(row["s_per_forward"] / bf16, 3)
        if plan.weights == "fp8":
            row["fp8"] = "weight-only (host memory)" if plan.group_offload or not suite.cuda else "fp8 matmuls"
        if notes:
            row["notes"] = notes
        if plan.group_offload:
            suite.free_transformers()  # 19 GB of host memory, pinned
        return row

    return run


def plan_estimate(plan_name: str) -> Callable[[Suite], float]:
    def estimate(suite: Suite) -> float:
        forwards = 2 * suite.scale.plan_steps
        fwd = suite.fwd_estimate("480p", 1) * (2.0 if "group-offload" in plan_name else 1.0)
        cost = forwards * fwd + 2.5 * suite.speed.get("vae_decode_s", suite.prior(8.0, 0.5)) + suite.prior(5.0, 0.5)
        if "t5-offload" in plan_name:
            cost += suite.prior(8.0, 0.2)  # 11.4 GB to the host and back, twice
        kind = "fp8-host" if "group-offload" in plan_name else plan_name.split("+")[0]
        if kind not in suite.transformers:
            cost += suite.prior({"bf16": 5.0, "fp8": 15.0, "fp8-host": 45.0}[kind], 0.5)
        return cost

    return estimate


# --- items: the official forward, InfiniteTalk -------------------------------------------------------------------
def item_official(suite: Suite) -> dict:
    if suite.args.official is None:
        raise Skip("no --official checkout of github.com/MeiGen-AI/MultiTalk given")
    checkout = Path(suite.args.official)
    if not (checkout / "wan" / "modules" / "multitalk_model.py").is_file():
        raise Skip(f"--official {checkout}: no wan/modules/multitalk_model.py there")
    suite.free_transformers()  # the official model needs the room
    out = suite.tmp / "official.json"
    cmd = [suite.args.official_python, str(Path(__file__).resolve()), "--official-worker", str(out)]
    cmd += ["--official", str(checkout), "--device", str(suite.device)]
    cmd += ["--smoke"] if suite.scale.name == "smoke" else []
    log("$ " + " ".join(cmd))
    timeout = max(30.0, suite.left())
    proc = subprocess.run(cmd, check=False, text=True, capture_output=True, timeout=timeout)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise RuntimeError("official worker failed: " + " | ".join(tail))
    return json.loads(out.read_text())


class _Absent(types.ModuleType):
    """Stands in for a library that is imported but not used on the measured path; fails if it is used."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Absent(f"{self.__name__}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} is not installed here (stand-in)")


def official_worker(args: argparse.Namespace) -> None:
    """In the official environment: the official ``WanModel`` at the scale's dims with random weights on the device
    (built there in bf16, as the official pipeline holds it), one and two speakers at 480p."""
    sys.path.insert(0, str(REPO / "tests" / "fixtures" / "official"))
    import make_fixtures  # our stand-ins for what the official code imports but cannot run everywhere

    from bench_official import half_precision

    device = torch.device(args.device)
    scale = smoke_scale() if args.smoke else full_scale()
    if args.smoke:  # the official code hard-codes 1280-wide CLIP and 12 x 768 audio features
        from multitalk_serve.tiny import PARITY_DIMS

        scale = Scale(**{**scale.__dict__, "dims": PARITY_DIMS})
    d, dtype = scale.dims, torch.bfloat16
    real, kernels = {}, []
    if device.type == "cuda":
        for name in ("xformers", "xformers.ops"):
            try:
                real[name] = __import__(name, fromlist=["_"])
            except Exception:  # any import failure means: use the stand-in
                real.clear()
                break
    make_fixtures.install_stand_ins(Path(args.official))
    sys.modules.update(real)
    # I/O libraries wan/utils/multitalk_utils.py imports for saving videos and audio; the forward never calls them
    for name in ("imageio", "soundfile", "skimage"):
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = _Absent(name)
            kernels.append(f"{name} absent (unused by the forward)")
    import wan.modules.attention as wan_attention
    import wan.modules.multitalk_model as wan_model
    import wan.utils.multitalk_utils as wan_utils

    kernels.insert(0, "xformers" if real else "xformers->SDPA")

    fa = device.type == "cuda" and (wan_attention.FLASH_ATTN_3_AVAILABLE or wan_attention.FLASH_ATTN_2_AVAILABLE)
    if fa:
        kernels.append("flash-attn " + ("3" if wan_attention.FLASH_ATTN_3_AVAILABLE else "2"))
    else:

        def sdpa(q, k, v, q_lens=None, k_lens=None, window_size=(-1, -1), **_):
            return make_fixtures._sdpa_bmhk(q, k, v)

        wan_model.flash_attention = half_precision(sdpa, dtype)
        kernels.append("flash_attention->SDPA")
    if device.type != "cuda":
        wan_utils.torch_gc = lambda: None
    kernels.append("map eager (TORCH_COMPILE_DISABLE)")
    start = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = wan_model.WanModel(
                model_type="i2v",
                in_dim=d.in_dim,
                dim=d.dim,
                ffn_dim=d.ffn_dim,
                freq_dim=d.freq_dim,
                text_dim=d.text_dim,
                out_dim=d.out_dim,
                num_heads=d.num_heads,
                num_layers=d.num_layers,
                eps=d.eps,
                audio_window=d.audio_window,
                intermediate_dim=d.audio_intermediate_dim,
                output_dim=d.audio_output_dim,
                context_tokens=d.audio_context_tokens,
                weight_init=False,
            )
    finally:
        torch.set_default_dtype(previous)
    model = model.to(dtype).eval().requires_grad_(False)
    model.disable_teacache()
    if device.type != "cuda":  # the official code runs these under CUDA autocast(fp32): on CPU, fp32 weights
        for module in (model.time_embedding, model.time_projection, model.head.head):
            module.float()
        kernels.append("fp32-autocast linears emulated")
    build_s = time.perf_counter() - start
    frames, height, width = scale.shapes["480p"]
    t, h, w = latent_frames(frames), height // 8, width // 8
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device).to(dtype)

    y = torch.cat([torch.zeros(4, t, h, w, device=device, dtype=dtype), randn(16, t, h, w)])
    y[:4, 0] = 1
    masks = torch.zeros(3, h, w, device=device)
    masks[0, :, : w // 2] = 1
    masks[1, :, w // 2 :] = 1
    cases = []
    x, clip, context = randn(16, t, h, w), randn(1, 257, d.image_dim), randn(TEXT_LEN, d.text_dim)
    audio = randn(2, frames, d.audio_window, d.audio_layers, d.audio_channels)
    for speakers in (1, 2):
        ref = masks if speakers == 2 else torch.ones(3, h, w, device=device)

        def call(speakers=speakers, ref=ref):
            return model(
                [x],
                t=torch.tensor([900.0], device=device),
                context=[context],
                seq_len=t * h * w // 4,
                clip_fea=clip,
                y=[y],
                audio=audio[:speakers],
                ref_target_masks=ref,
            )

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            call()
            runs = []
            for _ in range(scale.repeats["480p"]):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                begin = time.perf_counter()
                call()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                runs.append(time.perf_counter() - begin)
        case = {"speakers": speakers, "s_per_forward": round(min(runs), 4), "runs": _r(runs)}
        if device.type == "cuda":
            case["peak_gb"] = round(torch.cuda.max_memory_allocated(device) / GB, 2)
        cases.append(case)
        print(f"official {speakers} speaker(s): {case}", flush=True)
    result = {"resolution": "480p", "shape": f"{frames}x{height}x{width}", "weights": "bf16"}
    result |= {"backend": "official: " + ", ".join(kernels), "cases": cases, "build_s": round(build_s, 2)}
    result["official_python"] = sys.executable
    Path(args.official_worker).write_text(json.dumps(result))


@contextlib.contextmanager
def audio_norm_fp32(model):
    """The transformer with InfiniteTalk's / FlashTalk's one numerical difference (``loading/adapters.py``): the
    audio projection's LayerNorm in float32. Restored afterwards (the other items measure MultiTalk's)."""
    before = model.audio_proj.norm_fp32
    model.audio_proj.norm_fp32 = True
    try:
        yield model
    finally:
        model.audio_proj.norm_fp32 = before


def item_infinitetalk(suite: Suite) -> dict:
    """InfiniteTalk's forward: MultiTalk's network and shapes with the audio norm in float32."""
    with audio_norm_fp32(suite.transformer("bf16")):
        row = forward_item("480p", "bf16", "native")(suite)
    return row | {"model": "infinitetalk (audio norm fp32)"}


def item_flashtalk_forward(suite: Suite) -> dict:
    """FlashTalk's forward at its window shape (one speaker; the 2-speaker case is not a FlashTalk job)."""
    with audio_norm_fp32(suite.transformer("bf16")):
        row = forward_item("flashtalk", "bf16", "native", speakers=(1,))(suite)
    suite.speed["fwd_flashtalk_s"] = row["cases"][0]["s_per_forward"]
    return row | {"model": "flashtalk"}


def item_flashtalk_window(suite: Suite) -> dict:
    """Two FlashTalk windows (56 new frames, 2.24 s of video) through ``generate`` with a job folder: every forward,
    the stage seconds, when the first segment was written, the seconds per second of video."""
    from multitalk_serve.demo_media import portrait, voice
    from multitalk_serve.engine import GenerateOptions

    _need_encoders(suite)
    model = suite.transformer("bf16")
    pipe = make_pipeline(suite, model)
    pipe.adapter = "flashtalk"
    frames, height, width = suite.scale.shapes["flashtalk"]
    window = {} if suite.scale.name == "full" else {"frames_per_clip": frames, "motion_frames": 1}
    options = GenerateOptions.from_preset("realtime", seed=1, size=(height, width), **window)
    new = options.resolved().frames_per_clip - options.resolved().motion_frames
    speech = [voice(2 * new / 25, 140, seed=0)]
    started, first = time.perf_counter(), []
    with audio_norm_fp32(model):
        pipe.warm_up(size=(height, width))
        suite.reset_peak()
        started = time.perf_counter()
        with CallTimer(pipe.transformer, suite) as timer:
            result = pipe.generate(
                portrait(),
                speech,
                PROMPT,
                suite.tmp / "realtime.mp4",
                options=options,
                job_dir=suite.tmp / "realtime-job",
                on_segment=lambda segment: first.append(time.perf_counter() - started) if not first else None,
            )
    suite.sync()
    total = result.timings["total"]
    transformer_s = sum(timer.calls)
    video_s = result.frames / 25
    return {
        "model": "flashtalk",
        "size": f"{result.height}x{result.width}",
        "frames": result.frames,
        "windows": result.clips,
        "forwards": len(timer.calls),
        "s_per_forward": round(statistics.median(timer.calls), 4) if timer.calls else None,
        "forward_runs": _r(timer.calls),
        "total_s": round(total, 3),
        "first_segment_s": round(first[0], 3) if first else None,
        "s_per_video_s": round(total / video_s, 3),
        "share_outside_transformer": round(1 - transformer_s / total, 4),
        "stage_s": result.timings,
        "attention": pipe.attention_backend,
        **suite.peak(),
    }


def flashtalk_window_estimate(suite: Suite) -> float:
    fwd = suite.speed.get("fwd_flashtalk_s") or suite.fwd_estimate("flashtalk", 1)
    vae = suite.speed.get("vae_decode_s", suite.prior(8.0, 0.5))
    return 2 * (4 * fwd + vae) + 3 * fwd + suite.prior(20.0, 2.0)  # 2 windows, the warm-up, encoders and MP4


# --- the plan ------------------------------------------------------------------------------------------------------
def items_for(suite: Suite) -> list[Item]:
    def fixed(full: float, smoke: float = 0.5) -> Callable[[Suite], float]:
        return lambda s: s.prior(full, smoke)

    items = [
        Item("environment", item_environment, fixed(0.0, 0.0), "GPU, versions, installed attention backends"),
        Item("encoders.build", item_build_encoders, fixed(25.0, 2.0), "random T5, CLIP, VAE, wav2vec2 on the device"),
        Item("t5.encode", item_t5, fixed(3.0), "UMT5-XXL encode of one prompt (512 tokens), bf16"),
        Item("clip.encode", item_clip, fixed(2.0), "CLIP ViT-H/14 encode of one frame, bf16"),
        Item("wav2vec2.encode", item_wav2vec, fixed(3.0), "wav2vec2-base features of 10 s of audio, fp32"),
        Item("vae.decode", item_vae_decode, fixed(20.0, 1.0), "VAE decode of one 81-frame 480p window, fp32"),
        Item(
            "forward.bf16.480p.native",
            forward_item("480p", "bf16", "native"),
            forward_estimate("480p", "bf16"),
            "seconds per forward at 480p, 1 and 2 speakers, bf16, PyTorch SDPA",
        ),
        Item(
            "clip.fast",
            item_fast_clip,
            fast_clip_estimate,
            "an 81-frame 480p clip, fast preset (random speed LoRA adapter), end to end, bf16",
        ),
        Item(
            "infinitetalk.forward.480p",
            item_infinitetalk,
            forward_estimate("480p", "bf16"),
            "InfiniteTalk's forward at 480p, 1 and 2 speakers, bf16, PyTorch SDPA (audio norm in fp32)",
        ),
        Item(
            "flashtalk.forward",
            item_flashtalk_forward,
            lambda s: (s.scale.repeats["480p"] + 1) * s.fwd_estimate("flashtalk", 1),
            "FlashTalk's forward at its window shape (33x768x448), one speaker, bf16, PyTorch SDPA",
        ),
        Item(
            "flashtalk.window",
            item_flashtalk_window,
            flashtalk_window_estimate,
            "two FlashTalk windows (realtime preset) end to end with a job folder: time to first segment",
        ),
        Item(
            "plan.bf16+t5-offload",
            plan_item("bf16+t5-offload"),
            plan_estimate("bf16+t5-offload"),
            "fast job under the plan bf16+t5-offload: peak vs the planner's estimate",
        ),
        Item(
            "forward.fp8.480p.native",
            forward_item("480p", "fp8", "native"),
            forward_estimate("480p", "fp8"),
            "seconds per forward at 480p, 1 and 2 speakers, fp8 weights, PyTorch SDPA",
        ),
        Item("plan.fp8", plan_item("fp8"), plan_estimate("fp8"), "fast job under the plan fp8"),
        Item(
            "plan.fp8+t5-offload",
            plan_item("fp8+t5-offload"),
            plan_estimate("fp8+t5-offload"),
            "fast job under the plan fp8+t5-offload",
        ),
        Item(
            f"plan.{PLAN_24GB}",
            plan_item(PLAN_24GB),
            plan_estimate(PLAN_24GB),
            "fast job under the 24 GB plan (fp8 weights in host memory, streamed per block): peak and step time",
        ),
        Item(
            "forward.bf16.720p.native",
            forward_item("720p", "bf16", "native"),
            forward_estimate("720p", "bf16"),
            "seconds per forward at 720p, 1 and 2 speakers, bf16, PyTorch SDPA",
        ),
        Item(
            "official.forward.480p",
            item_official,
            lambda s: 6 * s.fwd_estimate("480p", 2) + s.prior(20.0, 3.0) if s.args.official else 0.0,
            "the official WanModel forward at 480p, 1 and 2 speakers, bf16, same GPU (--official)",
        ),
        *backend_items(suite),
        Item(
            "forward.fp8.720p.native",
            forward_item("720p", "fp8", "native"),
            forward_estimate("720p", "fp8"),
            "seconds per forward at 720p, 1 and 2 speakers, fp8 weights, PyTorch SDPA",
        ),
    ]
    if suite.args.only:
        wanted = [w.strip() for w in suite.args.only.split(",") if w.strip()]
        items = [i for i in items if i.name == "environment" or any(i.name.startswith(w) for w in wanted)]
    return items


# --- the tables ---------------------------------------------------------------------------------------------------
def _cell(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(report: dict) -> str:
    m = report["machine"]
    device = m.get("gpu") or m.get("cpu") or m.get("device", "?")
    lines = [
        f"# gpu_suite ({report['scale']})",
        "",
        f"Machine: {device}"
        + (f", {m['gpu_memory_gb']} GB, compute capability {m['compute_capability']}" if m.get("gpu") else "")
        + f"; torch {m.get('versions', {}).get('torch', '?')}; {report['elapsed_s']} s of a {report['budget_s']} s"
        " budget" + ("" if report["complete"] else " (incomplete: the run stopped early)") + ".",
        "Random weights at the "
        + (
            "published sizes (14B transformer + audio layers, UMT5-XXL, ViT-H/14, Wan VAE, wav2vec2-base)."
            if report["scale"] == "full"
            else "tiny smoke sizes (figures mean nothing: the run proves the code paths)."
        ),
        "",
    ]
    items = report["items"]
    forwards = [
        r
        for r in items
        if r["item"].startswith(("forward.", "official.", "infinitetalk.forward", "flashtalk.forward"))
        and r["status"] == "ok"
    ]
    if forwards:
        lines += [
            "## Transformer forward",
            "",
            "| resolution | tokens | weights | attention | speakers | s / forward | TFLOP/s | peak GB | workspace GB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in forwards:
            for c in r["cases"]:
                lines.append(
                    f"| {r['resolution']} ({r['shape']}) | {_cell(r.get('tokens'))} | {r['weights']} | {r['backend']} |"
                    f" {c['speakers']} | {c['s_per_forward']:.3f} | {_cell(c.get('achieved_tflops'))} |"
                    f" {_cell(c.get('peak_gb'))} | {_cell(c.get('workspace_gb'))} |"
                )
        lines.append("")
    encoders = [r for r in items if r["item"] in ("t5.encode", "clip.encode", "wav2vec2.encode", "vae.decode")]
    if any(r["status"] == "ok" for r in encoders):
        lines += ["## Encoders and VAE", "", "| item | what | seconds | peak GB |", "|---|---|---|---|"]
        for r in encoders:
            if r["status"] == "ok":
                lines.append(f"| {r['item']} | {r['what']} | {r['seconds_each']:.3f} | {_cell(r.get('peak_gb'))} |")
        lines.append("")
    clip = next((r for r in items if r["item"] == "clip.fast" and r["status"] == "ok"), None)
    if clip:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in clip["stage_s"].items() if k != "total")
        lines += [
            "## fast preset, one 81-frame 480p clip, end to end (bf16, speed LoRA adapter)",
            "",
            "| clip s | forwards | transformer s | s / forward | outside the transformer | peak GB |",
            "|---|---|---|---|---|---|",
            f"| {clip['clip_s']:.2f} | {clip['forwards']} | {clip['transformer_s']:.2f} | {clip['s_per_forward']:.3f} |"
            f" {clip['share_outside_transformer']:.1%} | {_cell(clip.get('peak_gb'))} |",
            "",
            f"Stages (s): {stages}.",
            "",
        ]
    realtime = next((r for r in items if r["item"] == "flashtalk.window" and r["status"] == "ok"), None)
    if realtime:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in realtime["stage_s"].items() if k != "total")
        lines += [
            f"## realtime preset (FlashTalk), {realtime['windows']} windows at {realtime['size']}, end to end (bf16)",
            "",
            "| total s | first segment s | s per video s | frames | forwards | s / forward | outside the transformer"
            " | peak GB |",
            "|---|---|---|---|---|---|---|---|",
            f"| {realtime['total_s']:.2f} | {_cell(realtime['first_segment_s'], '{:.2f}')} |"
            f" {realtime['s_per_video_s']:.2f} | {realtime['frames']} | {realtime['forwards']} |"
            f" {realtime['s_per_forward']:.3f} | {realtime['share_outside_transformer']:.1%} |"
            f" {_cell(realtime.get('peak_gb'))} |",
            "",
            f"Stages (s): {stages}.",
            "",
        ]
    plans = [r for r in items if r["status"] == "ok" and r.get("plan")]
    if plans:
        lines += [
            "## Memory plans (fast job, 480p, one speaker)",
            "",
            "| plan | planner estimate GB | measured peak GB (reserved) | s / forward | vs bf16 fast job"
            " | vs bf16 forward |",
            "|---|---|---|---|---|---|",
        ]
        for r in plans:
            reserved = f" ({r['peak_reserved_gb']})" if r.get("peak_reserved_gb") is not None else ""
            lines.append(
                f"| {r['plan']} | {r['estimate_gb']} | {_cell(r.get('peak_gb'))}{reserved} |"
                f" {_cell(r.get('s_per_forward'), '{:.3f}')} | {_cell(r.get('vs_bf16'), '{:.2f}x')} |"
                f" {_cell(r.get('vs_bf16_forward'), '{:.2f}x')} |"
            )
        lines.append("")
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, value, limit in targets(report):
        met = "-" if value is None else ("yes" if value <= limit else "no")
        lines.append(f"| {name} | {_cell(value, '{:.3f}')} | {met} |")
    lines.append("")
    others = [r for r in items if r["status"] != "ok"]
    if others:
        lines += ["## Skipped or failed", "", "| item | status | why |", "|---|---|---|"]
        for r in others:
            lines.append(f"| {r['item']} | {r['status']} | {r.get('reason') or r.get('error')} |")
        lines.append("")
    notes = [(r["item"], n) for r in items for n in ([r["note"]] if r.get("note") else []) + r.get("notes", [])]
    if notes:
        lines += ["## Notes", ""] + [f"- {item}: {note}" for item, note in notes] + [""]
    return "\n".join(lines)


def targets(report: dict) -> list[tuple[str, float | None, float]]:
    by = {r["item"]: r for r in report["items"] if r["status"] == "ok"}
    fwd = by.get("forward.bf16.480p.native")
    fwd_s = fwd["cases"][0]["s_per_forward"] if fwd else None
    clip = by.get("clip.fast", {}).get("clip_s")
    plan_row = by.get(f"plan.{PLAN_24GB}", {})
    plan = plan_row.get("vs_bf16_forward", plan_row.get("vs_bf16"))
    return [
        (
            f"480p forward, 1 speaker, bf16, s (<= {TARGETS['forward_480p_s']} on an H100)",
            fwd_s,
            TARGETS["forward_480p_s"],
        ),
        (f"fast clip end to end, s (< {TARGETS['fast_clip_s']})", clip, TARGETS["fast_clip_s"]),
        (f"24 GB plan step time / bf16 (< {TARGETS['plan_24gb_vs_bf16']})", plan, TARGETS["plan_24gb_vs_bf16"]),
    ]


# --- entry point ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU: every code path, no GPU")
    parser.add_argument("--out", default=None, help="where gpu_suite.json and .md go (default: $OUT or out/gpu_suite)")
    parser.add_argument(
        "--budget-s", type=float, default=None, help=f"seconds for the run (default {DEFAULT_BUDGET_S:.0f}; smoke 300)"
    )
    parser.add_argument("--device", default=None, help="default: cuda (smoke: cpu)")
    parser.add_argument("--only", help="comma-separated item name prefixes (environment always runs)")
    parser.add_argument("--official", type=Path, help="checkout of github.com/MeiGen-AI/MultiTalk: time it too")
    parser.add_argument("--official-python", default=sys.executable, help="python of the official environment")
    parser.add_argument("--official-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.official_worker:
        args.device = args.device or ("cpu" if args.smoke else "cuda")
        official_worker(args)
        return 0
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.budget_s = args.budget_s if args.budget_s is not None else (300.0 if args.smoke else DEFAULT_BUDGET_S)
    args.out = args.out or os.environ.get("OUT") or str(REPO / "out" / "gpu_suite")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run on a GPU machine, or --smoke for the CPU smoke run")
    if not args.smoke and device.type != "cuda":
        parser.error("the full suite needs a CUDA GPU (use --smoke on a CPU)")
    torch.manual_seed(0)
    suite = Suite(args, smoke_scale() if args.smoke else full_scale(), device)
    log(f"scale {suite.scale.name}, device {device}, budget {args.budget_s:.0f} s, out {args.out}")
    try:
        run_items(suite, items_for(suite))
    finally:
        shutil.rmtree(suite.tmp, ignore_errors=True)  # the random LoRA file (1.4 GB at full size), the MP4s
    suite.write()
    counts = {s: sum(r["status"] == s for r in suite.results) for s in ("ok", "skipped", "failed")}
    log(f"done in {suite.elapsed():.0f} s: {counts}; wrote {Path(args.out) / 'gpu_suite.json'} and gpu_suite.md")
    print(Path(args.out, "gpu_suite.md").read_text())
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
