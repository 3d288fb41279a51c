"""Speed and memory options on the tiny model: presets, step caching, the speed LoRA, fp8, offload, attention
fallback, the memory planner, regional compile. Each is checked numerically against the plain path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import pipeline_stubs as stubs
from multitalk_serve.engine.errors import CheckpointError, EngineError
from multitalk_serve.engine.loading.paths import MULTITALK_DIR, ORIGINAL_DIR
from multitalk_serve.engine.loading.transformer import load_transformer
from multitalk_serve.engine.models import attention as attention_module
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline
from multitalk_serve.engine.speed.backends import NATIVE, choose_attention_backend, installed_backends
from multitalk_serve.engine.speed.lora import load_speed_lora, set_speed_lora
from multitalk_serve.engine.speed.memory import (
    MemoryPlan,
    estimate_gb,
    group_offload,
    is_fp8,
    parse_plan,
    plan_memory,
    transformer_bytes,
)
from multitalk_serve.engine.speed.presets import PRESETS
from multitalk_serve.engine.speed.step_cache import StepCache
from multitalk_serve.forward_check import random_inputs
from multitalk_serve.tiny import GGUF_NAMES, SPEED_LORA_NAME

OUR_PROCESSORS = (attention_module.MultiTalkSelfAttnProcessor, attention_module.MultiTalkAudioAttnProcessor)
SMALL = {"size": (64, 96), "seed": 5, "mode": "clip", "num_frames": 17, "frames_per_clip": 17, "motion_frames": 5}


def load(root, **kwargs):
    return load_transformer(root / ORIGINAL_DIR, root / MULTITALK_DIR, **kwargs)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "ref.png"
    Image.fromarray(stubs.scenario_image()).save(path)
    return path


def frames_of(pipe, image, options, audio=None):
    job = pipe.prepare(image, audio or [stubs.speech_like(0.7, 1)], "a person talks", options=options)
    return torch.cat(list(pipe.frames(job)), dim=1), job


# --- presets ----------------------------------------------------------------------------------------------------
def test_presets_set_their_values_and_every_field_can_be_overridden():
    fast = GenerateOptions.from_preset("fast")
    assert (fast.steps, fast.text_scale, fast.audio_scale, fast.shift, fast.speed_lora) == (4, 1.0, 2.0, 2.0, True)
    balanced = GenerateOptions.from_preset("balanced", cache_threshold=0.3, steps=30)
    assert (balanced.steps, balanced.cache_threshold, balanced.text_scale) == (30, 0.3, 5.0)
    quality = GenerateOptions.from_preset("quality")
    assert (quality.steps, quality.cache_threshold, quality.speed_lora) == (40, 0.0, False)
    assert quality.resolved().shift == 7.0
    assert set(PRESETS) == {"quality", "balanced", "fast", "realtime"}
    realtime = GenerateOptions.from_preset("realtime").resolved()
    assert (realtime.model, realtime.steps, realtime.shift, realtime.text_scale, realtime.audio_scale) == (
        "flashtalk",
        4,
        5.0,
        1.0,
        1.0,
    )
    assert (realtime.frames_per_clip, realtime.motion_frames, realtime.speed_lora) == (33, 5, False)
    with pytest.raises(EngineError, match="runs model flashtalk"):
        GenerateOptions.from_preset("realtime", model="infinitetalk")
    with pytest.raises(EngineError, match="preset must be one of"):
        GenerateOptions.from_preset("turbo-max")
    with pytest.raises(EngineError, match="cache_threshold"):
        GenerateOptions(cache_threshold=-1).validate()


def test_fast_preset_without_a_speed_lora_is_a_clear_error(tiny_pipeline, image):
    with pytest.raises(EngineError, match="no speed LoRA is loaded"):
        frames_of(tiny_pipeline, image, GenerateOptions.from_preset("fast", **SMALL))


# --- step cache ---------------------------------------------------------------------------------------------------
def test_step_cache_that_never_skips_equals_the_plain_sampler(tiny_pipeline, image):
    plain, _ = frames_of(tiny_pipeline, image, GenerateOptions(steps=8, **SMALL))
    # A positive threshold under every rescaled change: the cache path runs (decide, store) but computes everything.
    cached, job = frames_of(tiny_pipeline, image, GenerateOptions(steps=8, cache_threshold=1e-9, **SMALL))
    assert job.step_cache.skipped == 0 and job.step_cache.computed == 8 * 3
    assert torch.equal(plain, cached)


def test_step_cache_skips_forwards_after_the_warm_up_steps(tiny_pipeline, image):
    options = GenerateOptions(steps=10, **SMALL)
    plain, _ = frames_of(tiny_pipeline, image, options)
    # The random tiny model's timestep embedding moves far more per step than the real one's (whose changes the
    # TeaCache polynomial was fitted to), so a threshold only this model reaches stands in for the real 0.2.
    job = tiny_pipeline.prepare(image, [stubs.speech_like(0.7, 1)], "a person talks", options=options)
    job.step_cache = cache = StepCache(threshold=1e12)
    cached = torch.cat(list(tiny_pipeline.frames(job)), dim=1)
    assert cache.computed + cache.skipped == 10 * 3
    assert cache.computed >= 5 * 3 and cache.skipped > 0  # the first 5 steps always run
    assert torch.isfinite(cached).all()
    assert not torch.equal(plain, cached)


def test_step_cache_reuses_the_branch_residual(tiny_root):
    model = load(tiny_root, dtype=torch.float32)
    inputs = random_inputs(model, 1, 9, 64, 96, torch.float32, "cpu")
    cache = StepCache(threshold=10.0, warmup_steps=1)
    with torch.no_grad():
        cache.select("cond", 0)
        first = model(**inputs, step_cache=cache).sample
        cache.select("cond", 1)
        again = model(**inputs, step_cache=cache).sample  # same timestep: reused residual = same output
        plain = model(**inputs).sample
    assert (cache.computed, cache.skipped) == (1, 1)
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(first, plain, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="select"):
        StepCache(0.2).should_compute(torch.ones(3))


def test_two_pass_guidance_keeps_separate_cache_state_per_branch():
    cache = StepCache(threshold=10.0, warmup_steps=0)
    hidden = torch.zeros(2)
    for step in range(3):
        for branch, value in (("cond", 1.0), ("drop_audio", 2.0)):
            cache.select(branch, step)
            if cache.should_compute(torch.full((4,), 1.0 + 0.001 * step)):
                cache.store(hidden, hidden + value)
            else:
                assert torch.equal(cache.reuse(hidden), hidden + value)  # its own branch's residual
    assert cache.computed == 2 and cache.skipped == 4


# --- speed LoRA ---------------------------------------------------------------------------------------------------
def official_merge(model, lora_path):
    """What the official MultiTalk LoRA loader does: W += up @ down, bias += diff_b, norm weight += diff."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    tensors = {k.removeprefix("diffusion_model."): v.float() for k, v in load_file(str(lora_path)).items()}
    deltas = {}
    for key, value in tensors.items():
        if key.endswith(".lora_down.weight"):
            deltas[key.replace(".lora_down.weight", ".weight")] = tensors[key.replace("lora_down", "lora_up")] @ value
        elif key.endswith(".diff_b"):
            deltas[key.replace(".diff_b", ".bias")] = value
        elif key.endswith(".diff"):
            deltas[key.replace(".diff", ".weight")] = value
    count = len(deltas)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in convert_wan_transformer_to_diffusers(deltas).items():
            params[name].add_(delta.reshape(params[name].shape))
    return count


