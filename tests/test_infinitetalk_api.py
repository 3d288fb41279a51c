"""InfiniteTalk through the front ends (issue 13): the worker's schema (video and the hosted APIs' names, model,
source_end, keep_background, mask_image, feather), its settings (MULTITALK_MODEL, MULTITALK_ADAPTERS, MAX_VIDEO_MB),
the model a job runs, the media fetch of a video, the official InfiniteTalk JSON, the client's arguments. Model-free
and fast; the runs on the tiny model are in test_infinitetalk_e2e.py."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from media import write_video
from multitalk_serve.engine import CheckpointError, ConfigError, InputError
from multitalk_serve.input_json import read_input_json
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.errors import CODES, WorkerError
from multitalk_serve.worker.fitness import plan_models
from multitalk_serve.worker.handler import Worker, _is_image
from multitalk_serve.worker.media import MediaFetcher
from multitalk_serve.worker.schema import JobInput, describe_errors, json_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from client import build_parser, job_input

IMG, VID, A1, A2 = "https://e.com/face.png", "https://e.com/talk.mp4", "https://e.com/a.wav", "https://e.com/b.wav"
MASK = "https://e.com/mask.png"


def parse(**kwargs) -> JobInput:
    return JobInput.model_validate(kwargs)


def error(**kwargs) -> str:
    with pytest.raises(ValidationError) as exc:
        JobInput.model_validate(kwargs)
    return describe_errors(exc.value)


# --- schema ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"video": VID, "audio": A1}, "video"),
        ({"video_url": VID, "audio_url": A1}, "video_url"),  # fal infinitalk/video-to-video
        ({"video": VID, "left_audio": A1, "right_audio": A2}, "video"),  # WaveSpeed infinitetalk/multi
        ({"cond_video": VID, "cond_audio": {"person1": A1}}, "cond_video"),  # the official InfiniteTalk JSON
        ({"video": {"s3_key": "in/talk.mp4"}, "audio": A1}, "video"),
        ({"video": {"path": "in/talk.mp4"}, "audio": A1}, "video"),
        ({"video": "data:video/mp4;base64,AAAA", "audio": A1}, "video"),
    ],
)
def test_a_video_under_every_name_is_the_source(given, field):
    job = parse(**given)
    assert job.image is None and job.video is not None
    assert job.video_field == field and job.source_field == field


def test_new_fields_and_their_defaults():
    job = parse(image=IMG, audio=A1)
    assert (job.model, job.source_end, job.keep_background, job.mask_image, job.feather) == (
        None,
        "hold",
        False,
        None,
        None,
    )
    assert job.video_field is None and job.source_field == "image"
    for model in ("multitalk", "infinitetalk", "infinitetalk-single", "infinitetalk-multi"):
        assert parse(image=IMG, audio=A1, model=model).model == model
    job = parse(
        video=VID, audio=A1, model="infinitetalk", source_end="pingpong", keep_background=True, boxes=[[0, 0, 8, 8]],
        feather=12.5,
    )  # fmt: skip
    assert (job.source_end, job.keep_background, job.feather) == ("pingpong", True, 12.5)
    # WaveSpeed's mask_image: the region regenerated, and it implies keep_background
    job = parse(video=VID, audio=A1, mask_image=MASK)
    assert job.keep_background is True and job.mask_image == MASK
    # one speaker with keep_background: one box (ours) or person1 alone (official)
    assert parse(video=VID, audio=A1, keep_background=True, boxes=[[1, 2, 30, 40]]).boxes == [[1, 2, 30, 40]]
    assert parse(video=VID, audio=A1, keep_background=True, bbox={"person1": [2, 1, 40, 30]}).bbox
    two = parse(video=VID, audio=[A1, A2], keep_background=True, boxes=[[0, 0, 10, 10], [20, 0, 30, 10]])
    assert len(two.boxes) == 2 and two.keep_background


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"image": IMG, "video": VID, "audio": A1}, "image and video both give the source: give one"),
        ({"image_url": IMG, "video_url": VID, "audio": A1}, "image_url and video_url both give the source"),
        ({"cond_image": IMG, "cond_video": VID, "audio": A1}, "cond_image and cond_video both give the source"),
        ({"video": VID, "video_url": VID, "audio": A1}, "video and video_url both give the source"),
        ({"audio": A1}, "image is required"),
        ({"audio": A1}, "or a video to dub (video / video_url / cond_video)"),
        ({"video_url": VID, "audio": A1, "model": "multitalk"}, "video_url: MultiTalk animates an image"),
        ({"video": VID, "audio": A1, "model": "infinite"}, "model: Input should be 'multitalk', 'infinitetalk'"),
        ({"video": VID, "audio": A1, "model": 2}, "model: Input should be"),
        ({"video": VID, "audio": A1, "source_end": "loop"}, "source_end: Input should be 'hold' or 'pingpong'"),
        ({"video": VID, "audio": A1, "keep_background": "yes"}, "keep_background: Input should be a valid boolean"),
        ({"video": VID, "audio": A1, "keep_background": 1}, "keep_background: Input should be a valid boolean"),
        ({"video": VID, "audio": A1, "feather": 4}, "feather is the edge width of keep_background"),
        ({"video": VID, "audio": A1, "keep_background": True, "feather": -1}, "feather: Input should be greater"),
        ({"video": VID, "audio": A1, "keep_background": True, "feather": "4"}, "feather: Input should be a valid"),
        ({"video": VID, "audio": A1, "keep_background": True}, "keep_background needs the speaker regions: boxes"),
        (
            {"video": VID, "audio": A1, "mask_image": MASK, "keep_background": False},
            "mask_image is the region regenerated with keep_background, which is false",
        ),
        (
            {"video": VID, "audio": A1, "mask_image": {"url": MASK, "path": "m.png"}},
            "mask_image.function-after[_one(), MediaObject]: give exactly one",
        ),
        (
            {"video": {"url": VID, "s3_key": "k"}, "audio": A1},
            "video.function-after[_one(), MediaObject]: give exactly one of url, base64, path, s3_key",
        ),
        ({"video": VID, "audio": A1, "boxes": [[0, 0, 10, 10]]}, "person boxes are for two speakers"),
        (
            {"video": VID, "audio": A1, "keep_background": True, "boxes": [[0, 0, 1, 1], [2, 2, 3, 3]]},
            "boxes: one speaker with keep_background takes one",
        ),
        (
            {"video": VID, "audio": A1, "keep_background": True, "bbox": {"person2": [0, 0, 1, 1]}},
            "bbox: one speaker with keep_background takes {person1",
        ),
        (
            {"video": VID, "audio": A1, "mask_image": MASK, "boxes": [[0, 0, 10, 10]]},
            "mask_image and boxes both give the region to regenerate",
        ),
        (
            {"video": VID, "audio": [A1, A2], "model": "infinitetalk-single"},
            "model: infinitetalk-single was trained for one speaker",
        ),
        ({"video": VID, "audio": A1, "video_urls": VID}, "video_urls: unknown field"),
    ],
)
def test_rejections_name_the_field_as_sent(given, message):
    text = error(**given)
    assert message in text, text


def test_video_media_are_never_echoed():
    secret = "QUJD" * 1000
    text = error(video=secret, audio=A1, source_end="x", mask_image=secret + "x")
    assert "QUJD" not in text


def test_the_published_schema_has_the_new_fields():
    properties = json_schema()["properties"]
    assert {"video", "video_url", "cond_video", "model", "source_end", "keep_background", "mask_image"} <= set(
        properties
    )
    assert {"feather", "left_audio", "right_audio"} <= set(properties)


# --- settings and the model a job runs --------------------------------------------------------------------------
def test_worker_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("MULTITALK_MODEL", " InfiniteTalk ")
    monkeypatch.setenv("MULTITALK_ADAPTERS", "multitalk, infinitetalk-single,,")
    monkeypatch.setenv("MAX_VIDEO_MB", "7")
    monkeypatch.setenv("ORIGINAL_WORKER_IMAGE", "face.png")
    config = WorkerConfig()
    assert config.model == "infinitetalk" and config.adapters == ("multitalk", "infinitetalk-single")
    assert config.max_video_bytes == 7_000_000 and config.original_worker_image == "face.png"
    for name in ("MULTITALK_MODEL", "MULTITALK_ADAPTERS", "MAX_VIDEO_MB", "ORIGINAL_WORKER_IMAGE"):
        monkeypatch.delenv(name)
    config = WorkerConfig()
    assert (config.model, config.adapters, config.max_video_bytes, config.original_worker_image) == (
        None,
        None,
        500_000_000,
        None,
    )


def _root_without(tiny_root: Path, tmp_path: Path, *dropped: str) -> Path:
    """A model folder linking to the tiny one's components, less the audio adapters ``dropped``."""
    root = tmp_path / "models"
    root.mkdir()
    for entry in tiny_root.iterdir():
        if entry.name == "InfiniteTalk":
            for kind in ("single", "multi"):
                if f"infinitetalk-{kind}" not in dropped and (entry / kind).exists():
                    (root / "InfiniteTalk").mkdir(exist_ok=True)
                    (root / "InfiniteTalk" / kind).symlink_to(entry / kind)
        elif not (entry.name == "MeiGen-MultiTalk" and "multitalk" in dropped):
            (root / entry.name).symlink_to(entry)
    return root


