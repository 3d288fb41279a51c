"""The CLI as a newcomer meets it (issue 12): mistakes found before any model loads, the official example JSON
files, a video never lost at the end, the length cap, the fast preset's LoRA, progress, quiet start, small
inconsistencies. The models are replaced by a stand-in that records what it was asked: these tests take seconds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import multitalk_serve.engine as engine
from media import write_audio
from multitalk_serve.cli import build_parser, main
from multitalk_serve.demo_media import portrait

MODEL_FREE = "the models must not load for this"


class FakePipe:
    """Stands in for MultiTalkPipeline: records the load and the job, writes a small file as the video."""

    memory_plan = None
    attention_backend = "native"
    loads: list[dict] = []
    jobs: list[dict] = []
    on_generate = None  # called with the output path, e.g. to break the output folder mid-job

    @classmethod
    def from_pretrained(cls, model_dir, **kwargs):
        cls.loads.append({"model": model_dir, **kwargs})
        return cls()

    def generate(self, image, audio, prompt, output, *, boxes, options, callback, thumbnail, mask_preview_path):
        FakePipe.jobs.append(
            {"image": image, "audio": audio, "prompt": prompt, "output": output, "boxes": boxes, "options": options}
        )
        Path(output).write_bytes(b"\x00\x00\x00\x18ftypmp42 finished video")
        if FakePipe.on_generate is not None:
            FakePipe.on_generate(Path(output))
        opts = options.resolved()
        h, w = opts.size or (448, 896)
        frames = opts.num_frames or 25
        return engine.GenerationResult(
            video_path=Path(output),
            frames=frames,
            seconds=frames / 25,
            width=w,
            height=h,
            seed=opts.seed,
            speakers=len(audio),
            clips=1,
            options=asdict(opts),
            timings={"total": 0.1},
        )


class NoLoad(FakePipe):
    @classmethod
    def from_pretrained(cls, model_dir, **kwargs):
        raise AssertionError(MODEL_FREE)


@pytest.fixture
def fake_pipe(monkeypatch):
    FakePipe.loads, FakePipe.jobs, FakePipe.on_generate = [], [], None
    monkeypatch.setattr(engine, "MultiTalkPipeline", FakePipe)
    return FakePipe


@pytest.fixture
def no_load(monkeypatch):
    monkeypatch.setattr(engine, "MultiTalkPipeline", NoLoad)


@pytest.fixture
def media(tmp_path) -> dict[str, Path]:
    """A two-person picture (768 x 512), two voices, an mp3, a text file, a model folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    portrait().save(folder / "two.png")
    (folder / "notes.txt").write_text("not audio, not an image")
    (tmp_path / "model").mkdir()
    return {
        "image": folder / "two.png",
        "a": write_audio(folder / "a.wav", 1.0),
        "b": write_audio(folder / "b.wav", 1.0),
        "mp3": write_audio(folder / "c.mp3", 1.0),
        "long": write_audio(folder / "long.wav", 6.0),
        "text": folder / "notes.txt",
        "model": tmp_path / "model",
    }


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["generate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def base(media, out) -> list:
    return ["--model", media["model"], "--prompt", "two people talk", "--out", out, "--quiet"]


# --- 1, 2: every mistake before loading, in under a second ------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing image", "--image: no such file"),
        ("mp3 as image", "--image: not a readable image"),
        ("three audio files", "--audio: MultiTalk takes 1 or 2 speakers, got 3 audio tracks"),
        ("box outside", "--box (person 2): x 400..900, y 0..500 is outside the 768x512 image"),
        ("text as audio", "--audio (speaker 2): cannot open as audio"),
        ("missing audio", "--audio (speaker 1): no such file"),
        ("missing output folder", "--out: the folder"),
        ("output is a folder", "is a folder"),
        ("output not mp4", "--out: "),
        ("one box", "--box: two speakers need two boxes, got 1 box"),
        ("boxes for one speaker", "--box: person boxes are for two speakers, and 1 audio track was given"),
        ("steps over the bound", "steps must be 1..100"),
        ("size not 16", "size must be (height, width), multiples of 16"),
        ("missing preview folder", "--mask-preview: the folder"),
    ],
)
def test_mistakes_fail_in_under_a_second_without_loading_models(case, expected, media, tmp_path, capsys, no_load):
    m = media
    out = tmp_path / "o.mp4"
    two = ["--image", m["image"], "--audio", m["a"], "--audio", m["b"]]
    args = {
        "missing image": ["--image", tmp_path / "nope.png", "--audio", m["a"]],
        "mp3 as image": ["--image", m["mp3"], "--audio", m["a"]],
        "three audio files": [*two, "--audio", m["mp3"]],
        "box outside": [*two, "--box", "0,0,300,500", "--box", "400,0,900,500"],
        "text as audio": ["--image", m["image"], "--audio", m["a"], "--audio", m["text"]],
        "missing audio": ["--image", m["image"], "--audio", tmp_path / "gone.wav"],
        "missing output folder": [*two],
        "output is a folder": [*two],
        "output not mp4": [*two],
        "one box": [*two, "--box", "0,0,300,500"],
        "boxes for one speaker": ["--image", m["image"], "--audio", m["a"], "--box", "0,0,9,9", "--box", "9,0,19,9"],
        "steps over the bound": [*two, "--steps", "100", "--text-scale", "-1"],
        "size not 16": [*two, "--size", "100x200"],
        "missing preview folder": [*two, "--mask-preview", tmp_path / "no" / "m.png"],
    }[case]
    if case == "missing output folder":
        out = tmp_path / "not-made-yet" / "o.mp4"
    elif case == "output is a folder":
        out = tmp_path
    elif case == "output not mp4":
        out = tmp_path / "o.png"
    if case == "steps over the bound":  # the option's own bound is the engine's, checked by argparse
        with pytest.raises(SystemExit):
            main(["generate", *map(str, base(media, out)), *map(str, [*two, "--steps", "101"])])
        assert "1..100" in capsys.readouterr().err
        from multitalk_serve.engine import GenerateOptions, InputError

        with pytest.raises(InputError, match=expected):
            GenerateOptions(steps=101).validate()
        return
    start = time.perf_counter()
    code, _, err = run(capsys, *base(media, out), *args)
    seconds = time.perf_counter() - start
    assert code == 2 and expected in err, err
    assert "Traceback" not in err and MODEL_FREE not in err
    assert seconds < 1.0, f"{case}: {seconds:.2f} s"


