"""Text in, talking video out: Kokoro-82M (tiny, random weights, the published layout) -> speech -> the usual job.

The synthesiser runs from local files only (no Hub, no spaCy model download), the G2P is the production one
(misaki's English dictionaries over spaCy's rule-based tokenizer, espeak-ng for the rest)."""

from __future__ import annotations

import io
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline_stubs as stubs
from multitalk_serve import engine
from multitalk_serve.cli import main
from multitalk_serve.engine import (
    FPS,
    GenerateOptions,
    InputError,
    LanguageError,
    SpeakerTagError,
    SpeechRequest,
    SpeechSynthesizer,
    SpeechTooLongError,
    TextEmptyError,
    TextTooLongError,
    UnknownVoiceError,
    UnreadableTextError,
    VoiceFileError,
    inspect_kokoro,
)
from multitalk_serve.engine.pipeline.video import probe
from multitalk_serve.input_json import read_input_json

SMALL = {"size": (64, 96), "steps": 2, "seed": 3}
DIALOGUE = "(s1) do you know multi-talk? (s2) yes, I know it, that's amazing! (s1) Me too."
SINGLE = "Welcome to multi-talk, this is an audio-driven video generation model for multiple person."
# The official examples' tts_audio objects, unchanged (MeiGen-AI/MultiTalk examples/*_tts_1.json).
OFFICIAL_MULTI = {
    "text": DIALOGUE,
    "human1_voice": "weights/Kokoro-82M/voices/af_heart.pt",
    "human2_voice": "weights/Kokoro-82M/voices/am_adam.pt",
}
OFFICIAL_SINGLE = {"text": SINGLE, "human1_voice": "weights/Kokoro-82M/voices/af_heart.pt"}


@pytest.fixture(scope="module")
def no_hub():
    """Any Hub or spaCy download while Kokoro loads or speaks fails the test."""
    import huggingface_hub
    import kokoro.model
    import kokoro.pipeline
    import spacy.cli

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    for module in (huggingface_hub, kokoro.model, kokoro.pipeline):
        patch.setattr(module, "hf_hub_download", refuse)
    patch.setattr(spacy.cli, "download", refuse)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def synth(tiny_root, no_hub) -> SpeechSynthesizer:
    return SpeechSynthesizer.from_pretrained(tiny_root)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "ref.png"
    Image.fromarray(stubs.scenario_image()).save(path)
    return path


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767, w.getframerate()


# --- the layout and the model -------------------------------------------------------------------------------------
def test_tiny_kokoro_is_in_the_published_layout(tiny_root):
    folder = tiny_root / "Kokoro-82M"
    assert {p.name for p in folder.iterdir()} == {"config.json", "kokoro-v1_0.pth", "voices"}
    assert sorted(p.name for p in (folder / "voices").iterdir()) == ["af_heart.pt", "am_adam.pt"]
    state = torch.load(folder / "kokoro-v1_0.pth", weights_only=True)
    assert sorted(state) == ["bert", "bert_encoder", "decoder", "predictor", "text_encoder"]
    assert all(k.startswith("module.") for part in state.values() for k in part)
    voice = torch.load(folder / "voices" / "af_heart.pt", weights_only=True)
    assert voice.shape == (510, 1, 256) and voice.dtype == torch.float32
    config = json.loads((folder / "config.json").read_text())
    assert config["n_token"] == 178 and len(config["vocab"]) == 114 and config["vocab"]["ᵻ"] == 177
    assert (folder / "kokoro-v1_0.pth").stat().st_size < 2e6  # large tensors stored as views of short vectors
    assert inspect_kokoro(tiny_root) == []
    assert json.loads((tiny_root / "TINY.json").read_text())["kokoro"] == "Kokoro-82M"


def test_loads_and_speaks_from_local_files_only(synth):
    assert synth.voices == ["af_heart", "am_adam"]
    speech = synth.synthesize(SpeechRequest.from_text("Hello there.", "af_heart"))
    assert speech.rate == 24000 and len(speech.tracks) == 1 and 0.2 < speech.seconds < 5
    assert np.isfinite(speech.tracks[0]).all() and np.abs(speech.tracks[0]).max() > 0
    assert speech.turns[0].phonemes == "həlˈO ðˈɛɹ."  # misaki's dictionary reading