def test_plan_models_defaults_to_what_the_folder_has(tiny_root):
    held, default = plan_models(WorkerConfig(model_path=tiny_root, s3=None, model=None, adapters=None))
    assert held == ["multitalk", "infinitetalk-single", "infinitetalk-multi"] and default == "multitalk"
    held, default = plan_models(
        WorkerConfig(model_path=tiny_root, s3=None, model="infinitetalk", adapters=("infinitetalk-multi",))
    )
    assert held == ["infinitetalk-multi"] and default == "infinitetalk"
    held, default = plan_models(
        WorkerConfig(model_path=tiny_root, s3=None, model=None, adapters=("infinitetalk-single",))
    )
    assert default == "infinitetalk"  # no MultiTalk held: InfiniteTalk by default


def test_plan_models_refuses_at_start_naming_the_setting(tiny_root, tmp_path):
    def plan(**kw):
        return plan_models(WorkerConfig(model_path=kw.pop("root", tiny_root), s3=None, **kw))

    with pytest.raises(ConfigError, match=r"MULTITALK_ADAPTERS: infinite-talk is not an audio adapter"):
        plan(model=None, adapters=("multitalk", "infinite-talk"))
    with pytest.raises(ConfigError, match=r"MULTITALK_MODEL: 'wan' is not a model; choose from multitalk"):
        plan(model="wan", adapters=None)
    with pytest.raises(ConfigError, match=r"MULTITALK_MODEL is infinitetalk-multi, but this worker holds only multi"):
        plan(model="infinitetalk-multi", adapters=("multitalk", "infinitetalk-single"))
    root = _root_without(tiny_root, tmp_path, "infinitetalk-multi")
    assert plan(root=root, model=None, adapters=None)[0] == ["multitalk", "infinitetalk-single"]
    with pytest.raises(CheckpointError, match=r"MULTITALK_ADAPTERS names infinitetalk-multi, whose weights are not"):
        plan(root=root, model=None, adapters=("multitalk", "infinitetalk-multi"))
    with pytest.raises(CheckpointError, match=r"InfiniteTalk/multi/infinitetalk.safetensors"):
        plan(root=root, model=None, adapters=("infinitetalk-multi",))


