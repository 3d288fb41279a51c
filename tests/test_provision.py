"""``download`` / ``verify`` against a fake Hugging Face Hub on loopback serving the tiny models in the published
repositories' layouts: every profile, idempotent reruns, resume after an interrupted download, corrupted files
refetched, out-of-space, HF_TOKEN, RunPod cached models used in place, offline mode, and the CLI."""

from __future__ import annotations

import errno
import hashlib
import json
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from PIL import Image

import pipeline_stubs as stubs
from fake_hub import FakeHub
from hf_cache import fake_hf_cache
from multitalk_serve.cli import main as cli
from multitalk_serve.cli import profiles_table
from multitalk_serve.engine.loading.inventory import inspect_model_dir
from multitalk_serve.engine.loading.weights import read_safetensors_header
from multitalk_serve.engine.pipeline.generate import GenerateOptions, MultiTalkPipeline
from multitalk_serve.provision import download as dl
from multitalk_serve.provision.download import Downloader, DownloadError
from multitalk_serve.provision.profiles import (
    DIFFUSERS_REPO,
    GGUF_REPO,
    INFINITETALK_REPO,
    MULTITALK_REPO,
    ORIGINAL_REPO,
    PROFILES,
    SPEED_LORA_FILE,
    SPEED_LORA_REPO,
    WAV2VEC_REPO,
    Fetch,
    Profile,
    profile,
    with_speed_lora,
)
from multitalk_serve.provision.verify import verify_model_dir
from multitalk_serve.tiny import SPEED_LORA_NAME

PROVISIONING_DOC = Path(__file__).parents[1] / "docs" / "provisioning.md"


def tree(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def publish(hub: FakeHub, tiny: Path, gated: bool = False) -> None:
    """The tiny models in the published repositories, with a few files the profiles must not fetch."""
    hub.add_repo(DIFFUSERS_REPO, tree(tiny / "Wan2.1-I2V-14B-480P-Diffusers") | {"README.md": b"# Wan2.1\n"})
    hub.add_repo(
        ORIGINAL_REPO,
        tree(tiny / "Wan2.1-I2V-14B-480P") | {"xlm-roberta-large/tokenizer.json": b"{}", "examples/i2v.png": b"png"},
    )
    hub.add_repo(
        MULTITALK_REPO,
        tree(tiny / "MeiGen-MultiTalk") | {"quant_models/t5_int8.safetensors": b"not fetched"},
        gated=gated,
    )
    w2v = tiny / "chinese-wav2vec2-base"
    configs = {"config.json": w2v / "config.json", "preprocessor_config.json": w2v / "preprocessor_config.json"}
    hub.add_repo(WAV2VEC_REPO, configs | {"pytorch_model.bin": b"the main branch's pickle (not fetched)"})
    hub.add_repo(WAV2VEC_REPO, configs | {"model.safetensors": w2v / "model.safetensors"}, revision="refs/pr/1")
    hub.add_repo(
        INFINITETALK_REPO,
        tree(tiny / "InfiniteTalk")
        | {"quant_models/infinitetalk_single_fp8.safetensors": b"not fetched", "README.md": b"# InfiniteTalk\n"},
    )
    hub.add_repo(GGUF_REPO, {p.name: p for p in tiny.glob("*.gguf")})
    hub.add_repo(SPEED_LORA_REPO, {SPEED_LORA_FILE: tiny / SPEED_LORA_NAME, "Other/unrelated.safetensors": b"no"})


@pytest.fixture(scope="module")
def hub(tiny_root):
    with FakeHub() as hub:
        publish(hub, tiny_root)
        yield hub
        assert not hub.errors, hub.errors


@pytest.fixture(autouse=True)
def clean(hub, monkeypatch):
    hub.clear_faults()
    hub.clear_requests()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)


def run(dest: Path, profile: str = "official", logs: list | None = None, **kwargs):
    return Downloader(
        dest, PROFILES[profile], cache_dirs=[], log=(logs if logs is not None else []).append, **kwargs
    ).run()