def test_a_broken_checkpoint_is_named(tiny_root, tmp_path):
    bad = tmp_path / "Kokoro-82M"
    shutil.copytree(tiny_root / "Kokoro-82M", bad)
    state = torch.load(bad / "kokoro-v1_0.pth", weights_only=True)
    del state["decoder"]["module.generator.conv_post.bias"]
    torch.save(state, bad / "kokoro-v1_0.pth")
    torch.save(torch.zeros(510, 256), bad / "voices" / "am_adam.pt")
    problems = inspect_kokoro(tmp_path)
    assert any("decoder does not match config.json" in p and "conv_post.bias" in p for p in problems), problems
    with pytest.raises(engine.CheckpointError, match=r"decoder does not match config\.json"):
        SpeechSynthesizer.from_pretrained(tmp_path)
    (bad / "kokoro-v1_0.pth").unlink()
    assert inspect_kokoro(tmp_path) == [f"kokoro: {bad / 'kokoro-v1_0.pth'} missing (hexgrad/Kokoro-82M)"]


# --- dialogue timing -----------------------------------------------------------------------------------------------
def test_dialogue_turns_are_silent_in_the_other_track(synth):
    speech = synth.synthesize(SpeechRequest.from_official(OFFICIAL_MULTI))
    first, second = speech.tracks
    assert len(first) == len(second) and speech.audio_type == "para"
    assert [t.speaker for t in speech.turns] == [0, 1, 0]
    assert [t.text for t in speech.turns] == ["do you know multi-talk?", "yes, I know it, that's amazing!", "Me too."]
    assert speech.turns[0].start_s == 0 and speech.turns[-1].end_s == pytest.approx(speech.seconds)
    for turn in speech.turns:
        a, b = round(turn.start_s * 24000), round(turn.end_s * 24000)
        talking, silent = (first, second) if turn.speaker == 0 else (second, first)
        assert not silent[a:b].any() and np.abs(talking[a:b]).max() > 0
    assert np.array_equal(speech.mixed, first + second)
    mixed, rate = read_wav(speech.wav())
    assert rate == 24000 and len(mixed) == len(first)
    tracks = [read_wav(w)[0] for w in speech.track_wavs()]
    assert [len(t) for t in tracks] == [len(first)] * 2


def test_the_voice_and_the_speed_change_the_speech(synth):
    text = "Me too, I think so."
    heart = synth.synthesize(SpeechRequest.from_text(text, "af_heart"))
    adam = synth.synthesize(SpeechRequest.from_text(text, "am_adam"))
    fast = synth.synthesize(SpeechRequest.from_text(text, "af_heart", speed=2.0))
    assert not np.array_equal(heart.tracks[0][:1000], adam.tracks[0][:1000])
    assert fast.seconds < heart.seconds
    uploaded = torch.load(synth.folder / "voices" / "am_adam.pt", weights_only=True)
    buffer = io.BytesIO()
    torch.save(uploaded, buffer)
    from_file = synth.synthesize(SpeechRequest.from_text(text, buffer.getvalue()))
    assert np.array_equal(from_file.tracks[0], adam.tracks[0])  # the same seed (0): the same speech
    other = synth.synthesize(SpeechRequest.from_text(text, "am_adam"), seed=1)
    assert other.seconds == adam.seconds and not np.array_equal(other.tracks[0], adam.tracks[0])


def test_other_languages_use_espeak(synth):
    speech = synth.synthesize(SpeechRequest.from_text("Hola, ¿cómo estás?", "af_heart", language="es"))
    assert speech.seconds > 0 and "ˈ" in speech.turns[0].phonemes


# --- end to end on the tiny models --------------------------------------------------------------------------------
def test_one_speaker_text_to_video(synth, tiny_pipeline, image_path, tmp_path):
    speech = synth.synthesize(SpeechRequest.from_official(OFFICIAL_SINGLE))
    result = tiny_pipeline.generate(
        image_path, speech.track_wavs(), "a woman talks", tmp_path / "one.mp4", options=GenerateOptions(**SMALL)
    )
    assert result.frames == int(speech.seconds * FPS)
    info = probe(result.video_path)
    assert info.frames == result.frames and abs(info.audio_seconds - result.frames / FPS) < 0.05


def test_dialogue_text_to_video(synth, tiny_pipeline, image_path, tmp_path):
    speech = synth.synthesize(SpeechRequest.from_official(OFFICIAL_MULTI))
    result = tiny_pipeline.generate(
        image_path,
        speech.track_wavs(),
        "two people talk",
        tmp_path / "two.mp4",
        options=GenerateOptions(**SMALL, audio_type=speech.audio_type),
    )
    assert result.speakers == 2 and result.frames == int(speech.seconds * FPS)
    info = probe(result.video_path)
    assert info.frames == result.frames and abs(info.audio_seconds - result.frames / FPS) < 0.05


