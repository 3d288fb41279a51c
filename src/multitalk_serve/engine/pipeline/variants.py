"""The generation loops on one pipeline: MultiTalk's, InfiniteTalk's and SoulX-FlashTalk's, as data.

All three models are the same transformer code (``models/transformer.py``); MultiTalk and InfiniteTalk differ in
their audio weights (``loading/adapters.py``), FlashTalk is InfiniteTalk's transformer distilled into a whole new set
of weights. Their long-video loops differ in the choices listed here and read by ``generate.py``:

- window length and motion frames (carried from one window to the next): MultiTalk 81 / 25, InfiniteTalk 81 / 9,
  FlashTalk 33 / 5;
- a window's condition (CLIP input, ``y``'s first frames): MultiTalk the motion frames, InfiniteTalk and FlashTalk
  the source frame at the window start (``y``'s mask then marks only that first frame as known);
- motion latents in the sampled latent: MultiTalk re-noises them to the current timestep; InfiniteTalk and
  FlashTalk write them clean, before every forward and after every step. InfiniteTalk's official loop still draws
  MultiTalk's re-noising noise after the first window (and overwrites its result); FlashTalk's does not;
- the sampler: MultiTalk and InfiniteTalk take Euler steps of the guided velocity (2 or 3 passes a step);
  FlashTalk, distilled, takes one pass a step, predicts the clean latent and re-noises it to the next timestep
  (``sampling.x0_renoise_step``) on its own grid (``sampling.flashtalk_timesteps``);
- the audio: MultiTalk and InfiniteTalk read windows of the whole track's wav2vec2 features; FlashTalk computes
  each window's features from the last 8 s of audio up to the window's end (``audio.cached_window_features``, its
  streaming cache), so a window never sees audio after it;
- the first window: MultiTalk and InfiniteTalk keep all its frames; FlashTalk's first window, like every other,
  starts with 5 frames the output does not show (the reference image, then the motion frames), driven by silence.

InfiniteTalk's source is a video (each window re-reads the frame at its start: the identity and camera stay the
source's) or an image (the same frame every window). Its first window's motion latent is the VAE latent of the
reference frame; later windows encode the last motion frames on their own. FlashTalk takes an image and one speaker.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError, SpeakerCountError
from ..limits import MAX_SPEAKERS


@dataclass(frozen=True)
class LoopVariant:
    name: str
    motion_frames: int  # frames carried over from one window to the next
    source_condition: bool  # the window's condition is the source frame at its start (not the motion frames)
    clean_motion: bool  # motion latents written clean at every step (not re-noised to the current timestep)
    takes_video: bool  # a video may be the source
    frames_per_clip: int = 81  # frames of one window
    motion_noise_draw: bool = True  # clean motion: still draw the re-noising noise after window 1 (InfiniteTalk)
    sampler: str = "euler"  # "euler": guided velocity, Euler steps; "x0": one pass, clean prediction re-noised
    cached_audio_s: int = 0  # > 0: each window's features from the last N seconds of audio (FlashTalk's cache)
    lead_in: bool = False  # the first window also starts with motion_frames hidden frames (FlashTalk)
    max_speakers: int = MAX_SPEAKERS
    buckets: str | None = None  # its own size table at 480p (conditioning.BUCKETS), None: the resolution's
    color: str = "skimage"  # colour correction constants (color.py): scikit-image's, or FlashTalk's torch code's

    @property
    def guided(self) -> bool:
        """Text / audio guidance (2-3 transformer passes a step); a distilled model takes one pass."""
        return self.sampler == "euler"


MULTITALK_LOOP = LoopVariant("multitalk", 25, source_condition=False, clean_motion=False, takes_video=False)
INFINITETALK_LOOP = LoopVariant("infinitetalk", 9, source_condition=True, clean_motion=True, takes_video=True)
FLASHTALK_LOOP = LoopVariant(
    "flashtalk",
    5,
    source_condition=True,
    clean_motion=True,
    takes_video=False,
    frames_per_clip=33,
    motion_noise_draw=False,
    sampler="x0",
    cached_audio_s=8,
    lead_in=True,
    max_speakers=1,
    buckets="flashtalk",
    color="flashtalk",
)

# what a caller may name as ``model``: an adapter, "infinitetalk" (its single or multi adapter by speaker count), or
# "flashtalk" (SoulX-FlashTalk-14B, a whole transformer: the ``realtime`` preset)
MODEL_CHOICES = ("multitalk", "infinitetalk", "infinitetalk-single", "infinitetalk-multi", "flashtalk")


def loop_for(model: str) -> LoopVariant:
    """The loop of a model name or adapter name (``MODEL_CHOICES``)."""
    if model.startswith("flashtalk"):
        return FLASHTALK_LOOP
    return INFINITETALK_LOOP if model.startswith("infinitetalk") else MULTITALK_LOOP


def check_model_name(model: object, name: str = "model") -> str:
    if not isinstance(model, str) or model.strip().lower() not in MODEL_CHOICES:
        raise InputError(f"{name} must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    return model.strip().lower()


def adapter_for(model: str, speakers: int, name: str = "model") -> str:
    """The audio adapter that serves ``model`` for ``speakers`` speakers. ``infinitetalk`` picks its single-speaker
    weights for one speaker and its two-speaker weights for two; naming ``infinitetalk-single`` for two speakers is
    refused (it was not trained to route two voices) rather than silently switched; so is ``flashtalk`` (one
    speaker)."""
    model = check_model_name(model, name)
    if model == "infinitetalk":
        return "infinitetalk-multi" if speakers == MAX_SPEAKERS else "infinitetalk-single"
    if model == "infinitetalk-single" and speakers != 1:
        raise SpeakerCountError(
            f"{name}: infinitetalk-single animates one speaker, got {speakers}; use infinitetalk or infinitetalk-multi"
        )
    if model == "flashtalk" and speakers != 1:
        raise SpeakerCountError(
            f"{name}: flashtalk (preset realtime) animates one speaker, got {speakers}; use infinitetalk for two"
        )
    return model
