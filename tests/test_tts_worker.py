"""Text instead of audio through the worker: the request shapes (ours, the official ``tts_audio``, fal's text
names), Kokoro loaded once per worker, the speech run through the same generate call uploaded audio takes, the
speech delivered beside the video, and every bad input refused with its code before any download or generation.
Tiny models on CPU (the tiny Kokoro written by ``make-tiny``)."""

from __future__ import annotations

import base64
import dataclasses
import io
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from multitalk_serve.engine import FPS
from multitalk_serve.engine.pipeline.video import probe
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.errors import CODES
from multitalk_serve.worker.handler import Worker, load_speech
from multitalk_serve.worker.schema import JobInput
from test_worker_api import png_b64, wav_b64

FAST = {"width": 96, "height": 64, "sampling_steps": 2, "seed": 3}
UNREACHABLE = "http://127.0.0.1:9/face.png"  # never fetched when the text is refused first
OFFICIAL_MULTI = {
    "text": "(s1) Hi there. (s2) Hello!",
    "human1_voice": "weights/Kokoro-82M/voices/af_heart.pt",
    "human2_voice": "weights/Kokoro-82M/voices/am_adam.pt",
}


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767, w.getframerate()


@pytest.fixture(scope="module")
def synth(tiny_root):
    speech, missing = load_speech(WorkerConfig(model_path=tiny_root, s3=None), "cpu")  # what Worker.from_config does
    assert missing is None and speech.voices == ["af_heart", "am_adam"]
    return speech


@pytest.fixture(scope="module")
def config(tiny_root, tmp_path_factory):
    volume = tmp_path_factory.mktemp("volume")
    return WorkerConfig(model_path=tiny_root, volume_path=volume, s3=None, progress_interval_s=0.0)


@pytest.fixture(scope="module")
def worker(tiny_pipeline, config, synth):
    return Worker(tiny_pipeline, config, load_seconds=1.0, speech=synth)


class Spy:
    """Records what synthesize returned and what generate was given (the real calls run)."""

    def __init__(self, worker, monkeypatch):
        self.speech, self.audio, self.options = [], [], []
        synthesize, generate = worker.speech.synthesize, worker.pipeline.generate

        def spy_synthesize(*args, **kwargs):
            self.speech.append(synthesize(*args, **kwargs))
            return self.speech[-1]

        def spy_generate(image, audio, *args, **kwargs):
            self.audio.append(audio)
            self.options.append(kwargs["options"])
            return generate(image, audio, *args, **kwargs)

        monkeypatch.setattr(worker.speech, "synthesize", spy_synthesize)
        monkeypatch.setattr(worker.pipeline, "generate", spy_generate)


def test_one_speaker_text_to_video_inline(worker, monkeypatch, tmp_path):
    spy = Spy(worker, monkeypatch)
    job = {"image": png_b64(), "text": "Hello there.", "voice": "am_adam", "output_format": "base64", **FAST}
    items = []
    out = worker.run({"id": "tts-one", "input": job}, None, items.append)
    assert "error" not in out, out
    stages = list(dict.fromkeys(i["stage"] for i in items if i["type"] == "progress"))
    assert stages[:2] == ["speech", "audio"], stages
    speech = spy.speech[0]
    assert spy.audio == [speech.track_wavs()] and spy.options[0].audio_type == "para"  # the uploaded-audio path
    assert out["speech_seconds"] == round(speech.seconds, 3)
    assert out["video"]["frames"] == int(speech.seconds * FPS)  # video duration = speech duration
    video = tmp_path / "v.mp4"
    video.write_bytes(base64.b64decode(out["video_base64"]))
    info = probe(video)
    assert info.frames == out["video"]["frames"] and abs(info.audio_seconds - info.frames / FPS) < 0.05
    wav, rate = read_wav(base64.b64decode(out["speech_base64"]))
    assert rate == 24000 and len(wav) == len(speech.tracks[0]) and np.abs(wav).max() > 0
    info = out["speech"]
    assert (info["storage"], info["speakers"], info["turns"], info["voices"]) == ("inline", 1, 1, ["am_adam"])
    assert out["params"]["speakers"] == 1 and "speech" in out["timings"] and out["worker"]["tts"] is True


