"""Speech from text with Kokoro-82M (``hexgrad/Kokoro-82M``, the model the official MultiTalk / InfiniteTalk TTS
mode uses), for one speaker or a two-speaker dialogue.

Model folder (the published layout, read from local files only: no Hub call is ever made)::

    ROOT/Kokoro-82M/config.json, kokoro-v1_0.pth, voices/<name>.pt   ([510, 1, 256] float32 voice packs)

Text -> phonemes (G2P), with nothing downloaded at run time:

- English (``a`` American, ``b`` British): misaki's English G2P, the one Kokoro was trained with: its gold and
  silver pronunciation dictionaries (shipped in the misaki wheel) and its espeak-ng fallback for words they lack.
  misaki normally tags words with a spaCy statistical model that it downloads on first use; here spaCy's
  rule-based English tokenizer (no model, part of the spaCy wheel) runs instead, with an attribute ruler that gives
  punctuation, numbers and currency symbols the tags misaki reads. What this costs: heteronyms whose pronunciation
  depends on the part of speech ("I read it yesterday", "to lead / the lead") take the dictionary's default reading.
  The same path runs in CI and in production.
- Spanish ``e``, French ``f``, Hindi ``h``, Italian ``i``, Brazilian Portuguese ``p``: espeak-ng (misaki's
  ``EspeakG2P``, as Kokoro's own pipeline does for these), from the espeak-ng library in the ``espeakng-loader``
  wheel. Japanese and Mandarin need extra misaki packages and are refused (``LanguageError``).

A voice's language is its name's first letter (``af_heart`` American English female, ``bm_george`` British male,
``ef_dora`` Spanish, ...), unless a request names one.

Dialogue: ``(s1) ... (s2) ... (s1) ...``; each turn is spoken by its speaker's voice and goes to that speaker's track
while the other track holds silence of the same length (the official ``process_tts_multi``), so the two tracks have
equal length and play at once (``audio_type="para"``); their sum is the speech a listener hears. The tracks are
returned as 24 kHz WAV files (Kokoro's rate) and go through the same decoder, resampler and loudness normalisation
as uploaded audio (``MultiTalkPipeline.generate`` takes bytes per speaker).

Limits (``errors.SpeechInputError`` subclasses, each with a stable ``code``): empty text ``E_TEXT_EMPTY``, more than
``MAX_TEXT_CHARS`` characters ``E_TEXT_TOO_LONG``, speech longer than the cap ``E_SPEECH_TOO_LONG`` (found while
synthesising, turn by turn), a voice that is not there ``E_UNKNOWN_VOICE`` (the message lists the voices), a voice file
that is not a Kokoro voice tensor ``E_VOICE_FILE``, a tag for a speaker without a voice or a misplaced tag
``E_SPEAKER_TAG``, a speed outside 0.5-2 ``E_SPEECH_OPTION``, characters the G2P cannot read (other scripts, emoji,
control characters) or a turn with nothing to say ``E_UNREADABLE_TEXT``, a language Kokoro cannot speak here
``E_LANGUAGE``.
"""

from __future__ import annotations

import io
import re
import threading
import unicodedata
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import (
    CheckpointError,
    LanguageError,
    SpeakerTagError,
    SpeechOptionError,
    SpeechTooLongError,
    TextEmptyError,
    TextTooLongError,
    UnknownVoiceError,
    UnreadableTextError,
    VoiceFileError,
)
from ..loading.paths import KOKORO_DIR

KOKORO_CONFIG = "config.json"
KOKORO_WEIGHTS = "kokoro-v1_0.pth"
VOICES_DIR = "voices"
KOKORO_REPO = "hexgrad/Kokoro-82M"
SPEECH_RATE = 24000  # Kokoro's output rate
MAX_TEXT_CHARS = 5000  # about five to six minutes of speech at Kokoro's pace (~15 characters a second)
MAX_SPEECH_SECONDS = 600.0  # the default cap on the synthesised speech (the engine's default max_duration_s)
MAX_SPEAKERS = 2
PHONEME_CHUNK = 510  # Kokoro's context: 512 tokens with the two boundary tokens