def test_speed_lora_adapter_and_fused_equal_the_official_merge(tiny_root):
    lora = tiny_root / SPEED_LORA_NAME
    adapter = load(tiny_root, dtype=torch.float32)
    inputs = random_inputs(adapter, 2, 9, 64, 96, torch.float32, "cpu")
    with torch.no_grad():
        base = adapter(**inputs).sample
        assert load_speed_lora(adapter, lora) > 0
        off = adapter(**inputs).sample
        set_speed_lora(adapter, True, loaded=True, fused=False)
        on = adapter(**inputs).sample
        reference = load(tiny_root, dtype=torch.float32)
        # 32 linears (12 per block, 8 global) x (weight, bias) + 12 norm weights + 2 norm3 biases
        assert official_merge(reference, lora) == 32 * 2 + 14
        expected = reference(**inputs).sample
        fused = load(tiny_root, dtype=torch.float32)
        load_speed_lora(fused, lora, fuse=True)
        fused_out = fused(**inputs).sample
    assert torch.equal(off, base)  # loaded but switched off: the base model exactly
    assert (on - base).abs().max() > 0.1  # the LoRA does something
    torch.testing.assert_close(on, expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(fused_out, expected, rtol=0, atol=2e-5)


def test_speed_lora_strength_defaults_to_the_publishers_1_everywhere(monkeypatch):
    """One default strength (speed/policy.py says why 1.0 and not the official CLI's 1.2) for the library, the
    CLI and the worker."""
    import inspect

    from multitalk_serve.cli import build_parser
    from multitalk_serve.engine import DEFAULT_SPEED_LORA_SCALE, plan_speed_setup
    from multitalk_serve.engine.speed.lora import lora_deltas
    from multitalk_serve.worker.config import WorkerConfig

    assert DEFAULT_SPEED_LORA_SCALE == 1.0
    for function, name in (
        (MultiTalkPipeline.from_pretrained, "speed_lora_scale"),
        (MultiTalkPipeline.load_speed_lora, "scale"),
        (load_speed_lora, "scale"),
        (lora_deltas, "scale"),
        (plan_speed_setup, "scale"),
    ):
        assert inspect.signature(function).parameters[name].default == DEFAULT_SPEED_LORA_SCALE, function
    argv = ["generate", "--model", "m", "--image", "i", "--audio", "a", "--prompt", "p", "--out", "o.mp4"]
    args = build_parser().parse_args(argv)
    assert args.speed_lora_scale == DEFAULT_SPEED_LORA_SCALE
    monkeypatch.delenv("MULTITALK_SPEED_LORA_SCALE", raising=False)
    assert WorkerConfig(s3=None).speed_lora_scale == DEFAULT_SPEED_LORA_SCALE
    monkeypatch.setenv("MULTITALK_SPEED_LORA_SCALE", "1.2")  # the official CLI's default, if one wants it
    assert WorkerConfig(s3=None).speed_lora_scale == 1.2


def test_speed_lora_bad_files_are_checkpoint_errors(tiny_root, tmp_path):
    model = load(tiny_root, dtype=torch.float32)
    with pytest.raises(CheckpointError, match="no such file"):
        load_speed_lora(model, tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_speed_lora(model, junk)


def test_fast_preset_generates_with_the_speed_lora(tiny_root, image, tmp_path):
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32, speed_lora=tiny_root / SPEED_LORA_NAME)
    result = pipe.generate(
        image,
        [stubs.speech_like(0.7, 1)],
        "hi",
        tmp_path / "fast.mp4",
        options=GenerateOptions.from_preset("fast", **SMALL),
    )
    assert result.frames == 17 and result.options["steps"] == 4 and result.options["speed_lora"]
    assert result.options["shift"] == 2.0 and result.options["text_scale"] == 1.0
    # The same pipeline still serves quality jobs with the adapter off: equal to a pipeline without the LoRA.
    plain = MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32)
    quality = GenerateOptions(steps=2, **SMALL)
    assert torch.equal(frames_of(pipe, image, quality)[0], frames_of(plain, image, quality)[0])