def test_official_tts_dialogue_to_the_volume(worker, monkeypatch, config):
    spy = Spy(worker, monkeypatch)
    job = {
        "prompt": "Two people talk.",
        "cond_image": png_b64(),
        "audio_type": "para",
        "tts_audio": OFFICIAL_MULTI,  # the official shape, unchanged
        "cond_audio": {},
        "bbox": {"person1": [0, 0, 300, 250], "person2": [0, 250, 300, 500]},
        "output": {"format": "volume"},
        **FAST,
    }
    out = worker.run({"id": "tts-two", "input": job})
    assert "error" not in out, out
    speech = spy.speech[0]
    first, second = (read_wav(w)[0] for w in spy.audio[0])
    assert [t.speaker for t in speech.turns] == [0, 1] and len(first) == len(second)
    for turn in speech.turns:  # each turn is silence in the other speaker's track
        a, b = round(turn.start_s * 24000), round(turn.end_s * 24000)
        talking, silent = (first, second) if turn.speaker == 0 else (second, first)
        assert not silent[a:b].any() and np.abs(talking[a:b]).max() > 0
    assert out["params"]["speakers"] == 2 and out["params"]["audio_type"] == "para"
    assert out["video"]["frames"] == int(speech.seconds * FPS)
    path = out["speech_path"]
    assert path == out["video_path"].removesuffix(".mp4") + ".wav" and path.startswith(str(config.volume_path))
    mixed, rate = read_wav(Path(path).read_bytes())
    assert rate == 24000 and np.allclose(mixed, first + second, atol=2 / 32767)
    assert out["speech"]["storage"] == "volume" and out["speech"]["voices"] == ["af_heart", "am_adam"]


def test_request_shapes():
    plain = JobInput.model_validate({"image": "x", "text": "(s1) Hi. (s2) Yo.", "voice": ["bf_emma", "am_adam"]})
    assert plain.speakers == 2 and plain.speech.voices == ("bf_emma", "am_adam") and plain.audio == []
    default = JobInput.model_validate({"image": "x", "text": "(s1) Hi. (s2) Yo.", "speech_speed": 1.5})
    assert default.speech.voices == ("af_heart", "am_adam") and default.speech.speed == 1.5
    fal = JobInput.model_validate({"image_url": "x", "first_text_input": "Hi.", "second_text_input": "Yo."})
    assert fal.speech.voices == ("af_sarah", "am_michael") and fal.audio_field(1) == "voice2"
    single = JobInput.model_validate({"image_url": "x", "text_input": "Hi.", "voice": "George"})
    assert single.speech.voices == ("bm_george",) and single.speakers == 1
    filed = JobInput.model_validate({"image": "x", "text": "Hi.", "voice": {"base64": "AAAA"}, "language": "en-gb"})
    assert filed.speech.language == "en-gb" and filed.voice_field(0) == "voice"
    flash = {"image": "x", "text": "(s1) Hi. (s2) Yo.", "model": "flashtalk"}
    with pytest.raises(ValueError, match="text: FlashTalk animates one speaker and this job has 2 speakers"):
        JobInput.model_validate(flash)


def voice_file(value) -> dict:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return {"base64": base64.b64encode(buffer.getvalue()).decode()}


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"text": ""}, "E_TEXT_EMPTY", "text: empty"),
        ({"text": "a" * 5001}, "E_TEXT_TOO_LONG", "5001 characters, over the 5000"),
        ({"text": "Hi.", "voice": "af_nobody"}, "E_UNKNOWN_VOICE", "available: af_heart, am_adam"),
        ({"text": "(s1) Hi. (s3) Yo.", "voice": ["af_heart", "am_adam"]}, "E_SPEAKER_TAG", "(s3) names speaker 3"),
        ({"text": "hello 日本語"}, "E_UNREADABLE_TEXT", "'日' (U+65E5)"),
        ({"text": "Hi.", "language": "klingon"}, "E_LANGUAGE", "'klingon'"),
        ({"text": "Hi.", "speech_speed": 3.0}, "E_SPEECH_OPTION", "0.5 to 2.0"),
        ({"text": "Hi.", "voice": voice_file(torch.zeros(510, 256))}, "E_VOICE_FILE", "got [510, 256]"),
        ({"tts_audio": {"text": "Hi."}}, "E_UNKNOWN_VOICE", "tts_audio.human1_voice: missing"),
        ({"text": "Hi.", "audio": "UklGRg=="}, "E_INPUT", "audio and text both give the speech: give one"),
        (
            {"tts_audio": OFFICIAL_MULTI, "cond_audio": {"person1": "UklGRg=="}},
            "E_INPUT",
            "cond_audio and tts_audio both give the speech",
        ),
        ({"first_text_input": "Hi.", "text": "Yo."}, "E_INPUT", "text and first_text_input all give the text"),
        ({"voice": "af_heart"}, "E_INPUT", "voice goes with text"),
        ({}, "E_INPUT", "audio is required: one track per speaker (or audio_url / cond_audio / audio_1 ...), or"),
    ],
)
def test_bad_text_is_refused_before_any_download(worker, monkeypatch, fields, code, message):
    def refuse(*args, **kwargs):
        raise AssertionError("generate was called")

    monkeypatch.setattr(worker.pipeline, "generate", refuse)
    out = worker.run({"id": "bad", "input": {"image": UNREACHABLE, **fields}})
    assert out["error"].startswith(f"{code}: ") and message in out["error"], out
    assert code in CODES


