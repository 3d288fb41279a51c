"""Every error the engine raises, in one place. Each message names what is wrong (file, key, field) so callers can
show it as is; callers catch ``EngineError`` for all of them."""


class EngineError(Exception):
    """Base class of the engine's errors."""


class CheckpointError(EngineError):
    """A model directory or file is missing, incomplete or inconsistent (files, keys, shapes, configs)."""


class ConfigError(EngineError):
    """A process's settings contradict each other or name something that is not there (found before loading)."""


class InputError(EngineError):
    """Something the caller passed cannot be used (before any model runs)."""


class AudioError(InputError):
    """An audio input cannot be used (unreadable, no audio track, empty, not finite, ...)."""


class ImageInputError(InputError):
    """The reference image or the person boxes cannot be used."""


class SpeakerCountError(InputError):
    """The audio holds a number of speakers the model cannot route."""


class GenerationCancelled(EngineError):
    """Raised (by the progress callback, or the pipeline on its behalf) to stop between sampling steps."""


class VideoInputError(InputError):
    """A video input cannot be used (unreadable, no video stream, no frames, too large, too long, an image given
    as a video)."""


class MaskInputError(ImageInputError):
    """The keep-the-rest mask cannot be used (unreadable, not the source's size, nothing to regenerate)."""


class SpeechInputError(InputError):
    """Text to speech cannot run on what was given (base class; ``code`` is stable, see ``engine.pipeline.speech``)."""

    code = "E_SPEECH"


class TextEmptyError(SpeechInputError):
    code = "E_TEXT_EMPTY"


class TextTooLongError(SpeechInputError):
    code = "E_TEXT_TOO_LONG"


class SpeechTooLongError(SpeechInputError):
    code = "E_SPEECH_TOO_LONG"


class UnknownVoiceError(SpeechInputError):
    code = "E_UNKNOWN_VOICE"


class VoiceFileError(SpeechInputError):
    code = "E_VOICE_FILE"


class SpeakerTagError(SpeechInputError):
    code = "E_SPEAKER_TAG"


class UnreadableTextError(SpeechInputError):
    code = "E_UNREADABLE_TEXT"


class LanguageError(SpeechInputError):
    code = "E_LANGUAGE"


class SpeechOptionError(SpeechInputError):
    code = "E_SPEECH_OPTION"