def test_boxes_in_the_official_order_get_a_hint(media, tmp_path, capsys, no_load):
    # person 2 on the right of the 768 x 512 picture, written y first as the official bbox: rows 0..500, columns
    # 400..700; read x first, row 700 is below the picture
    code, _, err = run(
        capsys,
        *base(media, tmp_path / "o.mp4"),
        *["--image", media["image"], "--audio", media["a"], "--audio", media["b"]],
        *["--box", "0,30,500,330", "--box", "0,400,500,700"],
    )
    assert code == 2 and "--box (person 2)" in err and "read y first" in err and "swap" in err


def test_official_bbox_read_the_wrong_way_gets_the_opposite_hint():
    box = engine.Box.from_official([30, 40, 270, 320])  # y first: fits a 768 x 512 image
    box.validate(768, 512)
    wrong = engine.Box.from_official([330, 40, 570, 320])  # x first in an official bbox: column 570 read as a row
    with pytest.raises(engine.ImageInputError, match="read x first it would fit"):
        wrong.validate(768, 512, "bbox.person2")


def test_a_finished_video_is_never_lost(media, tmp_path, capsys, fake_pipe):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    fake_pipe.on_generate = lambda _video: shutil.rmtree(out_dir)  # the folder vanishes while the job runs
    code, _, err = run(capsys, *base(media, out_dir / "o.mp4"), "--image", media["image"], "--audio", media["a"])
    assert code == 1 and "--out: could not write" in err and "the finished video is kept at" in err
    kept = Path(err.split("kept at ")[1].strip())
    assert kept.read_bytes().endswith(b"finished video")
    shutil.rmtree(kept.parent)


