"""``generate --text`` and the official JSON's ``tts_audio``: speech from text (Kokoro-82M in the model folder), then
the usual job on the synthesised tracks. Kept apart from ``cli.py`` (which calls the two functions below)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

DEFAULT_VOICES = ("af_heart", "am_adam")  # the official examples' voices for person 1 and person 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text",
        help="speak this instead of --audio (Kokoro-82M in the model folder): plain text for one speaker, or a "
        "dialogue '(s1) ... (s2) ...' for two (each silent while the other talks)",
    )
    p.add_argument(
        "--voice",
        action="append",
        help="with --text: a voice name (af_heart, am_adam, ...: MODEL/Kokoro-82M/voices) or a voice file (.pt); "
        "once per speaker (default af_heart, and am_adam for a second speaker)",
    )
    p.add_argument("--speech-speed", type=float, default=1.0, help="with --text: speaking rate, 0.5 to 2 (default 1)")
    p.add_argument("--language", help="with --text: Kokoro's language code (a, b, e, f, h, i, p; default: the voice's)")
    p.add_argument("--speech-out", help="with --text: where to write the speech (WAV); default OUT with .wav")


def speech_request(args: argparse.Namespace, json_speech=None):
    """The speech request of this run (``--text`` or the JSON's ``tts_audio``), or None. ``InputError`` for
    options that contradict it."""
    from .engine import InputError, SpeechRequest, tagged_speakers

    text = getattr(args, "text", None)
    if text is None:
        if getattr(args, "voice", None):
            raise InputError("--voice is the voice of --text: add --text (or drop --voice)")
        return json_speech
    if json_speech is not None:
        raise InputError("--text and tts_audio in --input-json both give the speech: give one")
    if args.audio is not None:
        raise InputError("--text and --audio both give the speech: give one")
    voices = args.voice or list(DEFAULT_VOICES[: min(2, max(1, tagged_speakers(text)))])
    return SpeechRequest.from_text(text, voices, args.speech_speed, args.language, field="--text")


def synthesize(args: argparse.Namespace, request, out: str, bases: list[Path]) -> tuple[list[bytes], str, dict]:
    """Load Kokoro from ``args.model``, speak ``request`` and write the speech next to the video. Returns (one WAV a
    speaker for ``generate``, the audio type, the summary's speech fields)."""
    from .engine import SpeechSynthesizer, wav_bytes

    start = time.perf_counter()
    synth = SpeechSynthesizer.from_pretrained(args.model, device=args.device)
    voices = [_local_voice(v, synth, bases) for v in request.voices]
    request = dataclasses.replace(request, voices=tuple(voices))
    loaded = time.perf_counter()
    speech = synth.synthesize(request, max_seconds=args.max_duration)
    took = time.perf_counter() - loaded
    path = Path(getattr(args, "speech_out", None) or Path(out).with_suffix(".wav"))
    path.write_bytes(wav_bytes(speech.mixed, speech.rate))
    print(
        f"speech: {speech.seconds:.1f} s for {len(request.turns)} turn(s) in {took:.1f} s "
        f"(Kokoro loaded in {loaded - start:.1f} s), written to {path}",
        file=sys.stderr,
    )
    fields = {"speech": str(path), "speech_seconds": round(speech.seconds, 3)}
    return speech.track_wavs(), speech.audio_type, fields


def _local_voice(value, synth, bases: list[Path]):
    """A voice the Kokoro folder has (by file name), else a voice file on this machine (its bytes), else the name
    (the synthesiser then lists the voices it has)."""
    if isinstance(value, bytes):
        return value
    name = Path(value).name.removesuffix(".pt")
    if name in synth.voices:
        return name
    for base in bases:
        candidate = base / Path(value).expanduser()
        if candidate.is_file():
            return candidate.read_bytes()
    return value