def content_gets(hub: FakeHub) -> list:
    return [r for r in hub.requests if r.content and r.method == "GET"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_official_profile_downloads_the_original_layout_as_published(hub, tiny_root, tmp_path):
    dest = tmp_path / "models"
    report = run(dest)
    assert report.files == report.fetched == 15 and report.converted == 0 and not report.failures
    original = dest / "Wan2.1-I2V-14B-480P"
    for name, path in tree(tiny_root / "Wan2.1-I2V-14B-480P").items():
        assert sha256(original / name) == sha256(path), name
    assert not (original / "xlm-roberta-large").exists() and not (dest / "MeiGen-MultiTalk/quant_models").exists()
    manifest = json.loads((dest / ".multitalk/manifest.json").read_text())
    assert manifest["profile"] == "official"
    assert manifest["components"]["text_encoder"] == "Wan2.1-I2V-14B-480P/models_t5_umt5-xxl-enc-bf16.pth"
    assert manifest["components"]["wav2vec"] == "chinese-wav2vec2-base"
    assert not any((dest / ".multitalk/partial").iterdir())
    result = verify_model_dir(dest, cache_dirs=[])
    assert result.ok, result.all_problems
    assert {c.name: c.layout for c in result.inventory.components}["vae"] == "original"


def test_bf16_profile_converts_on_arrival_and_generates_like_the_float32_original(hub, tiny_root, tmp_path):
    dest = tmp_path / "models"
    logs: list[str] = []
    report = run(dest, "bf16", logs)
    assert report.converted == 6  # 2 transformer shards, 2 text-encoder shards, CLIP, multitalk.safetensors
    shard = dest / "Wan2.1-I2V-14B-480P-Diffusers/transformer/diffusion_pytorch_model-00001-of-00002.safetensors"
    ours = read_safetensors_header(shard)
    published = read_safetensors_header(
        tiny_root / "Wan2.1-I2V-14B-480P-Diffusers/transformer/diffusion_pytorch_model-00001-of-00002.safetensors"
    )
    from multitalk_serve.engine.loading.transformer import keeps_fp32

    kept = {k for k in ours if keeps_fp32(k)}
    assert kept and {ours[k].dtype for k in kept} == {torch.float32}  # norms, modulation: float32 at run time too
    assert {r.dtype for k, r in ours.items() if k not in kept} == {torch.bfloat16}
    for key in published:
        expected = published[key].read()
        assert torch.equal(ours[key].read(), expected if key in kept else expected.to(torch.bfloat16))
    assert any("stored it as bfloat16" in line for line in logs)
    clip = dest / "Wan2.1-I2V-14B-480P-Diffusers/image_encoder/model.safetensors"
    halves = {r.dtype for r in read_safetensors_header(clip).values()} - {torch.float32}
    assert halves == {torch.float16}  # the dtype the CLIP runs in when the pipeline runs in bf16, as the official
    assert any("image_encoder/model.safetensors" in line and "stored it as float16" in line for line in logs)
    vae = dest / "Wan2.1-I2V-14B-480P-Diffusers/vae/diffusion_pytorch_model.safetensors"
    assert {r.dtype for r in read_safetensors_header(vae).values()} == {torch.float32}  # the VAE runs in fp32
    assert verify_model_dir(dest, hashes=True, cache_dirs=[]).ok

    # Converting on arrival is what casting at load time does: the same video, frame for frame.
    image = tmp_path / "ref.png"
    Image.fromarray(stubs.scenario_image()).save(image)
    options = GenerateOptions(size=(64, 96), steps=2, seed=5, mode="clip")
    frames = []
    for root in (tiny_root, dest):
        pipe = MultiTalkPipeline.from_pretrained(root, dtype=torch.bfloat16)
        job = pipe.prepare(image, [stubs.speech_like(0.4, 1)], "a woman talks", options=options)
        frames.append(torch.cat(list(pipe.frames(job)), dim=1))
    assert torch.equal(*frames)


@pytest.mark.parametrize(("profile", "gguf"), [("gguf-q8", "Q8_0"), ("gguf-q4", "Q4_K_M")])
def test_gguf_profiles(hub, tmp_path, profile, gguf):
    dest = tmp_path / "models"
    run(dest, profile)
    assert sorted(p.name for p in dest.glob("*.gguf")) == [f"wan2.1-i2v-14b-480p-{gguf}.gguf"]
    assert not (dest / "Wan2.1-I2V-14B-480P-Diffusers/transformer").exists()
    inventory = inspect_model_dir(dest, cache_dirs=[])
    assert inventory.ok and {c.name: c.layout for c in inventory.components}["transformer"] == "gguf"


def test_speed_lora_comes_with_any_profile_and_the_worker_finds_it(hub, tmp_path):
    from multitalk_serve.worker.config import WorkerConfig

    dest = tmp_path / "models"
    Downloader(dest, with_speed_lora(PROFILES["gguf-q4"]), cache_dirs=[], log=[].append).run()
    assert (dest / SPEED_LORA_FILE).is_file() and not (dest / "Other").exists()
    assert inspect_model_dir(dest, cache_dirs=[]).ok
    assert WorkerConfig(model_path=dest, s3=None).speed_lora_path() == dest / SPEED_LORA_FILE


def test_rerun_fetches_nothing(hub, tmp_path):
    dest = tmp_path / "models"
    run(dest, "bf16")
    hub.clear_requests()
    report = run(dest, "bf16")
    assert report.fetched == 0 and report.kept == report.files
    assert content_gets(hub) == [] and all(r.path.startswith("/api/models/") for r in hub.requests)


def test_corrupted_files_are_refetched(hub, tmp_path):
    dest = tmp_path / "models"
    run(dest, "bf16")
    plain = dest / "MeiGen-MultiTalk/diffusion_pytorch_model.safetensors.index.json"  # as published
    converted = dest / "Wan2.1-I2V-14B-480P-Diffusers/text_encoder/model-00002-of-00002.safetensors"  # bf16
    for path in (plain, converted):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    assert not verify_model_dir(dest, hashes=True, cache_dirs=[]).ok
    hub.clear_requests()
    logs: list[str] = []
    report = run(dest, "bf16", logs)
    assert report.fetched == 2 and sorted(r.file for r in content_gets(hub)) == [
        "diffusion_pytorch_model.safetensors.index.json",
        "text_encoder/model-00002-of-00002.safetensors",
    ]
    assert sum("does not match the Hub" in line for line in logs) == 2
    assert sha256(plain) == hub.blob(MULTITALK_REPO, "diffusion_pytorch_model.safetensors.index.json").sha256
    assert verify_model_dir(dest, hashes=True, cache_dirs=[]).ok


def test_resume_after_an_interrupted_download(hub, tmp_path, monkeypatch):
    """The connection drops half-way, the retry gets a 503: the run fails but keeps the bytes; the next run asks
    only for the rest (Range) and the file verifies."""
    from huggingface_hub import file_download

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)
    name = "diffusion_pytorch_model-00001-of-00003.safetensors"
    size = hub.blob(ORIGINAL_REPO, name).size
    hub.truncate(name, after_bytes=size // 2, times=1, repo_id=ORIGINAL_REPO)

    def sleep(seconds):  # http_get waits 1 s before resuming in-process: the server goes down meanwhile
        hub.fail(name, status=503, times=1, repo_id=ORIGINAL_REPO)

    monkeypatch.setattr(file_download.time, "sleep", sleep)
    dest = tmp_path / "models"
    with pytest.raises(DownloadError) as info:
        run(dest)
    assert info.value.code == "E_NETWORK" and name in str(info.value) and "rerun to resume" in str(info.value)
    partial = next((dest / ".multitalk/partial").glob("*.part"))
    kept = partial.stat().st_size
    assert 0 < kept <= size // 2
    assert not (dest / "Wan2.1-I2V-14B-480P" / name).exists()

    hub.clear_requests()
    logs: list[str] = []
    report = run(dest, logs=logs)
    assert report.fetched == 1
    (get,) = [r for r in content_gets(hub) if r.file == name]
    assert get.range == f"bytes={kept}-" and get.body_bytes == size - kept
    assert sha256(dest / "Wan2.1-I2V-14B-480P" / name) == hub.blob(ORIGINAL_REPO, name).sha256
    assert any(line.startswith(f"resuming Wan2.1-I2V-14B-480P/{name}") for line in logs)


def test_a_file_that_never_verifies_fails_cleanly(hub, tmp_path):
    hub.corrupt("multitalk.safetensors", times=None, repo_id=MULTITALK_REPO)
    dest = tmp_path / "models"
    with pytest.raises(DownloadError) as info:
        run(dest)
    assert info.value.code == "E_VERIFY"
    assert not (dest / "MeiGen-MultiTalk/multitalk.safetensors").exists()
    assert len([r for r in content_gets(hub) if r.file == "multitalk.safetensors"]) == 2


def test_out_of_space_before_anything_is_fetched(hub, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2_000_000, 2_000_000))
    dest = tmp_path / "models"
    with pytest.raises(DownloadError) as info:
        run(dest, "bf16")
    assert info.value.code == "E_SPACE"
    assert "has 0.0 GB free; this download needs" in info.value.message
    assert content_gets(hub) == []
    assert sorted(p.name for p in dest.iterdir()) == [".multitalk"]