def _stub_worker(held: list[str], default: str | None = None, **config) -> Worker:
    pipeline = SimpleNamespace(device=torch.device("cpu"), adapters=held, speed_lora=None, speed_lora_fused=False)
    return Worker(pipeline, WorkerConfig(s3=None, volume_path=Path("/nonexistent"), **config), default_model=default)


NEVER_FETCHED = "https://unfetchable.invalid/a.wav"  # E_DOWNLOAD if a test's job were fetched


@pytest.mark.parametrize(
    ("held", "default", "given", "message"),
    [
        (
            ["multitalk"],
            "multitalk",
            {"image": IMG, "model": "infinitetalk"},
            "E_INPUT: model: infinitetalk with 1 speaker(s) (infinitetalk-single) is not held by this worker; it "
            "holds multitalk (MULTITALK_ADAPTERS)",
        ),
        (
            ["multitalk", "infinitetalk-single"],
            "multitalk",
            {"image": IMG, "model": "infinitetalk-multi"},
            "E_INPUT: model: infinitetalk-multi is not held by this worker; it holds multitalk, infinitetalk-single",
        ),
        (
            ["multitalk"],
            "multitalk",
            {"video": VID},
            "E_INPUT: model (not given; video needs InfiniteTalk): infinitetalk with 1 speaker(s)",
        ),
        (
            ["infinitetalk-single"],
            "infinitetalk",
            {"image": IMG, "audio": [NEVER_FETCHED, NEVER_FETCHED]},
            "E_INPUT: model (not given; the worker's default, MULTITALK_MODEL): infinitetalk with 2 speaker(s) "
            "(infinitetalk-multi) is not held",
        ),
        (["multitalk"], "multitalk", {"image": IMG, "model": "nope"}, "E_INPUT: model: Input should be"),
    ],
)
def test_a_model_the_worker_does_not_hold_is_refused_before_any_fetch(held, default, given, message):
    worker = _stub_worker(held, default)
    out = worker.run({"id": "j", "input": {"audio": NEVER_FETCHED, **given}})
    assert out["error"].startswith(message), out