def test_fused_speed_lora_refuses_jobs_without_it(tiny_root, image):
    pipe = MultiTalkPipeline.from_pretrained(
        tiny_root, dtype=torch.float32, speed_lora=tiny_root / SPEED_LORA_NAME, fuse_speed_lora=True
    )
    with pytest.raises(EngineError, match="fused"):
        frames_of(pipe, image, GenerateOptions(steps=1, **SMALL))
    frames, _ = frames_of(pipe, image, GenerateOptions.from_preset("fast", steps=1, **SMALL))
    assert torch.isfinite(frames).all()


def test_speed_lora_on_a_gguf_transformer(tiny_root):
    model = load_transformer(tiny_root / GGUF_NAMES["Q8_0"], tiny_root / MULTITALK_DIR, dtype=torch.float32)
    inputs = random_inputs(model, 1, 9, 64, 96, torch.float32, "cpu")
    with torch.no_grad():
        base = model(**inputs).sample
        load_speed_lora(model, tiny_root / SPEED_LORA_NAME)
        set_speed_lora(model, True, loaded=True, fused=False)
        on = model(**inputs).sample
    assert torch.isfinite(on).all() and (on - base).abs().max() > 0.1


# --- fp8 ------------------------------------------------------------------------------------------------------------
def weight_bytes(model) -> int:
    total = 0
    for p in model.parameters():
        parts = [p.qdata, p.scale] if hasattr(p, "qdata") else [p]
        total += sum(t.numel() * t.element_size() for t in parts)
    return total


