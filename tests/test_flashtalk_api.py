"""FlashTalk (``realtime``, issue 18) through the front ends: the worker's schema (model flashtalk, preset realtime,
what FlashTalk refuses, named as sent), its settings (MULTITALK_ADAPTERS=flashtalk, MULTITALK_PRESET), the model and
preset a job runs, refusals before any fetch, the result's time to first segment, the estimate's key, the CLI and the
client. Model-free and fast; the run on the tiny FlashTalk model is in test_flashtalk_e2e.py."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

import multitalk_serve.engine as engine
from media import write_audio
from multitalk_serve.demo_media import portrait
from multitalk_serve.engine import PRESETS, CheckpointError, ConfigError
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.estimate import JobTimer, TimingHistory, estimate_job, key_for
from multitalk_serve.worker.fitness import FLASHTALK_DIR, default_preset_for, plan_models
from multitalk_serve.worker.handler import Worker
from multitalk_serve.worker.response import JobOutput
from multitalk_serve.worker.schema import PRESET_NAMES, JobInput, describe_errors, json_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from client import build_parser as client_parser
from client import job_input

IMG, VID, A1, A2 = "https://e.com/face.png", "https://e.com/talk.mp4", "https://e.com/a.wav", "https://e.com/b.wav"
NEVER = "https://unfetchable.invalid/x"  # E_DOWNLOAD if a test's job were fetched


def parse(**kwargs) -> JobInput:
    return JobInput.model_validate(kwargs)


def error(**kwargs) -> str:
    with pytest.raises(ValidationError) as exc:
        JobInput.model_validate(kwargs)
    return describe_errors(exc.value)


# --- schema ---------------------------------------------------------------------------------------------------
def test_flashtalk_and_realtime_are_accepted():
    assert parse(image=IMG, audio=A1, model="flashtalk").model == "flashtalk"
    job = parse(image=IMG, audio=A1, preset="realtime")
    assert (job.preset, job.model) == ("realtime", None)  # the worker resolves the model (flashtalk)
    job = parse(image=IMG, audio=A1, model="flashtalk", preset="realtime", sampling_steps=2, shift=3.0)
    assert (job.sampling_steps, job.shift) == (2, 3.0)  # steps and shift stay the caller's to choose
    # guidance named at its only value is fine; nothing FlashTalk refuses is a default
    assert parse(image=IMG, audio=A1, model="flashtalk", text_guide_scale=1.0, sample_audio_guide_scale=1.0)
    assert parse(image=IMG, audio=[A1], preset="realtime", use_apg=False, cache_threshold=0.0)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"preset": "realtime", "model": "multitalk"}, "preset: realtime runs model flashtalk, and this job names "),
        ({"preset": "realtime", "model": "infinitetalk"}, "names model infinitetalk: drop one"),
        ({"model": "flashtalk", "preset": "quality"}, "preset: quality is for MultiTalk and InfiniteTalk; FlashTalk"),
        ({"model": "flashtalk", "preset": "fast"}, "use preset realtime, or leave preset out"),
        ({"model": "flashtalk", "turbo": True}, "turbo: means preset fast; FlashTalk runs preset realtime"),
        ({"preset": "realtime", "resolution": "720p"}, "resolution: FlashTalk makes about 768x448"),
        ({"preset": "realtime", "text_guide_scale": 5.0}, "text_guide_scale: FlashTalk runs without guidance"),
        ({"model": "flashtalk", "sample_text_guide_scale": 3.0}, "sample_text_guide_scale: FlashTalk runs without"),
        ({"model": "flashtalk", "audio_guide_scale": 2.0}, "audio_guide_scale: FlashTalk runs without guidance (one"),
        ({"model": "flashtalk", "sample_audio_guide_scale": 4.5}, "it takes only 1, got 4.5"),
        ({"model": "flashtalk", "use_apg": True}, "use_apg: FlashTalk runs without guidance, so APG does not apply"),
        ({"preset": "realtime", "cache_threshold": 0.2}, "cache_threshold: step caching is not available with Flash"),
    ],
)
def test_what_flashtalk_cannot_do_is_refused_naming_the_field(given, message):
    text = error(image=IMG, audio=A1, **given)
    assert message in text, text


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"video_url": VID, "audio": A1}, "video_url: FlashTalk animates an image; a video needs model infinitetalk"),
        ({"cond_video": VID, "cond_audio": {"person1": A1}}, "cond_video: FlashTalk animates an image"),
        ({"image": IMG, "audio": [A1, A2]}, "audio[1]: FlashTalk animates one speaker and this job has 2 audio"),
        ({"image": IMG, "left_audio": A1, "right_audio": A2}, "right_audio: FlashTalk animates one speaker"),
        ({"image": IMG, "cond_audio": {"person1": A1, "person2": A2}}, "cond_audio.person2: FlashTalk animates one"),
        ({"image": IMG, "audio": [A1, None]}, "audio[1]: FlashTalk animates one speaker"),
    ],
)
@pytest.mark.parametrize("names", [{"model": "flashtalk"}, {"preset": "realtime"}])
def test_a_video_or_two_speakers_are_refused_naming_the_field(given, message, names):
    text = error(**given, **names)
    assert message in text, text


def test_every_problem_is_named_at_once():
    text = error(image=IMG, audio=[A1, A2], model="flashtalk", text_guide_scale=5.0, use_apg=True)
    assert "audio[1]: FlashTalk" in text and "text_guide_scale: " in text and "use_apg: " in text, text


def test_the_published_schema_offers_realtime_and_flashtalk():
    properties = json_schema()["properties"]
    assert any("realtime" in choice.get("enum", []) for choice in properties["preset"]["anyOf"])
    assert any("flashtalk" in choice.get("enum", []) for choice in properties["model"]["anyOf"])
    published = json.loads((Path(__file__).parents[1] / "docs/schema/job_input.schema.json").read_text())
    assert published == json_schema()


def test_every_front_end_offers_the_engines_presets():
    from multitalk_serve.cli import build_parser

    generate = next(a for a in build_parser()._actions if a.dest == "verb").choices["generate"]
    cli = next(a for a in generate._actions if a.dest == "preset")
    client = next(a for a in client_parser()._actions if a.dest == "preset")
    assert set(PRESET_NAMES) == set(PRESETS) == set(cli.choices) == set(client.choices)
    assert "realtime" in PRESETS and PRESETS["realtime"].model == "flashtalk"


def test_the_client_passes_preset_and_model():
    args = client_parser().parse_args(
        ["--endpoint", "http://x", "--image", IMG, "--audio", A1, "--out", "o.mp4", "--preset", "realtime"]
    )
    assert job_input(args)["preset"] == "realtime" and "model" not in job_input(args)
    args = client_parser().parse_args(
        ["--endpoint", "http://x", "--image", IMG, "--audio", A1, "--out", "o.mp4", "--model", "flashtalk"]
    )
    assert job_input(args)["model"] == "flashtalk"


# --- settings: a FlashTalk worker ---------------------------------------------------------------------------------
def test_settings_from_the_environment(monkeypatch):
    for name in ("MULTITALK_PRESET", "MULTITALK_WINDOW_FRAMES", "MULTITALK_ADAPTERS"):
        monkeypatch.delenv(name, raising=False)
    config = WorkerConfig()
    assert (config.preset, config.window_frames) == (None, None)  # the model's: realtime / 33 for FlashTalk
    monkeypatch.setenv("MULTITALK_PRESET", " Realtime ")
    monkeypatch.setenv("MULTITALK_ADAPTERS", "flashtalk")
    monkeypatch.setenv("MULTITALK_WINDOW_FRAMES", "17")
    config = WorkerConfig()
    assert (config.preset, config.adapters, config.window_frames) == ("realtime", ("flashtalk",), 17)


def test_the_default_preset_fits_the_model():
    assert default_preset_for("flashtalk") == "realtime"
    assert default_preset_for("multitalk") == default_preset_for("infinitetalk") == "quality"
    assert default_preset_for("flashtalk", "realtime") == "realtime"
    assert default_preset_for("multitalk", "fast") == "fast"
    assert default_preset_for("multitalk", "ludicrous") == "ludicrous"  # the speed policy names it (one check)
    with pytest.raises(ConfigError, match=r"^MULTITALK_PRESET=quality does not fit this worker's model flashtalk"):
        default_preset_for("flashtalk", "quality")
    with pytest.raises(ConfigError, match=r"^MULTITALK_PRESET=realtime runs model flashtalk, but this worker's model"):
        default_preset_for("infinitetalk", "realtime")


@pytest.fixture
def flashtalk_root(tiny_root, tmp_path) -> Path:
    """The tiny model folder (linked, without its FlashTalk) with a stand-in FlashTalk folder: only the files that
    make the loader find it, so the start-up checks before loading can be tested on it."""
    root = tmp_path / "models"
    root.mkdir()
    for entry in tiny_root.iterdir():
        if entry.name != FLASHTALK_DIR:
            (root / entry.name).symlink_to(entry)
    (root / FLASHTALK_DIR).mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors.index.json"):  # what finds it (headers only)
        (root / FLASHTALK_DIR / name).write_text("{}")
    return root


def test_plan_models_holds_flashtalk_alone(flashtalk_root):
    def plan(root=flashtalk_root, **kw):
        return plan_models(WorkerConfig(model_path=root, s3=None, **{"model": None, "adapters": None, **kw}))

    assert plan(adapters=("flashtalk",)) == (["flashtalk"], "flashtalk")
    assert plan(model="flashtalk") == (["flashtalk"], "flashtalk")  # MULTITALK_MODEL=flashtalk alone is enough
    held, default = plan()  # not asked for: the folder's other adapters, as before
    assert "flashtalk" not in held and default == "multitalk"
    with pytest.raises(ConfigError, match=r"^MULTITALK_ADAPTERS: flashtalk is a transformer of its own .* with multi"):
        plan(adapters=("multitalk", "flashtalk"))
    with pytest.raises(ConfigError, match=r"^MULTITALK_MODEL is multitalk, but this worker holds only flashtalk"):
        plan(adapters=("flashtalk",), model="multitalk")
    with pytest.raises(
        ConfigError, match=r"MULTITALK_ADAPTERS: flash is not an audio adapter; choose from .*flashtalk"
    ):
        plan(adapters=("flash",))
    without = flashtalk_root.parent / "without"
    without.mkdir()
    for entry in flashtalk_root.iterdir():
        if entry.name != FLASHTALK_DIR:
            (without / entry.name).symlink_to(entry.resolve())
    with pytest.raises(
        CheckpointError, match=rf"names flashtalk, whose weights are not in .*{FLASHTALK_DIR}/ \(config"
    ):
        plan(root=without, adapters=("flashtalk",))


def test_a_preset_that_does_not_fit_fails_the_start_before_loading(tiny_root, tmp_path):
    config = {"model_path": tiny_root, "volume_path": tmp_path / "none", "s3": None, "device": "cpu"}
    with pytest.raises(ConfigError, match=r"MULTITALK_PRESET=realtime runs model flashtalk"):
        Worker.from_config(WorkerConfig(**config, preset="realtime"))


def test_a_flashtalk_worker_checks_its_settings_at_start_before_loading(flashtalk_root, tmp_path):
    def start(**kw):
        base = {"model_path": flashtalk_root, "volume_path": tmp_path / "none", "s3": None, "device": "cpu"}
        return Worker.from_config(WorkerConfig(**base, adapters=("flashtalk",), **kw))

    with pytest.raises(ConfigError, match=r"^MULTITALK_PRESET=fast does not fit this worker's model flashtalk"):
        start(preset="fast")
    with pytest.raises(ConfigError, match=r"MULTITALK_WINDOW_FRAMES / .*: frames_per_clip must be at most 200"):
        start(window_frames=205)  # FlashTalk's 8 s audio cache
    with pytest.raises(ConfigError, match=r"MULTITALK_WINDOW_FRAMES / .*: motion_frames must be 4k\+1 and shorter"):
        start(motion_frames=33)  # FlashTalk's window is 33 frames


def _stub_worker(held: list[str], default: str | None = None, **config) -> Worker:
    pipeline = SimpleNamespace(
        device=torch.device("cpu"), adapters=held, speed_lora=None, speed_lora_fused=False, memory_plan=None,
        attention_backend="native",
    )  # fmt: skip
    return Worker(pipeline, WorkerConfig(s3=None, volume_path=Path("/nonexistent"), **config), default_model=default)


def test_a_flashtalk_worker_defaults_to_flashtalk_and_realtime():
    worker = _stub_worker(["flashtalk"])
    assert (worker.default_model, worker.default_preset) == ("flashtalk", "realtime")
    assert (worker.health()["default_preset"], worker.health()["models"]) == ("realtime", ["flashtalk"])
    other = _stub_worker(["multitalk", "infinitetalk-single"])
    assert (other.default_model, other.default_preset) == ("multitalk", "quality")


@pytest.mark.parametrize(
    ("given", "options"),
    [
        ({}, {"model": "flashtalk", "steps": 4, "text_scale": 1.0, "audio_scale": 1.0, "shift": 5.0}),
        ({"model": "flashtalk"}, {"model": "flashtalk", "steps": 4, "cache_threshold": 0.0, "speed_lora": False}),
        ({"preset": "realtime", "sampling_steps": 2}, {"model": "flashtalk", "steps": 2, "use_apg": False}),
        ({"shift": 3.0, "text_guide_scale": 1.0}, {"shift": 3.0, "text_scale": 1.0}),
    ],
)
def test_the_options_a_flashtalk_job_runs(given, options):
    worker = _stub_worker(["flashtalk"])
    run, preset = worker._options(JobInput.model_validate({"image": IMG, "audio": A1, **given}), [])
    assert preset == "realtime"
    assert {k: getattr(run, k) for k in options} == options


def test_a_negative_prompt_is_reported_unused():
    warnings: list[str] = []
    _stub_worker(["flashtalk"])._options(
        JobInput.model_validate({"image": IMG, "audio": A1, "negative_prompt": "x"}), warnings
    )
    assert any(w.startswith("negative_prompt: FlashTalk runs without guidance") for w in warnings), warnings


@pytest.mark.parametrize(
    ("held", "given", "message"),
    [
        (
            ["multitalk", "infinitetalk-single", "infinitetalk-multi"],
            {"model": "flashtalk"},
            "E_INPUT: model: flashtalk is not held by this worker; it holds multitalk, infinitetalk-single, "
            "infinitetalk-multi (MULTITALK_ADAPTERS)",
        ),
        (
            ["multitalk"],
            {"preset": "realtime"},
            "E_INPUT: model (not given; preset realtime runs flashtalk): flashtalk is not held by this worker; it "
            "holds multitalk",
        ),
        (["flashtalk"], {"model": "multitalk"}, "E_INPUT: model: multitalk is not held by this worker; it holds flash"),
        (
            ["flashtalk"],
            {"model": "infinitetalk"},
            "E_INPUT: model: infinitetalk with 1 speaker(s) (infinitetalk-single) is not held by this worker; it "
            "holds flashtalk",
        ),
        (
            ["flashtalk"],
            {"image": None, "video": NEVER},
            "E_INPUT: model (not given; video needs InfiniteTalk): infinitetalk with 1 speaker(s) (infinitetalk-single)"
            " is not held by this worker; it holds flashtalk",
        ),
        (
            ["flashtalk"],
            {"audio": [NEVER, NEVER]},
            "E_INPUT: audio[1]: FlashTalk animates one speaker and this job has 2 audio tracks; two speakers need "
            "model multitalk or infinitetalk (a worker that holds it); this worker holds only flashtalk (MULTITALK_ADAPTERS)",
        ),
        (["flashtalk"], {"preset": "quality"}, "E_INPUT: preset: quality is for MultiTalk and InfiniteTalk"),
        (["flashtalk"], {"turbo": True}, "E_INPUT: turbo: means preset fast; FlashTalk runs preset realtime"),
        (["flashtalk"], {"text_guide_scale": 5.0}, "E_INPUT: text_guide_scale: FlashTalk runs without guidance"),
        (["flashtalk"], {"cache_threshold": 0.2}, "E_INPUT: cache_threshold: step caching is not available"),
        (["flashtalk"], {"resolution": "720p"}, "E_INPUT: resolution: FlashTalk makes about 768x448"),
        (
            ["flashtalk"],
            {"model": "flashtalk", "right_audio": NEVER, "left_audio": NEVER, "audio": None},
            "E_INPUT: input: right_audio: FlashTalk animates one speaker",
        ),
    ],
)
def test_refused_before_any_fetch(held, given, message):
    job = {"image": NEVER, "audio": NEVER, **given}
    out = _stub_worker(held).run({"id": "j", "input": {k: v for k, v in job.items() if v is not None}})
    assert out["error"].startswith(message), out


# --- the result: time to first segment, the estimate ----------------------------------------------------------
class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_time_to_first_segment_is_the_first_delivery_after_the_jobs_start():
    clock = Clock(12.5)
    timer = JobTimer(TimingHistory(None), "cpu", "all resident", None, started=10.0, clock=clock)
    assert "first_segment_s" not in timer.result()  # no segment: absent
    timer.on_delivered()
    clock.t = 14.0
    timer.on_delivered()
    out = timer.result()
    assert out["first_segment_s"] == 2.5 and out["gpu_seconds"] == 4.0
    assert JobOutput.model_json_schema()["properties"]["first_segment_s"]


def test_a_flashtalk_window_has_its_own_timing_key():
    plan = SimpleNamespace(
        windows=10, frames=280, height=768, width=448, steps=4, passes=1, frames_per_clip=33, model="flashtalk",
        speakers=1, resume_from=0, speed_lora=False, cache_threshold=0.0,
    )  # fmt: skip
    key = key_for(plan, "NVIDIA H100 80GB HBM3", "bf16")
    assert (key.tokens, key.forwards) == (9 * 48 * 28, 4) and "|flashtalk|" in key.id
    history = TimingHistory(None)
    other = SimpleNamespace(**{**vars(plan), "model": "infinitetalk-single", "frames_per_clip": 81, "passes": 3})
    history.record(key_for(other, "NVIDIA H100 80GB HBM3", "bf16"), [30.0, 30.0])
    assert estimate_job(history, plan, key) is None  # never scaled from another model's windows
    history.record(key, [1.5, 1.5, 1.5])
    assert estimate_job(history, plan, key).per_window_s == pytest.approx(1.5)


# --- the CLI ----------------------------------------------------------------------------------------------------
class FakePipe:
    """Stands in for MultiTalkPipeline: records the load and the job."""

    memory_plan = None
    attention_backend = "native"
    loads: list[dict] = []
    jobs: list[dict] = []

    @classmethod
    def from_pretrained(cls, model_dir, **kwargs):
        cls.loads.append({"model": model_dir, **kwargs})
        return cls()

    def generate(self, image, audio, prompt, output, *, options, **kwargs):
        FakePipe.jobs.append({"options": options})
        Path(output).write_bytes(b"\x00\x00\x00\x18ftypmp42 finished video")
        opts = options.resolved()
        return engine.GenerationResult(
            video_path=Path(output), frames=25, seconds=1.0, width=448, height=768, seed=opts.seed, speakers=1,
            clips=1, options=asdict(opts), timings={"total": 0.1}, model=opts.model,
        )  # fmt: skip


class NoLoad(FakePipe):
    @classmethod
    def from_pretrained(cls, model_dir, **kwargs):
        raise AssertionError("the models must not load for this")


@pytest.fixture
def media(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    portrait().save(folder / "face.png")
    (tmp_path / "model").mkdir()
    return {
        "image": folder / "face.png",
        "a": write_audio(folder / "a.wav", 1.0),
        "b": write_audio(folder / "b.wav", 1.0),
        "model": tmp_path / "model",
        "out": tmp_path / "o.mp4",
    }


def cli(capsys, media, *argv) -> tuple[int, str, str]:
    from multitalk_serve.cli import main

    base = ["--model", media["model"], "--image", media["image"], "--prompt", "a person", "--out", media["out"]]
    code = main(["generate", *map(str, base), "--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "realtime", "--model-name", "multitalk"], "--preset realtime runs --model-name flashtalk, not m"),
        (["--model-name", "flashtalk", "--preset", "fast"], "--preset fast is for MultiTalk and InfiniteTalk"),
        (["--preset", "realtime", "--audio", "B"], "--audio: FlashTalk animates one speaker and this job has 2 audio"),
        (["--preset", "realtime", "--resolution", "720p"], "--resolution: FlashTalk makes about 768x448"),
        (["--model-name", "flashtalk", "--text-scale", "5"], "--text-scale: FlashTalk runs without guidance (one"),
        (["--preset", "realtime", "--audio-scale", "2"], "--audio-scale: FlashTalk runs without guidance"),
        (["--preset", "realtime", "--apg"], "--apg: FlashTalk runs without guidance, so APG does not apply"),
        (["--preset", "realtime", "--cache-threshold", "0.2"], "--cache-threshold: step caching is not available"),
        (["--preset", "realtime", "--speed-lora", "x.safetensors"], "--speed-lora: FlashTalk is step-distilled"),
    ],
)
def test_cli_refuses_what_flashtalk_cannot_do_before_loading(argv, message, media, capsys, monkeypatch):
    monkeypatch.setattr(engine, "MultiTalkPipeline", NoLoad)
    argv = [media["b"] if a == "B" else a for a in argv]
    code, _, err = cli(capsys, media, "--audio", media["a"], *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [["--preset", "realtime"], ["--model-name", "flashtalk"]])
def test_cli_realtime_runs_flashtalk(argv, media, capsys, monkeypatch):
    FakePipe.loads, FakePipe.jobs = [], []
    monkeypatch.setattr(engine, "MultiTalkPipeline", FakePipe)
    code, out, err = cli(capsys, media, "--audio", media["a"], *argv, "--text-scale", "1")
    assert code == 0, err
    assert FakePipe.loads[0]["adapters"] == ["flashtalk"] and FakePipe.loads[0]["speed"].speed_lora is None
    options = FakePipe.jobs[0]["options"]
    assert (options.model, options.steps, options.text_scale, options.audio_scale, options.shift) == (
        "flashtalk", 4, 1.0, 1.0, 5.0,
    )  # fmt: skip
    summary = json.loads(out)
    assert (summary["preset"], summary["model"]) == ("realtime", "flashtalk")


def test_cli_names_the_json_field_that_gave_a_video(media, tmp_path, capsys, monkeypatch):
    from media import write_video
    from multitalk_serve.cli import main

    monkeypatch.setattr(engine, "MultiTalkPipeline", NoLoad)
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "talk.mp4", 0.4)
    job = {"prompt": "a man talks", "cond_video": "talk.mp4", "cond_audio": {"person1": str(media["a"])}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code = main(["generate", "--model", str(media["model"]), "--input-json", "job.json", "--preset", "realtime"])
    err = capsys.readouterr().err
    assert code == 2 and "cond_video: FlashTalk animates an image" in err, err