def test_the_video_lands_where_asked(media, tmp_path, capsys, fake_pipe):
    out = tmp_path / "o.mp4"
    code, stdout, _ = run(capsys, *base(media, out), "--image", media["image"], "--audio", media["a"])
    assert code == 0 and out.read_bytes().endswith(b"finished video")
    assert json.loads(stdout)["video"] == str(out)
    assert fake_pipe.jobs[0]["output"] != out  # written elsewhere, moved at the end


# --- 3: the official JSON files ---------------------------------------------------------------------------------
def _official_tree(media, root: Path) -> Path:
    """A folder shaped like the official repository: examples/*.json with paths relative to the root."""
    pictures = root / "examples" / "multi" / "1"
    pictures.mkdir(parents=True)
    shutil.copy(media["image"], pictures / "multi1.png")
    shutil.copy(media["a"], pictures / "1.WAV")
    shutil.copy(media["b"], pictures / "2.WAV")
    spec = {
        "prompt": "A man and a woman talk in a car.",
        "cond_image": "examples/multi/1/multi1.png",
        "audio_type": "add",
        "cond_audio": {"person1": "examples/multi/1/1.WAV", "person2": "examples/multi/1/2.WAV"},
        "bbox": {"person1": [30, 20, 480, 360], "person2": [30, 400, 480, 740]},
    }
    (root / "examples" / "multitalk_example_1.json").write_text(json.dumps(spec, indent=4))
    tts = {
        "prompt": "x",
        "cond_image": "examples/multi/1/multi1.png",
        "audio_type": "para",
        "tts_audio": {"text": "(s1) hello (s2) hi", "human1_voice": "weights/Kokoro-82M/voices/af_heart.pt"},
        "cond_audio": {},
    }
    (root / "examples" / "multitalk_example_tts_1.json").write_text(json.dumps(tts, indent=4))
    return root / "examples" / "multitalk_example_1.json"


def test_official_json_runs_unchanged_from_the_repository_root(media, tmp_path, capsys, fake_pipe, monkeypatch):
    spec = _official_tree(media, tmp_path / "MultiTalk")
    monkeypatch.chdir(tmp_path / "MultiTalk")
    code, stdout, err = run(
        capsys, "--model", media["model"], "--input-json", "examples/multitalk_example_1.json", "--steps", "3"
    )
    assert code == 0, err
    job = fake_pipe.jobs[0]
    root = tmp_path / "MultiTalk"
    assert Path(job["image"]) == root / "examples/multi/1/multi1.png"
    assert [Path(a) for a in job["audio"]] == [root / "examples/multi/1/1.WAV", root / "examples/multi/1/2.WAV"]
    assert job["prompt"] == "A man and a woman talk in a car."
    # bbox [y_min, x_min, y_max, x_max] -> Box(x_min, y_min, x_max, y_max)
    assert job["boxes"] == [engine.Box(20, 30, 360, 480), engine.Box(400, 30, 740, 480)]
    assert job["options"].audio_type == "add" and job["options"].steps == 3
    assert json.loads(stdout)["video"] == "multitalk_example_1.mp4" and (root / "multitalk_example_1.mp4").exists()
    assert spec.exists()