def test_fp8_weights_load_block_by_block_and_stay_close(tiny_root):
    bf16 = load(tiny_root, dtype=torch.bfloat16)
    fp8 = load(tiny_root, dtype=torch.bfloat16, fp8=True)
    block_linears = [m for n, m in fp8.named_modules() if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    assert block_linears and all(is_fp8(m) for m in block_linears)
    assert not is_fp8(fp8.proj_out) and not is_fp8(fp8.audio_proj.proj1)
    assert weight_bytes(fp8.blocks) < 0.6 * weight_bytes(bf16.blocks)  # the tiny model is mostly blocks at 14B only
    inputs = random_inputs(bf16, 2, 9, 64, 96, torch.bfloat16, "cpu")
    with torch.no_grad():
        a, b = bf16(**inputs).sample.float(), fp8(**inputs).sample.float()
    assert float((a - b).norm() / a.norm()) < 0.06  # e4m3 with per-row scales: ~3 % here


def test_fp8_plan_generates(tiny_root, image):
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.bfloat16, memory_plan="fp8")
    assert pipe.memory_plan.weights == "fp8" and is_fp8(pipe.transformer.blocks[0].ffn.net[2])
    frames, _ = frames_of(pipe, image, GenerateOptions(steps=2, **SMALL))
    assert torch.isfinite(frames).all()


def test_fp8_of_a_gguf_file_is_refused(tiny_root):
    with pytest.raises(CheckpointError, match="quantized already"):
        load_transformer(tiny_root / GGUF_NAMES["Q8_0"], tiny_root / MULTITALK_DIR, fp8=True)


# --- offload --------------------------------------------------------------------------------------------------------
def test_group_offload_and_text_encoder_offload_change_nothing(tiny_root, tiny_pipeline, image):
    pipe = MultiTalkPipeline.from_pretrained(
        tiny_root, dtype=torch.float32, memory_plan="bf16+t5-offload+group-offload"
    )
    assert pipe.memory_plan.group_offload and pipe.text_encoder.home == torch.device("cpu")
    options = GenerateOptions(steps=2, **SMALL)
    assert torch.equal(frames_of(pipe, image, options)[0], frames_of(tiny_pipeline, image, options)[0])
    model = load(tiny_root, dtype=torch.float32)
    inputs = random_inputs(model, 2, 9, 64, 96, torch.float32, "cpu")
    with torch.no_grad():
        before = model(**inputs).sample
        group_offload(model, torch.device("cpu"))
        after = model(**inputs).sample
    assert torch.equal(before, after)


# --- memory planner -------------------------------------------------------------------------------------------------
def test_memory_planner_picks_the_fastest_plan_that_fits():
    gb = 1024**3
    assert plan_memory(80 * gb).name == "bf16"  # H100 / A100 80 GB: everything resident
    assert plan_memory(48 * gb).name == "fp8"  # L40S / A6000
    assert plan_memory(24 * gb).name == "fp8+t5-offload+group-offload"  # RTX 4090 / L4 / A10
    assert plan_memory(80 * gb, "720p").name == "bf16"
    assert plan_memory(64 * gb, "720p").name == "bf16+t5-offload"
    with pytest.raises(EngineError, match="needs about"):
        plan_memory(12 * gb)
    q4 = 15_200_000_000 - 2_487_168_000 * 2
    assert plan_memory(24 * gb, weights="gguf", gguf_bytes=q4).name == "gguf+t5-offload+group-offload"
    assert transformer_bytes("bf16") / 1e9 == pytest.approx(37.76, abs=0.01)
    assert transformer_bytes("fp8") / 1e9 == pytest.approx(19.2, abs=0.05)
    assert estimate_gb("bf16", False, False, "480p") > estimate_gb("fp8", True, False, "480p")
    assert parse_plan("fp8+t5-offload") == MemoryPlan("fp8", True, False, parse_plan("fp8+t5-offload").gpu_gb)
    with pytest.raises(EngineError, match="expected"):
        parse_plan("int3+magic")


def test_a_plan_must_match_the_transformer_file(tiny_root):
    with pytest.raises(EngineError, match="does not match"):
        MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32, memory_plan="gguf")


# --- attention backends ---------------------------------------------------------------------------------------------
def test_attention_backend_choice_falls_back_to_sdpa(tiny_root):
    model = load(tiny_root, dtype=torch.float32)
    assert installed_backends(torch.device("cpu")) == [NATIVE]
    name, skipped = choose_attention_backend(model, torch.device("cpu"), torch.float32, "auto")
    assert name == NATIVE and skipped == []
    name, skipped = choose_attention_backend(model, torch.device("cpu"), torch.float32, "flash")
    assert name == NATIVE and "flash" in skipped[0]