def test_disk_full_while_writing_keeps_the_partial_file(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)
    original_write = dl._HashingFile.write
    calls = {"n": 0}

    def write(self, data):
        if self.path.name.startswith(hub.blob(ORIGINAL_REPO, "Wan2.1_VAE.pth").sha256):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return original_write(self, data)

    monkeypatch.setattr(dl._HashingFile, "write", write)
    dest = tmp_path / "models"
    with pytest.raises(DownloadError) as info:
        run(dest)
    assert info.value.code == "E_SPACE" and "disk is full" in info.value.message
    monkeypatch.setattr(dl._HashingFile, "write", original_write)
    hub.clear_requests()
    run(dest)
    (get,) = [r for r in content_gets(hub) if r.file == "Wan2.1_VAE.pth"]
    assert get.range == f"bytes={2 * (64 << 10)}-"


def test_hf_token_is_honoured(tiny_root, tmp_path, monkeypatch):
    with FakeHub(tokens={"hf_secret"}) as gated_hub:
        publish(gated_hub, tiny_root, gated=True)
        monkeypatch.setenv("HF_ENDPOINT", gated_hub.url)
        with pytest.raises(DownloadError) as info:
            run(tmp_path / "a")
        assert info.value.code == "E_AUTH" and "HF_TOKEN" in info.value.message
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        gated_hub.clear_requests()
        logs: list[str] = []
        run(tmp_path / "b", logs=logs)
        assert logs and not any("hf_secret" in line for line in logs)
        hub_calls = [r for r in gated_hub.requests if r.server == "hub"]
        assert hub_calls and all(r.authorization == "Bearer hf_secret" for r in hub_calls)
        assert all(r.authorization is None for r in gated_hub.requests if r.server == "cdn"), "token sent to the CDN"