@pytest.mark.parametrize(
    ("held", "default", "given", "adapter"),
    [
        (["multitalk", "infinitetalk-single", "infinitetalk-multi"], "multitalk", {"image": IMG}, "multitalk"),
        (["multitalk", "infinitetalk-single"], "multitalk", {"video": VID}, "infinitetalk-single"),
        (["multitalk", "infinitetalk-multi"], "multitalk", {"video": VID, "audio": [A1, A2]}, "infinitetalk-multi"),
        (["multitalk", "infinitetalk-single"], "infinitetalk", {"image": IMG}, "infinitetalk-single"),
        (["multitalk", "infinitetalk-single"], "infinitetalk", {"image": IMG, "model": "multitalk"}, "multitalk"),
        (["infinitetalk-multi"], "infinitetalk", {"image": IMG, "model": "infinitetalk-multi"}, "infinitetalk-multi"),
    ],
)
def test_the_model_a_job_runs(held, default, given, adapter):
    worker = _stub_worker(held, default)
    assert worker._model(JobInput.model_validate({"audio": A1, **given})) == adapter


def test_a_worker_without_an_adapter_list_holds_its_transformers():
    pipeline = SimpleNamespace(device=torch.device("cpu"), transformer=SimpleNamespace(audio_adapter=None))
    worker = Worker(pipeline, WorkerConfig(s3=None, model=None))
    assert worker.held == ["multitalk"] and worker.default_model == "multitalk"
    pipeline.transformer.audio_adapter = "infinitetalk-single"
    worker = Worker(pipeline, WorkerConfig(s3=None, model=None))
    assert worker.held == ["infinitetalk-single"] and worker.default_model == "infinitetalk"


def test_every_front_end_offers_the_engines_models():
    from multitalk_serve.cli import MODEL_NAMES
    from multitalk_serve.engine import MODEL_CHOICES
    from multitalk_serve.worker.schema import MODELS

    client = next(a for a in build_parser()._actions if a.dest == "model")
    assert tuple(MODELS) == tuple(MODEL_NAMES) == tuple(client.choices) == tuple(MODEL_CHOICES)


def test_e_video_is_a_stable_code():
    assert "E_VIDEO" in CODES
    assert WorkerError("E_VIDEO", "x").payload() == {"error": "E_VIDEO: x"}


# --- fetching a video -------------------------------------------------------------------------------------------
def _fetcher(**config) -> MediaFetcher:
    return MediaFetcher(WorkerConfig(s3=None, volume_path=Path("/nonexistent"), **config), None, threading.Event())