# --- requests -----------------------------------------------------------------------------------------------------
def test_official_and_fal_requests():
    multi = SpeechRequest.from_official(OFFICIAL_MULTI)
    assert multi.voices == ("weights/Kokoro-82M/voices/af_heart.pt", "weights/Kokoro-82M/voices/am_adam.pt")
    assert [t.speaker for t in multi.turns] == [0, 1, 0]
    single = SpeechRequest.from_official(OFFICIAL_SINGLE)
    assert single.turns == (engine.Turn(0, SINGLE),) and single.speakers == 1
    tagged = SpeechRequest.from_official({**OFFICIAL_SINGLE, "text": "(s1) Hello. (s1) Again."})
    assert [t.text for t in tagged.turns] == ["Hello.", "Again."]
    fal = SpeechRequest.from_fal({"first_text_input": "Hi.", "second_text_input": "Hello.", "voice1": "Sarah"})
    assert fal.voices == ("af_sarah", "am_michael") and [t.speaker for t in fal.turns] == [0, 1]
    assert SpeechRequest.from_fal({"text_input": "Hi.", "voice": "George"}).voices == ("bm_george",)
    assert SpeechRequest.from_fal({"text_input": "Hi.", "voice": "bf_emma"}).voices == ("bf_emma",)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: SpeechRequest.from_text("", "af_heart"), TextEmptyError, "text: empty"),
        (lambda: SpeechRequest.from_text("  \n", "af_heart"), TextEmptyError, "text: empty"),
        (lambda: SpeechRequest.from_text(None, "af_heart"), TextEmptyError, "text: missing"),
        (lambda: SpeechRequest.from_text("a" * 5001, "af_heart"), TextTooLongError, "5001 characters, over the 5000"),
        (
            lambda: SpeechRequest.from_texts(["a" * 3000, "b" * 2500], ["af_heart", "am_adam"]),
            TextTooLongError,
            "5500 characters",
        ),
        (
            lambda: SpeechRequest.from_text("(s1) hi (s3) hello", ["af_heart", "am_adam"]),
            SpeakerTagError,
            "(s3) names speaker 3; with 2 voice(s) use (s1) and (s2)",
        ),
        (
            lambda: SpeechRequest.from_text("(s1) hi (s2) hello", ["af_heart"]),
            SpeakerTagError,
            "(s2) names speaker 2; with 1 voice(s) use (s1)",
        ),
        (lambda: SpeechRequest.from_text("hi there", ["af_heart", "am_adam"]), SpeakerTagError, "need a dialogue"),
        (lambda: SpeechRequest.from_text("hi (s1) there", ["af_heart"]), SpeakerTagError, "before the first speaker"),
        (
            lambda: SpeechRequest.from_text("(s1) (s2) hi", ["af_heart", "am_adam"]),
            SpeakerTagError,
            "turn 1 after (s1) is empty",
        ),
        (lambda: SpeechRequest.from_text("hi", "af_heart", speed=3), engine.SpeechOptionError, "speed: a number from"),
        (lambda: SpeechRequest.from_official({"text": "hi"}), UnknownVoiceError, "tts_audio.human1_voice: missing"),
        (
            lambda: SpeechRequest.from_official({**OFFICIAL_SINGLE, "human3_voice": "x"}),
            SpeakerTagError,
            "unknown keys human3_voice",
        ),
    ],
)
def test_bad_requests(make, error, message):
    with pytest.raises(error) as caught:
        make()
    assert message in str(caught.value) and isinstance(caught.value, InputError)
    assert caught.value.code.startswith("E_")