def test_runpod_cached_model_is_used_in_place(hub, tiny_root, tmp_path):
    cache = tmp_path / "runpod-volume/huggingface-cache/hub"
    snapshot = fake_hf_cache(cache, ORIGINAL_REPO, tiny_root / "Wan2.1-I2V-14B-480P")
    dest = tmp_path / "runpod-volume/models"
    logs: list[str] = []
    report = Downloader(dest, PROFILES["official"], cache_dirs=[cache], log=logs.append).run()
    assert report.from_cache == {ORIGINAL_REPO: str(snapshot)}
    assert {r.repo_id for r in content_gets(hub)} == {MULTITALK_REPO, WAV2VEC_REPO}
    assert not (dest / "Wan2.1-I2V-14B-480P").exists()
    manifest = json.loads((dest / ".multitalk/manifest.json").read_text())
    assert manifest["components"]["transformer"] == str(snapshot)
    assert manifest["components"]["vae"] == str(snapshot / "Wan2.1_VAE.pth")
    assert verify_model_dir(dest, cache_dirs=[]).ok  # the manifest points at the cache: no cache search needed
    MultiTalkPipeline.from_pretrained(dest, dtype=torch.float32)


def test_dry_run_lists_without_writing(hub, tmp_path):
    dest = tmp_path / "models"
    report = Downloader(dest, PROFILES["gguf-q4"], cache_dirs=[], log=[].append).run(dry_run=True)
    planned = dl.plan(PROFILES["gguf-q4"], endpoint=hub.url)
    assert report.dry_run and len(report.to_fetch) == report.files == len(planned) == 19
    assert report.bytes_to_fetch == sum(r.size for r in planned)
    assert "wan2.1-i2v-14b-480p-Q4_K_M.gguf" in report.to_fetch
    assert content_gets(hub) == [] and not (dest / "wan2.1-i2v-14b-480p-Q4_K_M.gguf").exists()


