"""Context parallelism (one video on N processes): the transformer on 2 and 4 gloo ranks equals one process.

The ranks are forked (CPU only; they share this process's imported modules, saving ~10 s of imports per rank on a
small machine); one test spawns fresh interpreters, the launcher's default and the only choice with GPUs. Every run
is bounded by the launcher's timeout: a hang fails the test instead of blocking CI.

The pipeline test runs the tiny model itself (2 heads, MultiTalk and InfiniteTalk adapters) on 2 ranks: every rank runs the whole job, the transformer's
forward is split (``engine/parallel/pipeline.py``).

The transformer tests: the tiny model has 2 heads; Ulysses splits heads across ranks, so these tests use the tiny dims with 4 heads (64
wide): 2 and 4 ranks divide them. The video is 9 frames at 64 x 96 pixels: 3 latent frames of 24 tokens, 72
tokens. On 2 ranks a shard ends inside latent frame 1; on 4 ranks latent frame 0 (the reference keys of the
two-speaker map) spans ranks 0 and 1, and every shard starts or ends inside a frame. The "anything" case has 45
tokens (3 frames of 15), which do not split evenly. The TeaCache case runs two forwards, the second skipping the
blocks and adding each rank's stored residual.
"""

from __future__ import annotations

import time

import pytest
import torch

import pipeline_stubs as stubs
from multitalk_serve.engine import GenerateOptions
from multitalk_serve.engine.parallel import RankFailure, run_on_ranks
from multitalk_serve.engine.parallel.launch import group_check
from multitalk_serve.parallel_check import Case, generate_frames, rank_forward, rank_generate, reference
from multitalk_serve.tiny import TINY_DIMS

DIMS = TINY_DIMS.replace(num_heads=4)
CASES = [
    Case(speakers=1, adapter="multitalk"),
    Case(speakers=2, adapter="multitalk"),
    Case(speakers=1, adapter="infinitetalk-single"),
    Case(speakers=2, adapter="infinitetalk-multi"),
    Case(speakers=2, adapter="multitalk", height=48, width=80, anything=True),
    Case(speakers=2, adapter="multitalk", step_cache=True),  # TeaCache: each rank reuses its own residual
]
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def expected() -> list[torch.Tensor]:
    return reference(DIMS, CASES)


def shard_sizes(total: int, world: int) -> list[int]:
    return [t.shape[0] for t in torch.arange(total).tensor_split(world)]


@pytest.mark.parametrize("world", [2, 4])
def test_context_parallel_equals_one_process(world, expected):
    assert DIMS.num_heads % world == 0
    results = run_on_ranks(rank_forward, world, (DIMS, CASES), timeout_s=TIMEOUT_S, start_method="fork")
    worst = 0.0
    for rank, result in enumerate(results):
        # each rank's blocks saw its own shard of the tokens, not the whole sequence
        tokens = [shard_sizes(45 if case.anything else 72, world)[rank] for case in CASES]
        assert result["block_tokens"] == tokens
        for case, got, want in zip(CASES, result["outputs"], expected, strict=True):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"rank {rank} of {world}, {case}")
            worst = max(worst, (got - want).abs().max().item())
    print(f"{world} ranks: max |difference| to one process {worst:.3g}")


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_rank_failing_mid_forward_fails_every_rank_without_hanging(how):
    start = time.monotonic()
    with pytest.raises(RankFailure) as failure:
        run_on_ranks(rank_forward, 2, (DIMS, CASES[1:2], (1, 1, how)), timeout_s=60, start_method="fork")
    elapsed = time.monotonic() - start
    errors = failure.value.errors
    assert failure.value.timed_out == []  # nobody hung until the deadline: the peer's failure reached rank 0
    assert set(errors) == {0, 1}
    if how == "raise":
        assert "injected failure in rank 1, block 1" in errors[1]
    else:
        assert "exited with code -9" in errors[1]
    assert "RuntimeError" in errors[0]  # rank 0 was waiting in a collective with rank 1
    assert elapsed < 30


def test_spawned_ranks_form_a_group():
    assert run_on_ranks(group_check, 2, timeout_s=TIMEOUT_S) == [3, 3]


def test_a_job_on_two_ranks_gives_the_same_frames_as_one_process(tiny_root, tmp_path):
    from PIL import Image

    from multitalk_serve.engine import MultiTalkPipeline

    pipe = MultiTalkPipeline.from_pretrained(
        tiny_root, dtype=torch.float32, adapters=["multitalk", "infinitetalk-single"]
    )
    image = tmp_path / "ref.png"
    Image.fromarray(stubs.scenario_image()).save(image)
    # streaming over two 21-frame windows (5 motion frames) at 64 x 96 (96 tokens a window: 48 a rank); one speaker
    # with InfiniteTalk, two with MultiTalk (the ranks switch adapters between the jobs as one process does)
    small = {"size": (64, 96), "steps": 2, "seed": 11, "frames_per_clip": 21, "motion_frames": 5}
    two = [stubs.speech_like(0.8, 1), stubs.speech_like(0.8, 2)]
    jobs = [
        (image, [stubs.speech_like(1.2, 1)], GenerateOptions(**small, model="infinitetalk")),
        (image, two, GenerateOptions(**small, model="multitalk", audio_type="add")),
    ]
    expected = [generate_frames(pipe, *job) for job in jobs]
    assert [e.shape[1] for e in expected] == [30, 40]  # two windows each
    pipe.use_adapter("multitalk")  # the ranks start from the state the pipeline had before the reference run
    results = run_on_ranks(rank_generate, 2, (pipe, jobs), timeout_s=TIMEOUT_S, start_method="fork")
    for rank, frames in enumerate(results):
        for got, want in zip(frames, expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"rank {rank}")
    assert pipe.transformer._parallel_config is None  # the ranks' copies were split, not the caller's