def test_official_json_paths_fall_back_to_the_files_folder(media, tmp_path, capsys, fake_pipe, monkeypatch):
    spec = _official_tree(media, tmp_path / "MultiTalk")
    # paths relative to the JSON's folder: move the media next to it
    shutil.move(tmp_path / "MultiTalk/examples/multi", tmp_path / "MultiTalk/examples/examples-copy")
    data = json.loads(spec.read_text())
    data["cond_image"] = "examples-copy/1/multi1.png"
    data["cond_audio"] = {"person1": "examples-copy/1/1.WAV", "person2": "None"}
    spec.write_text(json.dumps(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "x.mp4"
    code, _, err = run(capsys, "--model", media["model"], "--input-json", spec, "--out", out, "--size", "256x384")
    assert code == 0, err
    job = fake_pipe.jobs[0]
    assert Path(job["image"]) == spec.parent / "examples-copy/1/multi1.png"
    assert job["audio"][1] is None and job["options"].size == (256, 384) and out.exists()


def test_official_json_errors_name_the_field_as_written(media, tmp_path, capsys, no_load, monkeypatch):
    spec = _official_tree(media, tmp_path / "MultiTalk")
    monkeypatch.chdir(tmp_path / "MultiTalk")
    data = json.loads(spec.read_text())
    data["cond_image"] = "examples/multi/1/missing.png"
    spec.write_text(json.dumps(data))
    code, _, err = run(capsys, "--model", media["model"], "--input-json", spec)
    assert code == 2 and "cond_image: examples/multi/1/missing.png not found" in err and "current folder" in err
    data["cond_image"] = "examples/multi/1/multi1.png"
    data["cond_audio"]["person2"] = "examples/multi/1/multi1.png"  # a picture as a voice
    spec.write_text(json.dumps(data))
    code, _, err = run(capsys, "--model", media["model"], "--input-json", spec)
    assert code == 2 and "cond_audio.person2:" in err
    data["cond_audio"]["person2"] = "examples/multi/1/2.WAV"
    data["bbox"]["person2"] = [400, 30, 740, 480]  # x first in the official (y first) field
    spec.write_text(json.dumps(data))
    code, _, err = run(capsys, "--model", media["model"], "--input-json", spec)
    assert code == 2 and "bbox.person2:" in err and "read x first it would fit" in err


def test_official_tts_json_with_a_second_speaker_but_one_voice_is_refused(
    media, tmp_path, capsys, no_load, monkeypatch
):
    # text to speech runs (tests/test_tts.py); here the dialogue tags (s2) but only human1_voice is given
    _official_tree(media, tmp_path / "MultiTalk")
    monkeypatch.chdir(tmp_path / "MultiTalk")
    code, _, err = run(capsys, "--model", media["model"], "--input-json", "examples/multitalk_example_tts_1.json")
    assert code == 2 and "tts_audio.text: (s2) names speaker 2; with 1 voice(s) use (s1)" in err


def test_input_json_and_the_same_option_conflict(media, tmp_path, capsys, no_load, monkeypatch):
    spec = _official_tree(media, tmp_path / "MultiTalk")
    monkeypatch.chdir(tmp_path / "MultiTalk")
    code, _, err = run(capsys, "--model", media["model"], "--input-json", spec, "--image", media["image"])
    assert code == 2 and "--image and cond_image" in err


# --- 4: the length ------------------------------------------------------------------------------------------------
def test_max_duration_names_its_own_limit(media, tmp_path, capsys, no_load):
    code, _, err = run(
        capsys,
        *base(media, tmp_path / "o.mp4"),
        "--image",
        media["image"],
        "--audio",
        media["long"],
        "--max-duration",
        5,
    )
    assert code == 2 and "5 s limit" in err and "6 s limit" not in err and "--duration" in err


def test_duration_cuts_the_audio(media, tmp_path, capsys, fake_pipe):
    code, stdout, err = run(
        capsys, *base(media, tmp_path / "o.mp4"), "--image", media["image"], "--audio", media["long"], "--duration", 2
    )
    assert code == 0, err
    assert fake_pipe.jobs[0]["options"].num_frames == 50 and json.loads(stdout)["seconds"] == 2.0


def test_the_pipeline_names_the_cap_it_was_given(media):
    from multitalk_serve.engine import AudioError

    bare = engine.MultiTalkPipeline.__new__(engine.MultiTalkPipeline)  # the audio checks need no model
    with pytest.raises(AudioError, match=r"longer than the 5 s limit"):
        bare.prepare_audio([str(media["long"])], max_seconds=5)
    with pytest.raises(AudioError, match=r"longer than the 5 s limit"):
        bare.prepare(str(media["image"]), [str(media["long"])], "x", options=engine.GenerateOptions(max_duration_s=5))


# --- 5: the fast preset ---------------------------------------------------------------------------------------
def test_fast_preset_finds_the_lora_in_the_model_folder(media, tmp_path, capsys, fake_pipe):
    lora = media["model"] / "Lightx2v" / "lightx2v.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(b"stand-in")
    code, _, err = run(
        capsys, *base(media, tmp_path / "o.mp4"), "--image", media["image"], "--audio", media["a"], "--preset", "fast"
    )
    assert code == 0, err
    assert fake_pipe.loads[0]["speed"].speed_lora == lora


def test_fast_preset_without_a_lora_names_the_cli_option(media, tmp_path, capsys, no_load):
    code, _, err = run(
        capsys, *base(media, tmp_path / "o.mp4"), "--image", media["image"], "--audio", media["a"], "--preset", "fast"
    )
    assert code == 2 and "--speed-lora" in err and "MULTITALK_" not in err


# --- 6: progress ------------------------------------------------------------------------------------------------
class Ticks:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _one_clip_events(steps=4, latent=21):
    P = engine.Progress
    yield 0.0, P("audio")
    yield 1.0, P("conditioning", total_clips=1, total_steps=steps)
    yield 2.0, P("encoding", 1, 1, 0, steps, done=0, total=latent)
    yield 12.0, P("encoding", 1, 1, 0, steps, done=latent, total=latent)  # the encode took 10 s
    for i in range(1, steps + 1):
        yield 12.0 + 5 * i, P("sampling", 1, 1, i, steps)  # 5 s a step
    yield 32.0, P("decoding", 1, 1, steps, steps, done=0, total=latent)
    for k in range(1, latent + 1):
        yield 32.0 + k, P("decoding", 1, 1, steps, steps, done=k, total=latent)  # 1 s a latent frame
    yield 53.0, P("muxing", 1, 1, steps, steps)
    yield 53.5, P("done", 1, 1, steps, steps)


def test_eta_counts_the_vae_not_only_the_steps():
    """The job: 2 s set-up, 10 s encode, 4 steps of 5 s, 21 s decode. Counting steps alone (Progress.fraction),
    the estimate after the last step is 0 s left, while the decoder has 21 s (40 % of the job) to go."""
    ticks = Ticks()
    clock = engine.ProgressClock(now=ticks)
    seen = {}
    for t, event in _one_clip_events():
        ticks.t = t
        seen[(event.stage, event.step, event.done)] = clock.update(event)
        if event.stage == "sampling" and event.step == 4:
            assert event.fraction == 1.0  # what the old estimate went by
    fraction, left = seen[("sampling", 4, 0)]
    assert left == pytest.approx(20.0) and fraction == pytest.approx(32 / 52)  # decode guessed at 2x the encode
    fraction, left = seen[("decoding", 4, 7)]  # a third of the decode done: its own rate takes over
    assert left == pytest.approx(14.0)
    assert seen[("done", 4, 0)] == (1.0, 0.0)


def test_eta_of_a_second_clip_uses_the_measured_decode():
    ticks = Ticks()
    clock = engine.ProgressClock(now=ticks)
    P = engine.Progress
    events = [
        (0, P("encoding", 1, 2, 0, 2, 0, 21)),
        (10, P("encoding", 1, 2, 0, 2, 21, 21)),
        (15, P("sampling", 1, 2, 1, 2)),
        (20, P("sampling", 1, 2, 2, 2)),
        (20, P("decoding", 1, 2, 2, 2, 0, 21)),
        (50, P("encoding", 2, 2, 0, 2, 0, 21)),  # decode + colour + writing: 30 s
        (60, P("encoding", 2, 2, 0, 2, 21, 21)),
        (65, P("sampling", 2, 2, 1, 2)),
    ]
    for t, event in events:
        ticks.t = t
        fraction, left = clock.update(event)
    assert left == pytest.approx(5 + 30) and fraction == pytest.approx(65 / 100)


def test_progress_bar_shows_vae_progress_and_time_left():
    import io

    stream = io.StringIO()
    bar = __import__("multitalk_serve.cli", fromlist=["ProgressBar"]).ProgressBar(stream, log_every=0)
    ticks = Ticks()
    bar.clock.now, bar.clock.start = ticks, 0.0
    for t, event in _one_clip_events():
        ticks.t = t
        bar(event)
    text = stream.getvalue()
    assert "VAE encode condition frames 0/21" in text and "VAE decode frames 7/21" in text
    assert "step 4/4" in text and "~20s left" in text


def test_demo_script_says_what_it_is_doing():
    script = (Path(__file__).parent.parent / "scripts" / "demo.sh").read_text()
    for stage in ("setting up", "tiny models", "picture and two voices", "worker", "sending", "progress"):
        assert stage in script.lower(), stage


# --- 7: a quiet start -------------------------------------------------------------------------------------------
NOISE = ("_C_mxfp8", "Failed to load", "Detected no triton", "Enum subclass", "Unable to import `torchao` Tensor")


@pytest.mark.slow
def test_start_prints_no_library_noise(tmp_path):
    env_path = str(Path(__file__).parent.parent / "src")
    import os

    env = {**os.environ, "PYTHONPATH": env_path}
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING)\n"
        "import multitalk_serve.engine as e\n"
        "from multitalk_serve.engine.libraries import import_libraries\n"
        "import_libraries(); import torchao, diffusers.quantizers.torchao.torchao_quantizer\n"
        "logging.getLogger('torchao').warning('a real torchao warning')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [n for n in NOISE if n in done.stderr] == [], done.stderr
    assert "a real torchao warning" in done.stderr  # only the known lines are hidden
    help_run = subprocess.run(
        [sys.executable, "-m", "multitalk_serve.cli", "generate", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert help_run.returncode == 0 and [n for n in NOISE if n in help_run.stderr + help_run.stdout] == []


# --- 8: small inconsistencies -----------------------------------------------------------------------------------
def test_size_is_reported_in_the_order_it_is_given(media, tmp_path, capsys, fake_pipe):
    code, stdout, _ = run(
        capsys, *base(media, tmp_path / "o.mp4"), "--image", media["image"], "--audio", media["a"], "--size", "128x192"
    )
    summary = json.loads(stdout)
    assert code == 0 and summary["size"] == "128x192" and (summary["height"], summary["width"]) == (128, 192)
    assert "resolution" not in summary  # an explicit size is not the 480p bucket


def test_one_steps_bound_for_cli_engine_and_worker():
    from multitalk_serve.worker.schema import JobInput

    schema = JobInput.model_json_schema()["properties"]
    assert schema["sampling_steps"]["maximum"] == engine.MAX_STEPS
    engine.GenerateOptions(steps=engine.MAX_STEPS).validate()
    with pytest.raises(engine.InputError, match=f"1..{engine.MAX_STEPS}"):
        engine.GenerateOptions(steps=engine.MAX_STEPS + 1).validate()


def test_counts_are_spelt_right():
    from multitalk_serve.engine.pipeline.conditioning import person_masks

    with pytest.raises(engine.ImageInputError, match=r"got 1 box$"):
        person_masks(100, 200, [engine.Box(0, 0, 50, 50)], 2)


def test_help_names_docs_that_exist_and_has_no_rest_markup(capsys):
    root = Path(__file__).parent.parent
    for argv in ([], ["generate"]):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        text = capsys.readouterr().out
        assert "``" not in text and ":func:" not in text
        for doc in {w.strip("().,;:") for w in text.split() if w.strip("().,;:").startswith("docs/")}:
            assert (root / doc).is_file(), doc
    assert "README: Model folder" not in build_parser().format_help()


def test_single_speaker_preview_is_not_labelled_person_2_and_labels_are_readable():
    import torch

    from multitalk_serve.engine.pipeline.conditioning import mask_preview, person_masks

    image = torch.zeros(3, 128, 192)
    one = mask_preview(image, person_masks(128, 192, None, 1), speakers=1)
    pixels = np.asarray(one).reshape(-1, 3)
    blue = (pixels[:, 2] > 100) & (pixels[:, 0] < 60)
    assert not blue.any()  # person 2's colour is nowhere: one speaker, one region
    two = mask_preview(image, person_masks(128, 192, None, 2), speakers=2)
    plate = np.asarray(two).astype(int)
    # each label sits on a dark plate at least 10 px high at this small size
    rows = np.nonzero((plate.sum(axis=2) == 0).sum(axis=1) > 10)[0]
    assert len(rows) >= 10


def test_layout_table_says_the_q4_error_is_expected(monkeypatch, tmp_path, capsys):
    import types

    import multitalk_serve.cli as cli

    rows = [
        {"layout": n, "load_s": 0.1, "forward_s": 0.01, "shape": (1, 16), "max_abs_diff_vs_original": d}
        for n, d in (("original", 0.0), ("diffusers", 1e-6), ("gguf Q8_0", 0.02), ("gguf Q4_K_M", 1.01))
    ]
    fake = types.SimpleNamespace(compare_layouts=lambda root, speakers: rows)  # no model libraries to import
    monkeypatch.setitem(sys.modules, "multitalk_serve.forward_check", fake)
    (tmp_path / "TINY.json").write_text("{}")
    cli._show_layouts(tmp_path, 2)
    table = capsys.readouterr().out
    q4 = next(line for line in table.splitlines() if "Q4_K_M" in line)
    assert "1.01e+00" in q4 and "expected" in q4


def test_local_test_runs_do_not_overwrite_each_other():
    from multitalk_serve.worker.handler import job_id_of

    first, second = job_id_of({"id": "local_test"}), job_id_of({"id": "local_test"})
    assert first != second and first.startswith("local_test-")
    assert job_id_of({"id": "abc-123"}) == "abc-123"


def test_check_inputs_is_public_and_model_free(media):
    checked = engine.check_inputs(str(media["image"]), [str(media["a"]), None], "two people")
    assert (checked.width, checked.height, checked.speakers) == (768, 512, 2)
    assert checked.size == (512, 768) and checked.frames == 25
    image = Image.open(media["image"])
    assert image.size == (768, 512)


# --- 3, worker side: the official JSON sent as a job -----------------------------------------------------------
def test_worker_names_the_official_field_and_suggests_the_fix(tmp_path):
    from multitalk_serve.worker.config import WorkerConfig
    from multitalk_serve.worker.errors import WorkerError
    from multitalk_serve.worker.media import MediaFetcher
    from multitalk_serve.worker.schema import JobInput

    request = JobInput.model_validate(
        {
            "prompt": "x",
            "cond_image": "examples/multi/1/multi1.png",
            "audio_type": "add",
            "cond_audio": {"person1": "examples/multi/1/1.WAV", "person2": "None"},
        }
    )
    assert request.image_field == "cond_image" and request.audio_field(0) == "cond_audio.person1"
    fetcher = MediaFetcher(WorkerConfig(model_path=tmp_path, volume_path=tmp_path, s3=None), None)
    with pytest.raises(WorkerError) as caught:
        fetcher.fetch(request.image, request.image_field, "image")
    message = str(caught.value)
    assert "cond_image: examples/multi/1/multi1.png is a relative path" in message
    assert '{"path": "examples/multi/1/multi1.png"}' in message and str(tmp_path) in message
    assert JobInput.model_validate({"image": "a", "audio": ["b", "c"]}).audio_field(1) == "audio[1]"
    assert JobInput.model_validate({"image": "a", "audio_1": "b", "audio_2": "c"}).audio_field(1) == "audio_2"


def test_the_vae_reports_every_latent_frame():
    """Progress inside the long stages: the VAE calls back once per chunk of frames, encoding and decoding."""
    import torch
    from diffusers import AutoencoderKLWan

    from multitalk_serve.engine.models.encoders import WanVideoVAE

    torch.manual_seed(0)
    vae = WanVideoVAE(
        AutoencoderKLWan(
            base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
            temperal_downsample=[False, True, True], dropout=0.0,
        )
    )  # fmt: skip
    calls = []
    latent = vae.encode(torch.zeros(3, 9, 32, 32), progress=lambda done, total: calls.append(("encode", done, total)))
    assert latent.shape[1] == 3 and calls == [("encode", k, 3) for k in (1, 2, 3)]
    calls.clear()
    video = vae.decode(latent, progress=lambda done, total: calls.append(("decode", done, total)))
    assert video.shape[1] == 9 and calls == [("decode", k, 3) for k in (1, 2, 3)]
    vae.decode(latent)  # no callback, no hook left behind
    assert calls == [("decode", k, 3) for k in (1, 2, 3)]