def test_offline_mode_checks_the_manifest(hub, tmp_path, monkeypatch):
    dest = tmp_path / "models"
    run(dest)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.clear_requests()
    report = run(dest)
    assert report.kept == report.files == 15 and hub.requests == []
    (dest / "Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth").unlink()
    with pytest.raises(DownloadError) as info:
        run(dest)
    assert info.value.code == "E_OFFLINE" and "Wan2.1_VAE.pth" in info.value.message


def test_a_changed_repository_is_reported(hub, tmp_path):
    profile = Profile("x", "x", (Fetch(MULTITALK_REPO, "m", include=("multitalk_v2.safetensors",)),))
    with pytest.raises(DownloadError) as info:
        Downloader(tmp_path, profile, cache_dirs=[], log=[].append).run()
    assert info.value.code == "E_NOT_FOUND" and "multitalk_v2.safetensors" in info.value.message


def test_one_download_per_directory(hub, tmp_path):
    with dl._locked(tmp_path), pytest.raises(DownloadError) as info:
        run(tmp_path)
    assert info.value.code == "E_LOCKED"


def test_cli_download_then_verify(hub, tmp_path, capsys):
    dest = tmp_path / "models"
    assert cli(["download", "--profile", "official", "--dest", str(dest), "--workers", "3"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out[: out.index("}\n") + 1])
    assert summary["fetched"] == 15 and "fetching 15 files" in err
    assert "complete and consistent" in out

    assert cli(["verify", "--dest", str(dest), "--hashes"]) == 0
    out, _ = capsys.readouterr()
    assert "15 files re-hashed" in out and "text_encoder    ok       original" in out

    (dest / "chinese-wav2vec2-base/model.safetensors").unlink()
    assert cli(["verify", "--dest", str(dest), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"]
    assert any("chinese-wav2vec2-base/model.safetensors: missing" in p for p in report["problems"])


def test_docs_profile_table_is_current():
    assert profiles_table() in PROVISIONING_DOC.read_text(), (
        "docs/provisioning.md's profile table is stale: paste `multitalk-serve profiles`"
    )


def test_readme_numbers_match_the_architectures():
    """The parameter counts behind the size estimates, against the official classes' shapes (fixture)."""
    import math

    from multitalk_serve.provision import profiles

    shapes = json.loads((Path(__file__).parent / "fixtures/official/original_encoder_shapes.json").read_text())
    count = {k: sum(math.prod(s) for _, s in v.values()) for k, v in shapes.items()}
    clip_visual = sum(math.prod(s) for k, (_, s) in shapes["clip"].items() if k.startswith("visual."))
    assert count["t5"] == profiles.T5_ENCODER_PARAMS
    assert clip_visual == profiles.CLIP_VISION_PARAMS
    assert count["clip"] - clip_visual == profiles.CLIP_TEXT_PARAMS
    assert count["vae"] == profiles.VAE_PARAMS
    base, audio = profiles.transformer_params()
    assert (base, audio) == (16_394_878_784, 2_487_168_000)


# --- audio models: MultiTalk and/or InfiniteTalk (download --models) -------------------------------------------------
IT_SINGLE = "InfiniteTalk/single/infinitetalk.safetensors"
IT_MULTI = "InfiniteTalk/multi/infinitetalk.safetensors"


def run_models(dest: Path, name: str, models: str, logs: list | None = None, **kwargs):
    log = (logs if logs is not None else []).append
    return Downloader(dest, profile(name, models), cache_dirs=[], log=log, **kwargs).run()


@pytest.mark.parametrize(
    ("name", "models", "expected"),
    [
        ("official", "infinitetalk-single", ["infinitetalk-single"]),
        ("bf16", "all", ["multitalk", "infinitetalk-single", "infinitetalk-multi"]),
        ("gguf-q4", "infinitetalk", ["infinitetalk-single", "infinitetalk-multi"]),
    ],
)
def test_audio_model_choices_download_and_verify(hub, tiny_root, tmp_path, name, models, expected):
    dest = tmp_path / "models"
    report = run_models(dest, name, models)
    assert not report.failures
    fetched = {r.file for r in content_gets(hub) if r.repo_id == INFINITETALK_REPO}
    assert fetched == {f"{m.removeprefix('infinitetalk-')}/infinitetalk.safetensors" for m in expected if "-" in m}
    assert (dest / "MeiGen-MultiTalk").exists() == ("multitalk" in expected)
    assert not (dest / "InfiniteTalk/quant_models").exists() and not (dest / "InfiniteTalk/README.md").exists()
    manifest = json.loads((dest / ".multitalk/manifest.json").read_text())
    assert manifest["profile"] == (name if models == "multitalk" else f"{name}+{'+'.join(expected)}")
    for model in expected:
        if model.startswith("infinitetalk-"):
            field = model.replace("-", "_")
            kind = model.removeprefix("infinitetalk-")
            assert manifest["components"][field] == f"InfiniteTalk/{kind}/infinitetalk.safetensors"
            ours = read_safetensors_header(dest / "InfiniteTalk" / kind / "infinitetalk.safetensors")
            published = read_safetensors_header(tiny_root / "InfiniteTalk" / kind / "infinitetalk.safetensors")
            assert ours.keys() == published.keys()
            # stored as the profile stores MultiTalk's: bf16 (norms float32) where it converts, as published otherwise
            narrowed = {k for k, r in ours.items() if r.dtype == torch.bfloat16}
            assert bool(narrowed) == (name != "official")
            for key in list(published)[:20]:
                value = published[key].read()
                expected_value = value.to(torch.bfloat16) if key in narrowed else value
                assert torch.equal(ours[key].read(), expected_value)
    result = verify_model_dir(dest, hashes=True, cache_dirs=[], adapters=expected)
    assert result.ok, result.all_problems
    assert list(result.inventory.paths.adapters()) == expected
    audio = [c for c in result.inventory.components if c.layout.startswith("audio:")]
    assert [c.layout for c in audio] == [f"audio: {m}" for m in expected] and all(c.problem is None for c in audio)


def test_a_corrupted_infinitetalk_file_is_refetched(hub, tmp_path):
    dest = tmp_path / "models"
    run_models(dest, "bf16", "infinitetalk-multi")
    path = dest / IT_MULTI  # converted to bf16 on arrival
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = verify_model_dir(dest, hashes=True, cache_dirs=[])
    assert not result.ok and any(p.startswith(f"{IT_MULTI}: content changed") for p in result.all_problems)
    hub.clear_requests()
    logs: list[str] = []
    report = run_models(dest, "bf16", "infinitetalk-multi", logs)
    assert report.fetched == 1 and [r.file for r in content_gets(hub)] == ["multi/infinitetalk.safetensors"]
    assert any(line.startswith(f"{IT_MULTI}: does not match the Hub") for line in logs)
    assert verify_model_dir(dest, hashes=True, cache_dirs=[]).ok


def test_a_missing_infinitetalk_file_is_named(hub, tmp_path):
    dest = tmp_path / "models"
    run_models(dest, "gguf-q4", "infinitetalk")
    (dest / IT_SINGLE).unlink()
    result = verify_model_dir(dest, cache_dirs=[])
    assert not result.ok
    assert f"{IT_SINGLE}: missing (recorded by download; rerun download to fetch it)" in result.all_problems
    assert any(p.startswith("infinitetalk_single:") and IT_SINGLE in p for p in result.all_problems)
    # the worker's start-up check (same verify) names it too
    from multitalk_serve.engine.errors import CheckpointError
    from multitalk_serve.worker.config import WorkerConfig
    from multitalk_serve.worker.fitness import check_model_folder

    with pytest.raises(CheckpointError, match=IT_SINGLE):
        check_model_folder(WorkerConfig(model_path=dest, volume_path=dest, s3=None))
    report = run_models(dest, "gguf-q4", "infinitetalk")
    assert report.fetched == 1 and verify_model_dir(dest, cache_dirs=[]).ok


def test_cli_download_models_and_verify_models(hub, tmp_path, capsys):
    dest = tmp_path / "models"
    assert cli(["download", "--profile", "gguf-q8", "--models", "infinitetalk-multi", "--dest", str(dest)]) == 0
    out, _ = capsys.readouterr()
    assert "complete and consistent" in out and not (dest / "MeiGen-MultiTalk").exists()
    assert cli(["verify", "--dest", str(dest)]) == 0
    out, _ = capsys.readouterr()
    assert "infinitetalk_multi" in out and "audio: infinitetalk-multi" in out
    assert cli(["verify", "--dest", str(dest), "--models", "multitalk,infinitetalk-multi"]) == 1
    captured = capsys.readouterr()
    assert "MeiGen-MultiTalk/multitalk.safetensors" in captured.err
    with pytest.raises(SystemExit) as info:
        cli(["download", "--profile", "bf16", "--models", "infinitetalk-duo", "--dest", str(dest)])
    assert info.value.code == 2
    assert "argument --models: unknown audio model 'infinitetalk-duo'" in capsys.readouterr().err


def test_fewer_files_at_a_time_when_the_float32_originals_would_not_fit(hub, tmp_path, monkeypatch):
    """Room for the result plus one float32 file being converted, not eight: the download runs one at a time."""
    chosen = profile("bf16", "all")
    planned = dl.plan(chosen, endpoint=hub.url)
    final = sum(r.final_size_bound() for r in planned)
    largest = max(r.size for r in planned if r.to_bf16)
    usage = namedtuple("usage", "total used free")
    free = final + largest + dl.SPACE_MARGIN
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free, free))
    logs: list[str] = []
    downloader = Downloader(tmp_path / "models", chosen, cache_dirs=[], log=logs.append, workers=8)
    report = downloader.run()
    assert not report.failures and downloader.workers == 1
    assert any("fetching 1 files at a time instead of 8" in line for line in logs)
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free + 2, free - 2))
    with pytest.raises(DownloadError) as info:
        Downloader(tmp_path / "other", chosen, cache_dirs=[], log=[].append).run()
    assert info.value.code == "E_SPACE"