# Kokoro's language codes (``kokoro.pipeline.LANG_CODES``) that run here, and the aliases its pipeline accepts.
LANGUAGES = {
    "a": "American English",
    "b": "British English",
    "e": "Spanish",
    "f": "French",
    "h": "Hindi",
    "i": "Italian",
    "p": "Brazilian Portuguese",
}
LANGUAGE_ALIASES = {"en-us": "a", "en": "a", "en-gb": "b", "es": "e", "fr-fr": "f", "fr": "f", "hi": "h", "it": "i"}
LANGUAGE_ALIASES |= {"pt-br": "p", "pt": "p", "ja": "j", "zh": "z"}
_ESPEAK_LANGUAGES = {"e": "es", "f": "fr-fr", "h": "hi", "i": "it", "p": "pt-br"}
_NEEDS_EXTRA = {"j": "Japanese (misaki[ja])", "z": "Mandarin Chinese (misaki[zh])"}

# fal's text-to-speech avatar endpoints (fal-ai/ai-avatar/single-text, multi-text) name ElevenLabs voices; each maps
# to the Kokoro voice of the same first name where there is one, otherwise to one of the same gender and accent.
FAL_VOICES = {
    "Aria": "af_aoede",
    "Roger": "am_michael",
    "Sarah": "af_sarah",
    "Laura": "af_kore",
    "Charlie": "am_puck",
    "George": "bm_george",
    "Callum": "bm_lewis",
    "River": "af_river",
    "Liam": "am_liam",
    "Charlotte": "bf_emma",
    "Alice": "bf_alice",
    "Matilda": "bf_isabella",
    "Will": "am_echo",
    "Jessica": "af_jessica",
    "Eric": "am_eric",
    "Chris": "am_onyx",
    "Brian": "am_fenrir",
    "Daniel": "bm_daniel",
    "Lily": "bf_lily",
    "Bill": "bm_fable",
}
FAL_DEFAULT_VOICES = ("Sarah", "Roger")  # fal's defaults for voice1 / voice2

_TAG = re.compile(r"\(\s*s(\d+)\s*\)", re.IGNORECASE)
_ALLOWED_SYMBOLS = set("$£€¥%&@#*+=/<>°^~|_\\'\"`")

Voice = str | bytes  # a voice name (or a path whose file name is the name), or a voice file's bytes


# --- requests -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Turn:
    speaker: int  # 0 or 1
    text: str