def test_bad_input_found_while_speaking(synth):
    with pytest.raises(UnknownVoiceError, match=r"voice 'af_nobody': not in .* available: af_heart, am_adam"):
        synth.synthesize(SpeechRequest.from_text("hi", "af_nobody"))
    for text, shown in (("hello 日本語", "'日' (U+65E5)"), ("hi 😀 there", "U+1F600"), ("a\x07b", "U+0007")):
        with pytest.raises(UnreadableTextError, match="characters the American English G2P cannot read") as caught:
            synth.synthesize(SpeechRequest.from_text(text, "af_heart"))
        assert shown in str(caught.value) and caught.value.code == "E_UNREADABLE_TEXT"
    with pytest.raises(UnreadableTextError, match=r"turn 1 .* has nothing to pronounce"):
        synth.synthesize(SpeechRequest.from_text("... !!", "af_heart"))
    # accents, curly quotes, numbers and currency are read
    assert synth.synthesize(SpeechRequest.from_text("Café “déjà vu”, $5.", "af_heart")).seconds > 0
    first_turn = synth.synthesize(SpeechRequest.from_text("do you know multi-talk?", "af_heart")).seconds
    with pytest.raises(SpeechTooLongError, match=f"passes the {first_turn + 0.1:g} s limit at turn 2 of 3") as caught:
        synth.synthesize(SpeechRequest.from_official(OFFICIAL_MULTI), max_seconds=first_turn + 0.1)
    assert caught.value.code == "E_SPEECH_TOO_LONG"
    with pytest.raises(LanguageError, match="Japanese"):
        synth.synthesize(SpeechRequest.from_text("hi", "af_heart", language="ja"))
    with pytest.raises(LanguageError, match="'klingon' is not one Kokoro speaks here"):
        synth.synthesize(SpeechRequest.from_text("hi", "af_heart", language="klingon"))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not a pickle", "voice file: not a Kokoro voice tensor"),
        ({"a": torch.zeros(3)}, "voice file: not a Kokoro voice (a float tensor [510, 1, 256]), got dict"),
        (torch.zeros(510, 256), "a Kokoro voice is a tensor [510, 1, 256], got [510, 256]"),
        (torch.full((510, 1, 256), float("nan")), "NaN or infinite"),
    ],
)
def test_a_voice_file_that_is_not_a_kokoro_voice(synth, payload, message):
    if isinstance(payload, bytes):
        data = payload
    else:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
    with pytest.raises(VoiceFileError) as caught:
        synth.synthesize(SpeechRequest.from_text("hi", data))
    assert message in str(caught.value) and caught.value.code == "E_VOICE_FILE"


# --- the CLI: the official JSON files, --text -----------------------------------------------------------------------
class RecordingPipe:
    """Stands in for the video model (the speech is real): records what generate is given."""

    jobs: list = []

    @classmethod
    def from_pretrained(cls, model_dir, **kwargs):
        return cls()

    memory_plan = None
    attention_backend = "sdpa"

    def generate(self, image, audio, prompt, output, *, options, **kwargs):
        from multitalk_serve.engine import GenerationResult

        seconds = sum(len(read_wav(a)[0]) for a in audio[:1]) / 24000
        RecordingPipe.jobs.append({"image": image, "audio": audio, "options": options})
        Path(output).write_bytes(b"mp4")
        frames = int(seconds * FPS)
        return GenerationResult(
            video_path=Path(output),
            frames=frames,
            seconds=frames / FPS,
            height=64,
            width=96,
            seed=1,
            clips=1,
            speakers=len(audio),
            options={k: 1 for k in ("steps", "text_scale", "audio_scale", "shift", "cache_threshold")},
            timings={"total": 0.1},
        )


@pytest.fixture
def recording(monkeypatch, no_hub):
    RecordingPipe.jobs = []
    monkeypatch.setattr(engine, "MultiTalkPipeline", RecordingPipe)
    return RecordingPipe


