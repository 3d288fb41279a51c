"""InfiniteTalk end to end on the tiny model through the front ends (issue 13): the worker dubs a tiny 25 fps MP4
made on the spot, switches the audio adapter per job and reports it, refuses a model it does not hold; the CLI's
``--video`` and the official InfiniteTalk example JSON (its media replaced by tiny files) run for real."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image

import multitalk_serve.engine as engine
import pipeline_stubs as stubs
from media import write_audio, write_video
from multitalk_serve.cli import main
from multitalk_serve.engine.pipeline.video import probe
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.handler import Worker

ADAPTERS = ["multitalk", "infinitetalk-single", "infinitetalk-multi"]
SMALL = {"width": 64, "height": 64, "sampling_steps": 2, "seed": 3}


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def png_uri(size: tuple[int, int] = (64, 48)) -> str:
    buf = io.BytesIO()
    Image.fromarray(stubs.scenario_image()).resize(size).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("itk-media")
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (16, 8, 48, 40))
    mask.save(tmp / "mask.png")
    return {
        "video": write_video(tmp / "talk.mp4", 1.2),  # 64x48, 25 fps, 30 frames, no sound
        "short": write_video(tmp / "short.mp4", 0.4),  # shorter than the audio
        "audio": write_audio(tmp / "voice.wav", 1.0),
        "sound_only": write_audio(tmp / "sound.m4a", 0.5),
        "mask": tmp / "mask.png",
    }


@pytest.fixture(scope="module")
def itk_worker(tiny_root, tmp_path_factory):
    """A worker holding all three adapters on one tiny base (what MULTITALK_ADAPTERS unset gives on this folder)."""
    pipe = engine.MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32, adapters=ADAPTERS)
    volume = tmp_path_factory.mktemp("volume") / "missing"  # no volume: the video comes back inline
    config = WorkerConfig(model_path=tiny_root, volume_path=volume, s3=None, progress_interval_s=0.0, model=None)
    return Worker(pipe, config, load_seconds=1.0)


def run(worker: Worker, **job) -> dict:
    out = worker.run({"id": "itk", "input": job})
    assert "error" not in out, out
    return out


def read_back(out: dict, tmp_path: Path, name: str = "out.mp4"):
    path = tmp_path / name
    path.write_bytes(base64.b64decode(out["video_base64"]))
    return probe(path)


# Each tiny worker job costs seconds (the tiny VAE over an 81-frame clip): three jobs cover the worker's new paths.
def test_worker_dubs_a_short_video_keeping_the_background(itk_worker, media, tmp_path):
    """A 10-frame source under 25 frames of audio (pingpong), one speaker's box with keep_background: the
    single-speaker adapter, the output as long as the audio, every choice reported."""
    assert itk_worker.held == ADAPTERS and itk_worker.default_model == "multitalk"
    out = run(
        itk_worker,
        video_url=data_uri(media["short"], "video/mp4"),
        audio_url=data_uri(media["audio"], "audio/wav"),
        keep_background=True,
        boxes=[[16, 8, 48, 40]],
        feather=4,
        source_end="pingpong",
        **SMALL,
    )
    info = read_back(out, tmp_path)
    assert (info.frames, info.width, info.height, info.audio_codec) == (25, 64, 64, "aac")  # = the audio, 25 fps
    params = out["params"]
    assert (params["model"], params["source"], params["source_end"], params["keep_background"], params["feather"]) == (
        "infinitetalk-single",
        "video",
        "pingpong",
        True,
        4.0,
    )
    assert "adapter_switch" in out["timings"] and out["timings"]["adapter_switch"] >= 0


def test_worker_official_cond_video_image_with_a_mask_then_two_speakers_switch(itk_worker, media, tmp_path):
    """The official field ``cond_video`` holding an image, ``mask_image`` keeping the rest; then two tracks with
    model ``infinitetalk``: the worker switches to the two-speaker adapter and reports what the switch cost."""
    image, voice = png_uri(), data_uri(media["audio"], "audio/wav")
    first = run(
        itk_worker,
        cond_video=image,
        cond_audio={"person1": voice},
        mask_image=data_uri(media["mask"], "image/png"),
        **SMALL,
    )
    params = first["params"]
    assert (params["model"], params["source"], params["keep_background"]) == ("infinitetalk-single", "image", True)
    assert read_back(first, tmp_path).frames == 25
    second = run(itk_worker, image=image, audio=[voice, None], model="infinitetalk", **SMALL)
    assert (second["params"]["model"], second["params"]["source"]) == ("infinitetalk-multi", "image")
    assert second["timings"]["adapter_switch"] > 0  # single -> multi: a copy of the audio layers
    assert itk_worker.pipeline.adapter == "infinitetalk-multi"


@pytest.mark.parametrize(
    ("field", "make", "code", "words"),
    [
        ("video", lambda m: data_uri(m["sound_only"], "video/mp4"), "E_VIDEO", "video: no video stream"),
        # named as the request sent it, also when the engine finds the problem
        ("video_url", lambda m: data_uri(m["sound_only"], "video/mp4"), "E_VIDEO", "video_url: no video stream"),
        ("video_url", lambda m: png_uri(), "E_INPUT", "video_url: a data URI of type image/png"),
        ("video", lambda m: base64.b64encode(m["mask"].read_bytes()).decode(), "E_VIDEO", "not a video"),
    ],
)
def test_worker_bad_videos_are_coded(itk_worker, media, field, make, code, words):
    out = itk_worker.run(
        {"id": "bad", "input": {field: make(media), "audio": data_uri(media["audio"], "audio/wav"), **SMALL}}
    )
    assert out["error"].startswith(f"{code}: ") and words in out["error"], out


def test_worker_mask_of_the_wrong_size_is_e_image(itk_worker, media):
    wrong = io.BytesIO()
    Image.new("L", (32, 32), 255).save(wrong, format="PNG")
    out = itk_worker.run(
        {
            "id": "mask",
            "input": {
                "video": data_uri(media["video"], "video/mp4"),
                "audio": data_uri(media["audio"], "audio/wav"),
                "mask_image": "data:image/png;base64," + base64.b64encode(wrong.getvalue()).decode(),
                **SMALL,
            },
        }
    )
    assert out["error"].startswith("E_IMAGE: ") and "mask_image" in out["error"], out


def test_worker_without_infinitetalk_refuses_a_video_before_fetching(tiny_pipeline, media):
    worker = Worker(tiny_pipeline, WorkerConfig(model_path=Path("/x"), s3=None, model=None))
    assert worker.held == ["multitalk"]
    out = worker.run(
        {
            "id": "v",
            "input": {"video": "https://unfetchable.invalid/v.mp4", "audio": "https://unfetchable.invalid/a.wav"},
        }
    )
    assert out["error"].startswith("E_INPUT: model (not given; video needs InfiniteTalk): infinitetalk"), out
    assert "it holds multitalk (MULTITALK_ADAPTERS)" in out["error"]


# --- the CLI ----------------------------------------------------------------------------------------------------
CLI_FAST = ["--steps", "2", "--dtype", "fp32", "--device", "cpu", "--quiet", "--seed", "1"]


def cli(capsys, *args) -> tuple[int, dict | None, str]:
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_cli_dubs_a_video_on_the_tiny_model(tiny_root, media, tmp_path, capsys):
    out = tmp_path / "dubbed.mp4"
    code, summary, err = cli(
        capsys, "--model", tiny_root, "--video", media["video"], "--audio", media["audio"], "--prompt", "a man talks",
        "--out", out, "--size", "48x64", *CLI_FAST,
    )  # fmt: skip
    assert code == 0, err
    assert (summary["model"], summary["source"], summary["frames"]) == ("infinitetalk-single", "video", 25)
    info = probe(out)
    assert (info.frames, info.width, info.height, info.audio_codec) == (25, 64, 48, "aac")


def test_cli_runs_the_official_infinitetalk_json_unchanged(tiny_root, media, tmp_path, capsys, monkeypatch):
    from test_infinitetalk_api import _official_infinitetalk_tree

    files = _official_infinitetalk_tree(tmp_path / "InfiniteTalk")
    monkeypatch.chdir(tmp_path / "InfiniteTalk")
    code, summary, err = cli(
        capsys, "--model", tiny_root, "--input-json", "examples/single_example_video.json", "--size", "48x64",
        *CLI_FAST,
    )  # fmt: skip
    assert code == 0, err
    assert (summary["model"], summary["source"], summary["video"]) == (
        "infinitetalk-single",
        "video",
        "single_example_video.mp4",
    )
    assert probe(tmp_path / "InfiniteTalk" / "single_example_video.mp4").frames == 25
    assert files["single_example_video"].exists()


class FakePipe:
    """Records the load and the job of the CLI (the models are not what these tests are about)."""

    loads: list[dict] = []
    jobs: list[dict] = []
    memory_plan = None
    attention_backend = "native"

    @classmethod
    def from_pretrained(cls, model_dir, **kwargs):
        cls.loads.append(kwargs)
        return cls()

    def generate(self, image, audio, prompt, output, **kwargs):
        FakePipe.jobs.append({"image": image, "audio": audio, **kwargs})
        Path(output).write_bytes(b"\x00\x00\x00\x18ftypmp42 video")
        opts = kwargs["options"].resolved()
        return engine.GenerationResult(
            video_path=Path(output), frames=25, seconds=1.0, width=64, height=48, seed=1, speakers=len(audio),
            clips=1, options=asdict(opts), timings={"total": 0.1},
        )  # fmt: skip


@pytest.fixture
def fake_pipe(monkeypatch):
    FakePipe.loads, FakePipe.jobs = [], []
    monkeypatch.setattr(engine, "MultiTalkPipeline", FakePipe)
    return FakePipe


def test_cli_passes_the_video_mask_and_model(tiny_root, media, tmp_path, capsys, fake_pipe):
    code, _, err = cli(
        capsys, "--model", tiny_root, "--video", media["video"], "--audio", media["audio"], "--prompt", "x",
        "--out", tmp_path / "o.mp4", "--mask-image", media["mask"], "--feather", "6", "--source-end", "pingpong",
        *CLI_FAST,
    )  # fmt: skip
    assert code == 0, err
    job = fake_pipe.jobs[0]
    assert job["image"] is None and Path(job["video"]) == media["video"] and Path(job["mask"]) == media["mask"]
    opts = job["options"]
    assert (opts.model, opts.keep_background, opts.feather, opts.source_end) == (
        "infinitetalk-single",
        True,
        6,
        "pingpong",
    )
    assert fake_pipe.loads[0]["adapters"] == ["infinitetalk-single"]  # only the adapter the job needs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-name", "multitalk"], "--video: MultiTalk animates an image"),
        (["--image", "IMG"], "--image and --video both give the source"),
        (["--feather", "3"], "--feather is the edge width of --keep-background"),
        (["--keep-background"], "keep_background needs the speaker regions: --box (one per speaker) or --mask-image"),
        (
            ["--keep-background", "--box", "0,0,8,8", "--box", "8,8,16,16"],
            "one speaker with keep_background takes one box",
        ),
        (["--keep-background", "--mask-image", "WRONGMASK"], "--mask-image: 32x32, but --video is 64x48"),
        (
            ["--model-name", "infinitetalk-single", "--audio", "AUDIO"],
            "infinitetalk-single was trained for one speaker",
        ),
    ],
)
def test_cli_video_mistakes_cost_no_model_load(tiny_root, media, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setattr(engine, "MultiTalkPipeline", None)  # any load would fail loudly
    wrong = tmp_path / "wrong.png"
    Image.new("L", (32, 32), 255).save(wrong)
    swap = {"IMG": str(media["mask"]), "AUDIO": str(media["audio"]), "WRONGMASK": str(wrong)}
    code, _, err = cli(
        capsys, "--model", tiny_root, "--video", media["video"], "--audio", media["audio"], "--prompt", "x",
        "--out", tmp_path / "o.mp4", *[swap.get(a, a) for a in args], *CLI_FAST,
    )  # fmt: skip
    assert code == 2 and message in err, err


def test_cli_model_name_given_to_model_gets_a_hint(media, tmp_path, capsys):
    code, _, err = cli(
        capsys, "--model", "infinitetalk", "--video", media["video"], "--audio", media["audio"], "--prompt", "x",
        "--out", tmp_path / "o.mp4",
    )  # fmt: skip
    assert (
        code == 2 and "--model is the model folder; infinitetalk is a model's name: choose it with --model-name" in err
    )