def test_a_video_has_its_own_size_limit(tmp_path):
    data = write_video(tmp_path / "v.mp4", 0.4).read_bytes()
    uri = "data:video/mp4;base64," + base64.b64encode(data).decode()
    fetcher = _fetcher(max_input_bytes=len(data) // 2, max_video_bytes=len(data) * 2)
    assert fetcher.fetch(uri, "video", "video") == data  # over MAX_INPUT_MB, under MAX_VIDEO_MB
    with pytest.raises(WorkerError, match=r"^image: .* MB is over the .* MB limit \(MAX_INPUT_MB\)"):
        fetcher.fetch(uri.replace("video/mp4", "image/png"), "image", "image")
    small = _fetcher(max_input_bytes=len(data) * 2, max_video_bytes=len(data) // 2)
    with pytest.raises(WorkerError, match=r"^video_url: .* MB is over the .* MB limit \(MAX_VIDEO_MB\)") as info:
        small.fetch(uri, "video_url", "video")
    assert info.value.code == "E_DOWNLOAD"
    assert small.fetch(base64.b64encode(b"a" * 30).decode(), "audio", "audio") == b"a" * 30  # the limit is reset


def test_a_video_data_uri_of_the_wrong_type_is_refused():
    with pytest.raises(WorkerError, match=r"^video: a data URI of type image/png where video was expected"):
        _fetcher().fetch("data:image/png;base64,AAAA", "video", "video")
    # cond_video (the official JSON's) may be either
    assert _fetcher().fetch("data:image/png;base64,AAAA", "cond_video", "source") == b"\x00\x00\x00"


def test_cond_video_is_told_apart_by_its_content(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    assert _is_image(buf.getvalue())
    assert not _is_image(write_video(tmp_path / "v.mp4", 0.2).read_bytes())
    assert not _is_image(b"not a picture")


def test_original_worker_image_comes_from_the_config():
    from multitalk_serve.worker.legacy import LegacyRequest

    raw = {"action": "generate", "audio": base64.b64encode(b"\x00\x01" * 1600).decode(), "duration": 1.0}
    legacy = LegacyRequest.detect(raw)
    ours = legacy.translate(False, 200_000_000, 0.2, default_image="/runpod-volume/face.png")
    assert ours["image"] == {"path": "/runpod-volume/face.png"}
    with pytest.raises(WorkerError, match="ORIGINAL_WORKER_IMAGE"):
        LegacyRequest.detect(raw).translate(False, 200_000_000, 0.2)


# --- the official InfiniteTalk JSON -----------------------------------------------------------------------------
def _official_infinitetalk_tree(root: Path) -> dict[str, Path]:
    """The official repository's examples/ (their JSON as published, their media replaced by tiny files)."""
    from media import write_audio

    (root / "examples" / "single").mkdir(parents=True)
    (root / "examples" / "multi").mkdir(parents=True)
    Image.new("RGB", (96, 64), (120, 90, 60)).save(root / "examples/single/ref_image.png")
    Image.new("RGB", (96, 64), (60, 90, 120)).save(root / "examples/multi/ref_img.png")
    write_video(root / "examples/single/ref_video.mp4", 1.2)
    write_audio(root / "examples/single/1.wav", 1.0)
    for name in ("1-man", "1-woman"):  # the official names: upper-case .WAV
        write_audio(root / f"examples/multi/{name}.wav", 0.6).rename(root / f"examples/multi/{name}.WAV")
    files = {
        "single_example_video": {
            "prompt": "A man is talking",
            "cond_video": "examples/single/ref_video.mp4",
            "cond_audio": {"person1": "examples/single/1.wav"},
        },
        "single_example_image": {
            "prompt": "A woman is passionately singing into a professional microphone in a recording studio.",
            "cond_video": "examples/single/ref_image.png",
            "cond_audio": {"person1": "examples/single/1.wav"},
        },
        "multi_example_image": {
            "prompt": "In a casual, intimate setting, a man and a woman are engaged in a heartfelt conversation.",
            "cond_video": "examples/multi/ref_img.png",
            "audio_type": "para",
            "cond_audio": {"person1": "examples/multi/1-man.WAV", "person2": "examples/multi/1-woman.WAV"},
        },
    }
    paths = {}
    for name, data in files.items():
        paths[name] = root / "examples" / f"{name}.json"
        paths[name].write_text(json.dumps(data, indent=4))
    return paths


def test_official_infinitetalk_json_reads_as_the_official_script_does(tmp_path):
    files = _official_infinitetalk_tree(tmp_path)
    job = read_input_json(files["single_example_video"], cwd=tmp_path)
    assert job.video == tmp_path / "examples/single/ref_video.mp4" and job.image is None
    assert job.infinitetalk and job.source_key == "cond_video" and job.audio == [tmp_path / "examples/single/1.wav"]
    job = read_input_json(files["single_example_image"], cwd=tmp_path)  # an image under cond_video: is_video()
    assert job.image == tmp_path / "examples/single/ref_image.png" and job.video is None and job.infinitetalk
    job = read_input_json(files["multi_example_image"], cwd=tmp_path)
    assert len(job.audio) == 2 and job.audio_type == "para" and job.infinitetalk
    data = json.loads(files["multi_example_image"].read_text())
    files["multi_example_image"].write_text(json.dumps({**data, "cond_image": data["cond_video"]}))
    with pytest.raises(InputError, match=r"^cond_image and cond_video both give the source"):
        read_input_json(files["multi_example_image"], cwd=tmp_path)
    files["multi_example_image"].write_text(json.dumps({**data, "cond_video": "examples/multi/none.mp4"}))
    with pytest.raises(InputError, match=r"^cond_video: examples/multi/none.mp4 not found"):
        read_input_json(files["multi_example_image"], cwd=tmp_path)
    files["multi_example_image"].write_text(
        json.dumps({"prompt": "x", "tts_audio": {"text": "hi"}, "cond_video": data["cond_video"]})
    )
    with pytest.raises(InputError, match=r"^tts_audio.human1_voice: missing"):
        read_input_json(files["multi_example_image"], cwd=tmp_path)


# --- the client -------------------------------------------------------------------------------------------------
def test_client_sends_the_infinitetalk_fields(tmp_path):
    clip = write_video(tmp_path / "talk.mp4", 0.2)
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 48), 255).save(mask)
    given = ["--endpoint", "http://x", "--video", str(clip), "--audio", "https://e.com/a.wav", "--model"]
    more = ["--keep-background", "--mask-image", str(mask), "--source-end", "pingpong", "--feather", "8", "--out", "o"]
    args = build_parser().parse_args([*given, "infinitetalk", *more])
    job = job_input(args)
    assert "image" not in job and job["video"].startswith("data:video/mp4;base64,")
    assert job["mask_image"].startswith("data:image/png;base64,") and job["keep_background"] is True
    assert (job["model"], job["source_end"], job["feather"], job["audio"]) == (
        "infinitetalk",
        "pingpong",
        8.0,
        ["https://e.com/a.wav"],
    )
    JobInput.model_validate(job)  # what the client sends, the worker accepts
    job = job_input(build_parser().parse_args(["--endpoint", "x", "--image", IMG, "--audio", A1, "--out", "o"]))
    assert job["image"] == IMG and not {"video", "model", "keep_background", "mask_image", "source_end"} & set(job)
    with pytest.raises(SystemExit):  # one source
        build_parser().parse_args(["--endpoint", "x", "--image", IMG, "--video", VID, "--audio", A1, "--out", "o"])


def test_client_help_names_the_new_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--video", "--model", "--keep-background", "--mask-image", "--source-end", "--feather"):
        assert option in text
    assert isinstance(build_parser(), argparse.ArgumentParser) and os.sep


@pytest.mark.parametrize(
    ("env", "code", "words"),
    [
        ({"MULTITALK_ADAPTERS": "multitalk,infinite"}, "E_CONFIG", "MULTITALK_ADAPTERS: infinite is not an audio"),
        ({"MULTITALK_MODEL": "wan2"}, "E_CONFIG", "MULTITALK_MODEL: 'wan2' is not a model"),
        ({"MULTITALK_ADAPTERS": "multitalk", "MULTITALK_MODEL": "infinitetalk"}, "E_CONFIG", "holds only multitalk"),
        ({"MULTITALK_ADAPTERS": "infinitetalk-multi"}, "E_MODEL", "InfiniteTalk/multi/infinitetalk.safetensors"),
    ],
)
def test_the_worker_exits_at_start_naming_the_setting(tiny_root, tmp_path, monkeypatch, caplog, env, code, words):
    from multitalk_serve.worker import __main__ as entry

    root = _root_without(tiny_root, tmp_path, "infinitetalk-multi")
    monkeypatch.setenv("MODEL_PATH", str(root))
    monkeypatch.setenv("MULTITALK_DTYPE", "fp32")
    monkeypatch.setenv("RUNPOD_LOG_LEVEL", "INFO")  # main() sets it when unset: restored after the test
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level("ERROR"), pytest.raises(SystemExit) as exit_:
        entry.main()
    assert exit_.value.code == 1
    assert any(r.getMessage().startswith(f"{code}: ") and words in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