def official_tree(root: Path) -> Path:
    (root / "examples" / "multi" / "1").mkdir(parents=True)
    (root / "examples" / "single").mkdir(parents=True)
    Image.fromarray(stubs.scenario_image()).save(root / "examples/multi/1/multi1.png")
    Image.fromarray(stubs.scenario_image()).save(root / "examples/single/single1.png")
    files = {
        "multitalk_example_tts_1.json": {
            "prompt": "In a cozy recording studio, a man and a woman are singing together.",
            "cond_image": "examples/multi/1/multi1.png",
            "audio_type": "para",
            "tts_audio": OFFICIAL_MULTI,
            "cond_audio": {},
        },
        "single_example_tts_1.json": {
            "prompt": "A woman is passionately singing into a professional microphone.",
            "cond_image": "examples/single/single1.png",
            "tts_audio": OFFICIAL_SINGLE,
            "cond_audio": {},
        },
    }
    for name, data in files.items():
        (root / "examples" / name).write_text(json.dumps(data, indent=4))
    return root / "examples"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["generate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_official_tts_json_files_run_unchanged(tiny_root, tmp_path, capsys, recording, monkeypatch):
    examples = official_tree(tmp_path / "MultiTalk")
    monkeypatch.chdir(tmp_path / "MultiTalk")
    job = read_input_json("examples/multitalk_example_tts_1.json")
    assert job.audio == [] and job.speech == SpeechRequest.from_official(OFFICIAL_MULTI)
    code, out, err = run(capsys, "--model", tiny_root, "--input-json", "examples/multitalk_example_tts_1.json")
    assert code == 0, err
    summary = json.loads(out)
    speech_file = Path(summary["speech"])
    assert speech_file == Path("multitalk_example_tts_1.wav") and speech_file.is_file()
    mixed, rate = read_wav(speech_file.read_bytes())
    assert rate == 24000 and summary["speech_seconds"] == pytest.approx(len(mixed) / 24000, abs=1e-3)
    sent = recording.jobs[0]
    assert len(sent["audio"]) == 2 and sent["options"].audio_type == "para"
    first, second = (read_wav(a)[0] for a in sent["audio"])
    assert np.allclose(first + second, mixed, atol=2 / 32767)
    assert summary["frames"] == int(summary["speech_seconds"] * FPS)
    code, out, err = run(capsys, "--model", tiny_root, "--input-json", examples / "single_example_tts_1.json")
    assert code == 0, err
    assert len(recording.jobs[1]["audio"]) == 1 and json.loads(out)["speech_seconds"] > 0


def test_cli_text_and_voice(tiny_root, tmp_path, capsys, recording, image_path):
    out = tmp_path / "talk.mp4"
    common = ["--model", tiny_root, "--image", image_path, "--prompt", "two people talk", "--out", out, "--quiet"]
    code, stdout, err = run(capsys, *common, "--text", "(s1) Hi there. (s2) Hello!")
    assert code == 0, err
    assert len(recording.jobs[0]["audio"]) == 2 and json.loads(stdout)["speech"] == str(tmp_path / "talk.wav")
    voice = tmp_path / "my voice.pt"
    shutil.copy(tiny_root / "Kokoro-82M/voices/am_adam.pt", voice)  # a voice file outside the model folder
    speech_out = tmp_path / "speech.wav"
    code, stdout, err = run(capsys, *common, "--text", "Hello!", "--voice", voice, "--speech-out", speech_out)
    assert code == 0, err
    assert len(recording.jobs[1]["audio"]) == 1 and speech_out.is_file()
    code, _, err = run(capsys, *common, "--text", "Hello!", "--voice", "af_nobody")
    assert code == 2 and "available: af_heart, am_adam" in err
    code, _, err = run(capsys, *common, "--text", "Hello!", "--audio", image_path)
    assert code == 2 and "--text and --audio both give the speech" in err
    code, _, err = run(capsys, *common, "--voice", "af_heart")
    assert code == 2 and "--voice is the voice of --text" in err
    code, _, err = run(capsys, *common, "--text", "(s1) a (s3) b")
    assert code == 2 and "(s3) names speaker 3" in err


# --- provisioning -------------------------------------------------------------------------------------------------
def test_tts_profile_and_verify(tiny_root, tmp_path):
    from multitalk_serve.provision.profiles import KOKORO_GB, PROFILES, estimate, with_tts
    from multitalk_serve.provision.verify import verify_model_dir

    profile = with_tts(PROFILES["bf16"])
    assert profile.name == "bf16+tts" and profile.components()["kokoro"][0].folder == "Kokoro-82M"
    assert profile.fetches[-1].include == ("config.json", "kokoro-v1_0.pth", "voices/*.pt")
    assert 0.3 < KOKORO_GB < 0.4
    assert estimate("bf16", tts=True).disk_gb == pytest.approx(estimate("bf16").disk_gb + KOKORO_GB)
    assert max(estimate(name, "all", speed_lora=True, tts=True).disk_gb for name in PROFILES) < 100
    result = verify_model_dir(tiny_root, tts=True)
    assert not any("kokoro" in p.lower() for p in result.problems)
    empty = verify_model_dir(tmp_path, tts=True)
    assert any("Kokoro-82M/config.json missing" in p for p in empty.problems)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_root / "Kokoro-82M", copy / "Kokoro-82M")
    torch.save(torch.zeros(3), copy / "Kokoro-82M" / "voices" / "am_adam.pt")
    found = verify_model_dir(copy)  # present: checked without being asked
    assert any("am_adam.pt: a Kokoro voice is a tensor [510, 1, 256], got [3]" in p for p in found.problems)