@dataclass(frozen=True)
class SpeechRequest:
    """What to say, by whom: turns in order, one voice per speaker, a speed and (optionally) a language."""

    turns: tuple[Turn, ...]
    voices: tuple[Voice, ...]
    speed: float = 1.0
    language: str | None = None  # Kokoro's code or an alias; None: from each voice's name (English otherwise)

    @property
    def speakers(self) -> int:
        return len(self.voices)

    @property
    def characters(self) -> int:
        return sum(len(t.text) for t in self.turns)

    @classmethod
    def from_text(
        cls,
        text: object,
        voices: Voice | list[Voice] | tuple[Voice, ...],
        speed: float = 1.0,
        language: str | None = None,
        field: str = "text",
    ) -> SpeechRequest:
        """One text: plain for one voice (``(s1)`` tags allowed), a ``(s1) ... (s2) ...`` dialogue for two."""
        voices = (voices,) if isinstance(voices, str | bytes) else tuple(voices)
        if not 1 <= len(voices) <= MAX_SPEAKERS:
            raise SpeakerTagError(f"{field}: one or two voices, got {len(voices)}")
        text = _check_text(text, field)
        return cls(tuple(parse_dialogue(text, len(voices), field)), voices, speed, language).checked()

    @classmethod
    def from_texts(
        cls,
        texts: list[object] | tuple[object, ...],
        voices: list[Voice] | tuple[Voice, ...],
        speed: float = 1.0,
        language: str | None = None,
        fields: tuple[str, ...] = ("text1", "text2"),
    ) -> SpeechRequest:
        """One text per speaker, spoken one after the other (speaker 1, then speaker 2)."""
        if not 1 <= len(texts) <= MAX_SPEAKERS or len(texts) != len(voices):
            raise SpeakerTagError(f"one text and one voice per speaker (1 or 2), got {len(texts)} and {len(voices)}")
        turns = []
        for i, text in enumerate(texts):
            text = _check_text(text, fields[i])
            if _TAG.search(text):
                raise SpeakerTagError(f"{fields[i]}: speaker tags like (s1) belong in a single dialogue text")
            turns.append(Turn(i, text))
        return cls(tuple(turns), tuple(voices), speed, language).checked()

    @classmethod
    def from_official(cls, tts_audio: object, field: str = "tts_audio") -> SpeechRequest:
        """The official input JSON's ``tts_audio`` unchanged: ``{"text", "human1_voice", "human2_voice"?}``; a voice
        path such as ``weights/Kokoro-82M/voices/af_heart.pt`` names the voice by its file name."""
        if not isinstance(tts_audio, dict):
            raise SpeakerTagError(f"{field}: must be an object {{text, human1_voice, human2_voice}}")
        unknown = sorted(set(tts_audio) - {"text", "human1_voice", "human2_voice"})
        if unknown:
            raise SpeakerTagError(f"{field}: unknown keys {', '.join(unknown)} (text, human1_voice, human2_voice)")
        voices = []
        for key in ("human1_voice", "human2_voice"):
            value = tts_audio.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise UnknownVoiceError(f"{field}.{key}: a voice name or a voices/<name>.pt path, got {value!r}")
            voices.append(value)
        if not voices or "human1_voice" not in tts_audio:
            raise UnknownVoiceError(f"{field}.human1_voice: missing (e.g. weights/Kokoro-82M/voices/af_heart.pt)")
        return cls.from_text(tts_audio.get("text"), voices, field=f"{field}.text")

    @classmethod
    def from_fal(cls, data: dict) -> SpeechRequest:
        """fal's text-to-speech avatar inputs: ``text_input`` + ``voice`` (one speaker), or ``first_text_input`` +
        ``second_text_input`` + ``voice1`` / ``voice2`` (two, one after the other). fal's voice names map through
        ``FAL_VOICES``; a Kokoro voice name is taken as is."""
        if "text_input" in data:
            return cls.from_texts([data["text_input"]], [fal_voice(data.get("voice"), 0)], fields=("text_input",))
        return cls.from_texts(
            [data.get("first_text_input"), data.get("second_text_input")],
            [fal_voice(data.get("voice1"), 0), fal_voice(data.get("voice2"), 1)],
            fields=("first_text_input", "second_text_input"),
        )

    def checked(self) -> SpeechRequest:
        if self.characters > MAX_TEXT_CHARS:
            raise TextTooLongError(f"text: {self.characters} characters, over the {MAX_TEXT_CHARS} limit")
        if not isinstance(self.speed, int | float) or isinstance(self.speed, bool) or not 0.5 <= self.speed <= 2.0:
            raise SpeechOptionError(f"speed: a number from 0.5 to 2.0, got {self.speed!r}")
        for turn in self.turns:
            if turn.speaker >= len(self.voices):
                raise SpeakerTagError(f"(s{turn.speaker + 1}) has no voice: {len(self.voices)} voice(s) given")
        return self


def fal_voice(value: object, index: int) -> str:
    if value is None:
        return FAL_VOICES[FAL_DEFAULT_VOICES[index]]
    if isinstance(value, str) and value in FAL_VOICES:
        return FAL_VOICES[value]
    if isinstance(value, str):
        return value
    raise UnknownVoiceError(f"voice{index + 1}: a voice name, got {value!r}")


def _check_text(text: object, field: str) -> str:
    if text is None:
        raise TextEmptyError(f"{field}: missing")
    if not isinstance(text, str):
        raise TextEmptyError(f"{field}: must be a string, got {type(text).__name__}")
    if not text.strip():
        raise TextEmptyError(f"{field}: empty")
    if len(text) > MAX_TEXT_CHARS:
        raise TextTooLongError(f"{field}: {len(text)} characters, over the {MAX_TEXT_CHARS} limit")
    return text


def tagged_speakers(text: str) -> int:
    """The highest speaker number tagged in ``text`` (``(s2)`` -> 2), 0 without tags."""
    return max((int(m.group(1)) for m in _TAG.finditer(text)), default=0)