def test_every_audio_model_choice_fits_the_volume():
    from multitalk_serve.provision import profiles

    _, audio = profiles.transformer_params()
    assert set(profiles.AUDIO_MODEL_PARAMS) == set(profiles.AUDIO_MODELS)
    # each InfiniteTalk file: MultiTalk's 330 tensors and shapes, float32 (computed, not read from the Hub)
    assert all(n == audio for n in profiles.AUDIO_MODEL_PARAMS.values()) and round(audio * 4 / 1e9, 2) == 9.95
    for name in PROFILES:
        default = profiles.estimate(name)
        for models in ("multitalk", "infinitetalk-single", "infinitetalk-multi", "infinitetalk", "all"):
            e = profiles.estimate(name, models, speed_lora=True)
            assert max(e.disk_gb, e.peak_gb) < profiles.VOLUME_GB, (name, models)
            assert e.gpu_weights_gb == default.gpu_weights_gb  # one set of audio layers on the GPU
        both = profiles.estimate(name, "infinitetalk")
        assert round(both.disk_gb - default.disk_gb, 2) == round(audio * (4 if name == "official" else 2) / 1e9, 2)
    assert profile("bf16").name == "bf16" and profile("bf16", "infinitetalk").models == (
        "infinitetalk-single",
        "infinitetalk-multi",
    )
    with pytest.raises(ValueError, match="unknown audio model 'x'"):
        profile("bf16", "x")
    with pytest.raises(ValueError, match="no audio model"):
        profile("bf16", "")