def test_a_failing_kernel_mid_job_falls_back_and_the_job_completes(tiny_root, tiny_pipeline, image, monkeypatch):
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32)
    options = GenerateOptions(steps=2, **SMALL)
    expected, _ = frames_of(tiny_pipeline, image, options)
    real = attention_module.dispatch_attention_fn

    def flaky(*args, backend=None, **kwargs):
        if backend is not None and str(getattr(backend, "value", backend)) == "sage":
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(attention_module, "dispatch_attention_fn", flaky)
    for module in pipe.transformer.modules():  # as if SageAttention had been chosen at start
        if isinstance(getattr(module, "processor", None), OUR_PROCESSORS):  # the calls that go through `flaky`
            module.processor._attention_backend = "sage"
    pipe.attention_backend = "sage"
    frames, job = frames_of(pipe, image, options)
    assert pipe.attention_backend == NATIVE
    assert any("switched to PyTorch SDPA" in note for note in job.notes)
    assert torch.equal(frames, expected)


def test_kernel_fallback_keeps_the_step_cache_decisions(tiny_root, tiny_pipeline, image, monkeypatch):
    """A kernel failing in a forward the cache decided to compute: the retry must decide the same (the failed
    attempt's bookkeeping is undone), or it would reuse a residual instead of computing."""
    options = GenerateOptions(steps=7, cache_threshold=0.2, **SMALL)
    expected, reference = frames_of(tiny_pipeline, image, options)
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32)
    real, calls = attention_module.dispatch_attention_fn, []

    def sage_fails_once_after_warm_up(*args, backend=None, **kwargs):
        if str(getattr(backend, "value", backend)) == "sage":  # a working "Sage" (computed as SDPA) ...
            calls.append(1)
            if len(calls) == 4 * 16 + 1:  # ... that fails in forward 17 (step 6: after the 5 warm-up steps)
                raise RuntimeError("CUDA error: an illegal instruction was encountered")
            backend = None
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(attention_module, "dispatch_attention_fn", sage_fails_once_after_warm_up)
    for module in pipe.transformer.modules():
        if isinstance(getattr(module, "processor", None), OUR_PROCESSORS):  # the calls that go through `flaky`
            module.processor._attention_backend = "sage"
    pipe.attention_backend = "sage"
    frames, job = frames_of(pipe, image, options)
    assert len(calls) == 4 * 16 + 1 and pipe.attention_backend == NATIVE
    assert job.step_cache.computed == reference.step_cache.computed == 7 * 3
    assert torch.equal(frames, expected)


def test_an_error_sdpa_has_too_is_raised_not_blamed_on_the_kernel(tiny_root, image, monkeypatch):
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32)

    def always(*args, **kwargs):
        raise RuntimeError("something else is wrong")

    monkeypatch.setattr(attention_module, "dispatch_attention_fn", always)
    pipe.attention_backend = "sage"
    with pytest.raises(RuntimeError, match="something else"):
        frames_of(pipe, image, GenerateOptions(steps=1, **SMALL))


# --- regional compile -----------------------------------------------------------------------------------------------
def test_regional_compile_gives_the_same_output(tiny_root):
    model = load(tiny_root, dtype=torch.float32)
    inputs = random_inputs(model, 2, 9, 64, 96, torch.float32, "cpu")
    with torch.no_grad():
        eager = model(**inputs).sample
        model.compile_repeated_blocks(backend="aot_eager", dynamic=False)
        compiled = model(**inputs).sample
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert np.isfinite(compiled.numpy()).all()


def test_fp8_with_a_speed_lora_merges_it_before_quantising(tiny_root, image):
    from multitalk_serve.engine.speed.lora import lora_deltas

    lora = tiny_root / SPEED_LORA_NAME
    fp8 = load(tiny_root, dtype=torch.bfloat16, fp8=True, fused_lora=lora_deltas(lora))
    assert is_fp8(fp8.blocks[0].attn1.to_q)
    merged = load(tiny_root, dtype=torch.float32)
    official_merge(merged, lora)
    base = load(tiny_root, dtype=torch.float32)
    inputs = random_inputs(merged, 1, 9, 64, 96, torch.float32, "cpu")
    with torch.no_grad():
        expected, unmerged = merged(**inputs).sample, base(**inputs).sample
        got = fp8(**{k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}).sample.float()

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    assert rel(got, expected) < 0.06 < rel(unmerged, expected)  # the LoRA is in, up to fp8 rounding
    # Not asked to fuse: the pipeline leaves the LoRA out and says why.
    pipe = MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.bfloat16, memory_plan="fp8", speed_lora=lora)
    assert pipe.speed_lora is None and "merged into the weights at load" in pipe.notes[0]
    fused = MultiTalkPipeline.from_pretrained(
        tiny_root, dtype=torch.bfloat16, memory_plan="fp8", speed_lora=lora, fuse_speed_lora=True
    )
    assert fused.speed_lora_fused
    frames, _ = frames_of(fused, image, GenerateOptions.from_preset("fast", steps=1, **SMALL))
    assert torch.isfinite(frames).all()