def parse_dialogue(text: str, speakers: int, field: str = "text") -> list[Turn]:
    """``(s1) hi (s2) hello`` -> turns. One speaker: the whole text (``(s1)`` tags dropped). Two: tags required.
    Text before the first tag, an empty turn, ``(s3)``, a tag for a speaker without a voice: ``SpeakerTagError``."""
    tags = list(_TAG.finditer(text))
    for tag in tags:
        n = int(tag.group(1))
        if not 1 <= n <= speakers:
            have = "(s1)" if speakers == 1 else "(s1) and (s2)"
            raise SpeakerTagError(f"{field}: {tag.group(0)} names speaker {n}; with {speakers} voice(s) use {have}")
    if not tags:
        if speakers == 2:
            raise SpeakerTagError(f"{field}: two voices need a dialogue marked with (s1) ... (s2) ... tags")
        return [Turn(0, text.strip())]
    head = text[: tags[0].start()].strip()
    if head:
        raise SpeakerTagError(f"{field}: text before the first speaker tag ({head[:30]!r}); start with (s1) or (s2)")
    turns = []
    for i, tag in enumerate(tags):
        end = tags[i + 1].start() if i + 1 < len(tags) else len(text)
        body = text[tag.end() : end].strip()
        if not body:
            raise SpeakerTagError(f"{field}: turn {i + 1} after {tag.group(0)} is empty")
        turns.append(Turn(int(tag.group(1)) - 1, body))
    return turns


def unreadable_characters(text: str, language: str) -> list[str]:
    """Characters the G2P of ``language`` cannot read (other scripts, emoji, control characters), in order."""
    bad: list[str] = []
    for ch in text:
        if ch.isspace() or ch.isdigit() or ch in _ALLOWED_SYMBOLS:
            continue
        category = unicodedata.category(ch)
        if category.startswith("P") or category == "Sc":
            continue
        name = unicodedata.name(ch, "")
        if category.startswith(("L", "M")) and ("LATIN" in name or (category.startswith("M") and "COMBINING" in name)):
            continue
        if language == "h" and "DEVANAGARI" in name:
            continue
        if ch not in bad:
            bad.append(ch)
    return bad


def _describe(chars: list[str]) -> str:
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:8])
    return shown + (f" and {len(chars) - 8} more" if len(chars) > 8 else "")


def language_of(voice_name: str | None, language: str | None) -> str:
    """Kokoro's language code for a request's ``language`` or, without one, the voice name's first letter."""
    if language is not None:
        code = LANGUAGE_ALIASES.get(str(language).lower(), str(language).lower())
        if code in _NEEDS_EXTRA:
            raise LanguageError(f"language: {_NEEDS_EXTRA[code]} is not installed here; choose from {_languages()}")
        if code not in LANGUAGES:
            raise LanguageError(f"language: {language!r} is not one Kokoro speaks here; choose from {_languages()}")
        return code
    if voice_name and voice_name[0] in _NEEDS_EXTRA and voice_name[1:2] in ("f", "m") and voice_name[2:3] == "_":
        raise LanguageError(f"voice {voice_name}: {_NEEDS_EXTRA[voice_name[0]]} is not installed here")
    if voice_name and voice_name[0] in LANGUAGES and voice_name[1:3] in ("f_", "m_"):
        return voice_name[0]
    return "a"


def _languages() -> str:
    return ", ".join(f"{k} ({v})" for k, v in LANGUAGES.items())


# --- the result ---------------------------------------------------------------------------------------------------
@dataclass
class SpokenTurn:
    speaker: int
    text: str
    phonemes: str
    start_s: float
    end_s: float


@dataclass
class Speech:
    """Per-speaker tracks of equal length at ``rate`` Hz (each silent while the other talks) and the turns."""

    tracks: list[np.ndarray]
    turns: list[SpokenTurn] = field(default_factory=list)
    rate: int = SPEECH_RATE

    @property
    def mixed(self) -> np.ndarray:
        """What a listener hears: the tracks' sum (turns never overlap)."""
        return np.sum(self.tracks, axis=0).astype(np.float32) if len(self.tracks) > 1 else self.tracks[0]

    @property
    def seconds(self) -> float:
        return len(self.tracks[0]) / self.rate

    @property
    def audio_type(self) -> str:
        """How ``MultiTalkPipeline.generate`` must combine ``track_wavs()``: the tracks are already laid out."""
        return "para"

    def track_wavs(self) -> list[bytes]:
        """One WAV file per speaker (16-bit PCM mono at ``rate``), for ``generate(audio=...)``."""
        return [wav_bytes(t, self.rate) for t in self.tracks]

    def wav(self) -> bytes:
        """The mixed speech as one WAV file (to hand back to the user)."""
        return wav_bytes(self.mixed, self.rate)


