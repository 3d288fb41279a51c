"""The GPU suite (bench/gpu_suite.py) stays runnable: its --smoke mode runs every item's code on the CPU, the time
budget skips what would not fit and says so, results are on disk after every item, a failing item does not stop
the run. The full run needs a CUDA GPU (docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "bench" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_suite", None)


def read(out: Path) -> dict:
    return json.loads((out / "gpu_suite.json").read_text())


# CUDA-only or not applicable on a CPU without an official checkout: skipped with a reason, never silently
SMOKE_SKIPS = {
    "forward.bf16.480p._native_flash": "needs CUDA",
    "forward.bf16.480p._native_cudnn": "needs CUDA",
    "forward.bf16.480p._native_efficient": "needs CUDA",
    "forward.bf16.720p.native": "same code as the 480p item",
    "forward.fp8.720p.native": "same code as the 480p item",
    "official.forward.480p": "no --official checkout",
}


@pytest.mark.slow
def test_smoke_runs_every_item_on_cpu(gpu_suite, tmp_path):
    assert gpu_suite.main(["--smoke", "--out", str(tmp_path)]) == 0
    report = read(tmp_path)
    assert report["scale"] == "smoke" and report["complete"]
    items = {r["item"]: r for r in report["items"]}
    for name, reason in SMOKE_SKIPS.items():
        assert items[name]["status"] == "skipped" and reason in items[name]["reason"], items[name]
    ran = {name: r for name, r in items.items() if name not in SMOKE_SKIPS}
    assert {name: r["status"] for name, r in ran.items()} == dict.fromkeys(ran, "ok")
    expected = {
        "environment",
        "encoders.build",
        "t5.encode",
        "clip.encode",
        "wav2vec2.encode",
        "vae.decode",
        "forward.bf16.480p.native",
        "forward.bf16.480p._native_math",
        "forward.fp8.480p.native",
        "clip.fast",
        "infinitetalk.forward.480p",
        "flashtalk.forward",
        "flashtalk.window",
        *(f"plan.{p}" for p in gpu_suite.PLANS if p != "bf16"),
    }
    assert set(ran) == expected
    assert [c["speakers"] for c in items["infinitetalk.forward.480p"]["cases"]] == [1, 2]
    assert [c["speakers"] for c in items["flashtalk.forward"]["cases"]] == [1]
    realtime = items["flashtalk.window"]  # smoke: 5-frame windows with 1 motion frame, 4 new frames each
    assert (realtime["windows"], realtime["frames"], realtime["forwards"]) == (2, 8, 8)  # 4 steps, one pass each
    assert 0 < realtime["first_segment_s"] < realtime["total_s"]

    for name in ("forward.bf16.480p.native", "forward.fp8.480p.native", "forward.bf16.480p._native_math"):
        cases = items[name]["cases"]
        assert [c["speakers"] for c in cases] == [1, 2]
        assert all(c["s_per_forward"] > 0 and c["peak_gb"] is None for c in cases)  # no device memory on a CPU
    assert "weight-only" in items["forward.fp8.480p.native"]["note"]

    clip = items["clip.fast"]
    assert clip["forwards"] == 2 and clip["frames"] == 5 and clip["lora_rank"] == 4  # fast: 2-pass guidance
    assert 0 < clip["share_outside_transformer"] < 1
    assert clip["transformer_s"] == pytest.approx(sum(clip["forward_runs"]), abs=1e-2)

    from multitalk_serve.engine.speed.memory import parse_plan

    plans = {r["plan"]: r for r in report["items"] if r.get("plan")}
    assert list(plans) == list(gpu_suite.PLANS)
    for name, row in plans.items():
        assert row["estimate_gb"] == parse_plan(name, "480p").gpu_gb
        assert name == "bf16" or (row["vs_bf16"] > 0 and row["vs_bf16_forward"] > 0)
    assert any("without CUDA streams" in n for n in plans[gpu_suite.PLAN_24GB]["notes"])

    markdown = (tmp_path / "gpu_suite.md").read_text()
    headings = ("Transformer forward", "Encoders and VAE", "fast preset", "realtime preset", "Memory plans", "Targets")
    for heading in (*headings, "Skipped"):
        assert f"## {heading}" in markdown


def test_budget_skips_what_would_not_fit_and_says_so(gpu_suite, tmp_path):
    assert gpu_suite.main(["--smoke", "--budget-s", "0", "--out", str(tmp_path)]) == 0
    items = read(tmp_path)["items"]
    over = [r for r in items if r["estimate_s"] > 0]
    assert len(over) >= 10
    for row in over:
        assert row["status"] == "skipped" and "of --budget-s left" in row["reason"], row
    assert next(r for r in items if r["item"] == "environment")["status"] == "ok"


def test_results_are_on_disk_after_each_item_and_failures_do_not_stop_the_run(gpu_suite, tmp_path):
    import argparse

    args = argparse.Namespace(budget_s=60.0, out=str(tmp_path), only=None, official=None)
    suite = gpu_suite.Suite(args, gpu_suite.smoke_scale(), torch.device("cpu"))

    def broken(_suite):
        raise RuntimeError("kernel exploded")

    def killed(_suite):
        on_disk = [r["item"] for r in read(tmp_path)["items"]]
        assert on_disk == ["first", "broken"]  # written before this item started
        raise KeyboardInterrupt  # a run killed mid-item

    items = [
        gpu_suite.Item("first", lambda s: {"value": 1}, lambda s: 0.0, "ok"),
        gpu_suite.Item("broken", broken, lambda s: 0.0, "fails"),
        gpu_suite.Item("killed", killed, lambda s: 0.0, "killed"),
    ]
    with pytest.raises(KeyboardInterrupt):
        gpu_suite.run_items(suite, items)
    report = read(tmp_path)
    assert [(r["item"], r["status"]) for r in report["items"]] == [("first", "ok"), ("broken", "failed")]
    assert report["items"][1]["error"] == "RuntimeError: kernel exploded"
    assert not report["complete"]
    assert "incomplete" in (tmp_path / "gpu_suite.md").read_text()


def test_estimates_scale_the_measured_forward_by_flops(gpu_suite):
    import argparse

    from bench_forward import forward_flops

    args = argparse.Namespace(budget_s=400.0, out="unused", only=None, official=None)
    suite = gpu_suite.Suite(args, gpu_suite.full_scale(), torch.device("cpu"))
    dims = suite.scale.dims
    prior = suite.fwd_estimate("480p")
    assert prior == pytest.approx(forward_flops(dims, 81, 480, 832, 1) / 0.3e12)
    suite.speed["fwd_480p_s"] = 2.5
    ratio = forward_flops(dims, 81, 720, 1280, 2) / forward_flops(dims, 81, 480, 832, 1)
    assert suite.fwd_estimate("720p", 2) == pytest.approx(2.5 * ratio)
    assert 3 < ratio < 5  # 75 600 tokens against 32 760: attention grows with the square


def test_full_scale_encoders_have_the_published_shapes(gpu_suite):
    configs = gpu_suite.encoder_configs(gpu_suite.full_scale())
    t5, clip, vae = configs["text_encoder"], configs["image_encoder"], configs["vae"]
    assert (t5["vocab_size"], t5["d_model"], t5["d_ff"], t5["num_layers"], t5["num_heads"]) == (
        256384,
        4096,
        10240,
        24,
        64,
    )
    assert (clip["hidden_size"], clip["num_hidden_layers"], clip["intermediate_size"]) == (1280, 32, 5120)
    assert (vae["base_dim"], vae["dim_mult"], vae["z_dim"]) == (96, [1, 2, 4, 4], 16)
    w2v = gpu_suite.wav2vec2_config(gpu_suite.full_scale())
    assert (w2v.hidden_size, w2v.num_hidden_layers, w2v.conv_dim[-1]) == (768, 12, 512)


def test_random_transformer_quantises_and_places_block_by_block(gpu_suite):
    from multitalk_serve.engine.speed.memory import fp8_config, is_fp8
    from multitalk_serve.tiny import TINY_DIMS

    cpu = torch.device("cpu")
    model = gpu_suite.random_transformer(TINY_DIMS, torch.bfloat16, cpu, fp8_config=fp8_config(cpu))
    assert not any(p.is_meta for p in model.parameters())
    linears = [m for m in model.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(is_fp8(m) for m in linears)
    assert model.patch_embedding.weight.dtype == torch.bfloat16 and not is_fp8(model.proj_out)


def test_one_transformer_at_a_time_pipelines_included(gpu_suite, tmp_path):
    """A plan's measured peak must not count another transformer: building the next one frees the last, also when
    a pipeline still holds it."""
    import argparse
    import gc
    import weakref

    args = argparse.Namespace(budget_s=60.0, out=str(tmp_path), only=None, official=None)
    suite = gpu_suite.Suite(args, gpu_suite.smoke_scale(), torch.device("cpu"))
    bf16 = weakref.ref(suite.transformer("bf16"))
    suite.pipes["bf16"] = argparse.Namespace(transformer=bf16())
    fp8 = suite.transformer("fp8")
    gc.collect()
    assert bf16() is None and suite.pipes == {} and list(suite.transformers) == ["fp8"]
    assert suite.transformer("fp8") is fp8