def test_speech_over_the_length_cap(tiny_pipeline, config, synth, monkeypatch):
    short = Worker(tiny_pipeline, dataclasses.replace(config, max_duration_s=0.05), speech=synth)
    monkeypatch.setattr(short.pipeline, "generate", lambda *a, **k: pytest.fail("generate was called"))
    out = short.run({"id": "long", "input": {"image": UNREACHABLE, "text": "(s1) Hi there. (s2) Hello!"}})
    assert out["error"].startswith("E_SPEECH_TOO_LONG: text: the speech passes the 0.05 s limit at turn 1"), out


def test_a_voice_file_is_fetched_like_media(worker, monkeypatch, synth):
    spy = Spy(worker, monkeypatch)
    uploaded = torch.load(synth.folder / "voices" / "am_adam.pt", weights_only=True)
    out = worker.run({"id": "file", "input": {"image": UNREACHABLE, "text": "Hi.", "voice": voice_file(uploaded)}})
    assert out["error"].startswith("E_DOWNLOAD: image"), out  # spoken first, then the image could not be fetched
    by_name = synth.synthesize(_request("Hi.", "am_adam"))
    assert np.array_equal(spy.speech[0].tracks[0], by_name.tracks[0])


def _request(text, voice):
    from multitalk_serve.engine import SpeechRequest

    return SpeechRequest.from_text(text, voice)


def test_text_on_a_worker_without_kokoro(tiny_pipeline, config, tmp_path, monkeypatch):
    speech, missing = load_speech(dataclasses.replace(config, model_path=tmp_path), "cpu")
    assert speech is None and "download --tts" in missing
    bare = Worker(tiny_pipeline, config, speech=None, speech_missing=missing)
    monkeypatch.setattr(bare.pipeline, "generate", lambda *a, **k: pytest.fail("generate was called"))
    out = bare.run({"id": "bare", "input": {"image": UNREACHABLE, "text": "Hi."}})
    assert out["error"].startswith("E_TTS_UNAVAILABLE: text: text to speech is not available"), out
    assert str(tmp_path / "Kokoro-82M") in out["error"] and bare.health()["tts"] is False
    audio = bare.run({"id": "audio", "input": {"image": UNREACHABLE, "audio": wav_b64(tmp_path)}})
    assert audio["error"].startswith("E_DOWNLOAD: image"), audio  # audio requests are unaffected


def test_the_speech_goes_where_the_video_goes(tmp_path, bucket):
    import requests

    from multitalk_serve.worker.schema import OutputOptions
    from multitalk_serve.worker.storage import Storage

    video, speech = tmp_path / "video.mp4", tmp_path / "speech.wav"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    speech.write_bytes(b"RIFF" + bytes(3000))
    settings = WorkerConfig(model_path=tmp_path, volume_path=tmp_path / "none", s3=bucket, output_prefix="mt")
    stored = Storage(settings).store("job-1", video, None, OutputOptions(), speech)
    assert stored.storage == "s3" and stored.speech_key == "mt/job-1/job-1.wav"
    response = requests.get(stored.speech_url, timeout=10)
    assert response.content == speech.read_bytes() and response.headers["Content-Type"] == "audio/wav"
    small = dataclasses.replace(settings, s3=None, inline_max_bytes=2000)  # the video fits, not with the speech
    stored = Storage(small).store("job-2", video, None, OutputOptions(), speech)
    assert stored.storage == "inline" and stored.speech_base64 is None
    assert any("speech not returned" in w and "it is the video's soundtrack" in w for w in stored.warnings)