def wav_bytes(wave_: np.ndarray, rate: int = SPEECH_RATE) -> bytes:
    pcm = (np.clip(np.asarray(wave_, np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


# --- the model ----------------------------------------------------------------------------------------------------
def kokoro_dir(path: str | Path) -> Path:
    """``path`` itself if it holds Kokoro's config.json, else ``path/Kokoro-82M``."""
    path = Path(path)
    return path if (path / KOKORO_CONFIG).is_file() else path / KOKORO_DIR


def inspect_kokoro(path: str | Path) -> list[str]:
    """Problems of a Kokoro folder (files, config keys, voice shapes, weight keys against the config); [] if fine.
    Reads the config and the voices (0.5 MB each) and the weights' key names and shapes."""
    folder = kokoro_dir(path)
    problems = []
    for name in (KOKORO_CONFIG, KOKORO_WEIGHTS):
        if not (folder / name).is_file():
            problems.append(f"kokoro: {folder / name} missing ({KOKORO_REPO})")
    voices = sorted((folder / VOICES_DIR).glob("*.pt")) if (folder / VOICES_DIR).is_dir() else []
    if not voices:
        problems.append(f"kokoro: no voices in {folder / VOICES_DIR}")
    if problems:
        return problems
    try:
        config = _read_config(folder)
        _check_weights(folder / KOKORO_WEIGHTS, config)
        for path_ in voices:
            _voice_from(torch.load(path_, map_location="cpu", weights_only=True), config, str(path_))
    except (CheckpointError, VoiceFileError) as exc:
        problems.append(f"kokoro: {exc}")
    return problems


def _read_config(folder: Path) -> dict:
    import json

    try:
        config = json.loads((folder / KOKORO_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / KOKORO_CONFIG}: not readable JSON ({exc})") from exc
    missing = [k for k in ("vocab", "n_token", "plbert", "istftnet", "style_dim", "hidden_dim") if k not in config]
    if missing:
        raise CheckpointError(f"{folder / KOKORO_CONFIG}: missing keys {', '.join(missing)}")
    return config


def _check_weights(path: Path, config: dict) -> dict[str, dict[str, torch.Tensor]]:
    """Load ``kokoro-v1_0.pth`` and check every sub-module's keys and shapes against a model built from ``config``
    (``KModel`` itself falls back to a non-strict load, which would leave a wrong file half loaded, silently)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure: not a Kokoro checkpoint
        raise CheckpointError(f"{path}: cannot be read as a Kokoro checkpoint ({type(exc).__name__}: {exc})") from exc
    with torch.device("meta"):
        modules = kokoro_modules(config)
    if not isinstance(state, dict) or set(state) != set(modules):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: expected the sub-modules {sorted(modules)}, got {got}")
    for part, module in modules.items():
        want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        have = {k.removeprefix("module."): tuple(v.shape) for k, v in state[part].items()}
        if want != have:
            missing = sorted(set(want) - set(have))[:3]
            extra = sorted(set(have) - set(want))[:3]
            shapes = [k for k in set(want) & set(have) if want[k] != have[k]][:3]
            raise CheckpointError(
                f"{path}: {part} does not match config.json (missing {missing}, unexpected {extra}, shapes {shapes})"
            )
    return state


def _voice_from(value: object, config: dict, name: str) -> torch.Tensor:
    width = 2 * int(config["style_dim"])
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise VoiceFileError(
            f"{name}: not a Kokoro voice (a float tensor [510, 1, {width}]), got {type(value).__name__}"
        )
    if tuple(value.shape) != (PHONEME_CHUNK, 1, width):
        raise VoiceFileError(f"{name}: a Kokoro voice is a tensor [510, 1, {width}], got {list(value.shape)}")
    if not torch.isfinite(value).all():
        raise VoiceFileError(f"{name}: the voice tensor holds NaN or infinite values")
    return value.float()


def kokoro_modules(config: dict) -> dict[str, torch.nn.Module]:
    """``KModel``'s five sub-modules built from ``config`` as ``KModel.__init__`` builds them (no weights read)."""
    from kokoro.istftnet import Decoder
    from kokoro.modules import CustomAlbert, ProsodyPredictor, TextEncoder
    from transformers import AlbertConfig

    with _quiet():  # the library's deprecation notices (weight_norm, a one-layer LSTM's dropout)
        bert = CustomAlbert(AlbertConfig(vocab_size=config["n_token"], **config["plbert"]))
        return {
            "bert": bert,
            "bert_encoder": torch.nn.Linear(bert.config.hidden_size, config["hidden_dim"]),
            "predictor": ProsodyPredictor(
                style_dim=config["style_dim"],
                d_hid=config["hidden_dim"],
                nlayers=config["n_layer"],
                max_dur=config["max_dur"],
                dropout=config["dropout"],
            ),
            "text_encoder": TextEncoder(
                channels=config["hidden_dim"],
                kernel_size=config["text_encoder_kernel_size"],
                depth=config["n_layer"],
                n_symbols=config["n_token"],
            ),
            "decoder": Decoder(
                dim_in=config["hidden_dim"],
                style_dim=config["style_dim"],
                dim_out=config["n_mels"],
                **config["istftnet"],
            ),
        }


class SpeechSynthesizer:
    """Kokoro-82M loaded once (``from_pretrained``), then ``synthesize(request)`` per job (thread-safe)."""

    def __init__(self, model, folder: Path, config: dict):
        self.model = model
        self.folder = folder
        self.config = config
        self._voices: dict[str, torch.Tensor] = {}
        self._pipelines: dict[str, object] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> SpeechSynthesizer:
        """``path``: a model root holding ``Kokoro-82M/`` or that folder itself. Local files only."""
        from kokoro import KModel

        folder = kokoro_dir(path)
        for name in (KOKORO_CONFIG, KOKORO_WEIGHTS):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder / name} missing: Kokoro-82M ({KOKORO_REPO}) is needed for text input")
        config = _read_config(folder)
        _check_weights(folder / KOKORO_WEIGHTS, config)
        with _quiet():
            model = KModel(repo_id=KOKORO_REPO, config=str(folder / KOKORO_CONFIG), model=str(folder / KOKORO_WEIGHTS))
        return cls(model.to(device).eval(), folder, config)

    @property
    def voices(self) -> list[str]:
        return sorted(p.stem for p in (self.folder / VOICES_DIR).glob("*.pt"))

    def voice(self, voice: Voice) -> tuple[str | None, torch.Tensor]:
        """(name or None, voice tensor) for a voice name, a path naming it (only its file name is used: nothing a
        request names is opened), or a voice file's bytes."""
        if isinstance(voice, bytes | bytearray):
            try:
                value = torch.load(io.BytesIO(bytes(voice)), map_location="cpu", weights_only=True)
            except Exception as exc:  # any unpickling failure
                raise VoiceFileError(f"voice file: not a Kokoro voice tensor ({type(exc).__name__})") from exc
            return None, _voice_from(value, self.config, "voice file")
        name = Path(str(voice).strip()).name.removesuffix(".pt")
        with self._lock:
            if name not in self._voices:
                if name not in self.voices:
                    raise UnknownVoiceError(
                        f"voice {voice!r}: not in {self.folder / VOICES_DIR}; available: "
                        f"{', '.join(self.voices) or 'none'}"
                    )
                value = torch.load(self.folder / VOICES_DIR / f"{name}.pt", map_location="cpu", weights_only=True)
                self._voices[name] = _voice_from(value, self.config, f"voices/{name}.pt")
        return name, self._voices[name]

    def _pipeline(self, language: str):
        with self._lock:
            if language not in self._pipelines:
                with _quiet():
                    self._pipelines[language] = _LocalPipeline.make(language)
            return self._pipelines[language]

    def synthesize(self, request: SpeechRequest, max_seconds: float = MAX_SPEECH_SECONDS, seed: int = 0) -> Speech:
        """Speak every turn with its speaker's voice; ``SpeechTooLongError`` as soon as the speech passes
        ``max_seconds``. Kokoro's harmonic source draws noise: it is drawn from ``seed`` (the same request gives
        the same speech), without touching the caller's random state."""
        device = self.model.device
        devices = [device] if device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices, device_type=device.type):
            torch.manual_seed(seed)
            return self._synthesize(request, max_seconds)

    def _synthesize(self, request: SpeechRequest, max_seconds: float) -> Speech:
        request.checked()
        voices = [self.voice(v) for v in request.voices]
        languages = [language_of(name, request.language) for name, _ in voices]
        for turn in request.turns:
            bad = unreadable_characters(turn.text, languages[turn.speaker])
            if bad:
                raise UnreadableTextError(
                    f"text: characters the {LANGUAGES[languages[turn.speaker]]} G2P cannot read: {_describe(bad)}; "
                    "remove them or write them out in words"
                )
        pieces: list[tuple[int, np.ndarray]] = []
        turns: list[SpokenTurn] = []
        total = 0
        for i, turn in enumerate(request.turns):
            pipeline = self._pipeline(languages[turn.speaker])
            pack = voices[turn.speaker][1].to(self.model.device)
            chunks, phonemes = [], []
            with _quiet():
                for result in pipeline(turn.text, voice=pack, speed=float(request.speed), model=self.model):
                    if result.audio is None:
                        continue
                    chunks.append(result.audio.detach().float().cpu().numpy().reshape(-1))
                    phonemes.append(result.phonemes)
            if not chunks or not any(ch.isalpha() for ch in "".join(phonemes)):  # nothing, or pauses only
                raise UnreadableTextError(f"text: turn {i + 1} ({turn.text[:30]!r}) has nothing to pronounce")
            audio = np.concatenate(chunks).astype(np.float32)
            if not np.isfinite(audio).all():
                raise CheckpointError("Kokoro produced NaN or infinite samples (check the weights)")
            turns.append(SpokenTurn(turn.speaker, turn.text, " ".join(phonemes), total / SPEECH_RATE, 0.0))
            total += len(audio)
            turns[-1].end_s = total / SPEECH_RATE
            if total / SPEECH_RATE > max_seconds:
                raise SpeechTooLongError(
                    f"text: the speech passes the {max_seconds:g} s limit at turn {i + 1} of {len(request.turns)}"
                )
            pieces.append((turn.speaker, audio))
        tracks = []
        for speaker in range(request.speakers):
            tracks.append(
                np.concatenate([a if s == speaker else np.zeros_like(a) for s, a in pieces]).astype(np.float32)
            )
        return Speech(tracks, turns)


class _LocalPipeline:
    """The ``kokoro`` package's ``KPipeline`` (its text splitting, 510-phoneme chunking and inference) with our G2P;
    built without ``KPipeline.__init__``, which would fetch a spaCy model and voices from the Hub."""

    @staticmethod
    def make(language: str):
        from kokoro import KPipeline

        pipeline = KPipeline.__new__(KPipeline)
        pipeline.repo_id = KOKORO_REPO
        pipeline.lang_code = language
        pipeline.model = None
        pipeline.voices = {}
        pipeline.g2p = english_g2p(language == "b") if language in "ab" else _espeak_g2p(language)
        return pipeline


def english_g2p(british: bool = False):
    """misaki's English G2P (dictionaries + espeak-ng fallback) over spaCy's rule-based tokenizer (no model)."""
    import spacy
    from misaki import en, espeak

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    # the Penn Treebank tags misaki reads (punctuation phonemes, numbers, currency), given by rule
    tags = {".": ".", "!": ".", "?": ".", ",": ",", ":": ":", ";": ":", "…": ":", "—": ":", "–": ":", "-": "HYPH"}
    tags |= {"(": "-LRB-", ")": "-RRB-", "[": "-LRB-", "]": "-RRB-", '"': "``", "“": "``", "”": "''", "'": "''"}
    for text, tag in tags.items():
        ruler.add([[{"ORTH": text}]], {"TAG": tag})
    ruler.add([[{"LIKE_NUM": True}]], {"TAG": "CD"})
    ruler.add([[{"ORTH": {"IN": ["$", "£", "€"]}}]], {"TAG": "$"})
    g2p = en.G2P.__new__(en.G2P)  # en.G2P.__init__ would download en_core_web_sm
    g2p.version = None
    g2p.british = british
    g2p.nlp = nlp
    g2p.lexicon = en.Lexicon(british)
    g2p.fallback = espeak.EspeakFallback(british=british)
    g2p.unk = ""
    return g2p


def _espeak_g2p(language: str):
    from misaki import espeak

    return espeak.EspeakG2P(language=_ESPEAK_LANGUAGES[language])


class _quiet:
    """Silence loguru (kokoro's logger) and library warnings while Kokoro runs."""

    def __enter__(self):
        import warnings

        from loguru import logger

        logger.disable("kokoro")
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc) -> bool:
        self._warnings.__exit__(*exc)
        return False
