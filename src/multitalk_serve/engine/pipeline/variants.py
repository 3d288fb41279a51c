"""The two generation loops on one pipeline: MultiTalk's and InfiniteTalk's, as data.

Both models are the same transformer with different audio weights (``loading/adapters.py``); their long-video
loops differ in four choices, listed here and read by ``generate.py``:

- motion frames (carried from one window to the next): MultiTalk 25, InfiniteTalk 9;
- a window's condition (CLIP input, ``y``'s first frames): MultiTalk the motion frames, InfiniteTalk the source
  frame at the window start (``y``'s mask then marks only that first frame as known);
- motion latents in the sampled latent: MultiTalk re-noises them to the current timestep; InfiniteTalk writes them
  clean, before every forward and after every step.

InfiniteTalk's source is a video (each window re-reads the frame at its start: the identity and camera stay the
source's) or an image (the same frame every window). Its first window's motion latent is the VAE latent of the
reference frame; later windows encode the last 9 generated frames on their own.
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


MULTITALK_LOOP = LoopVariant("multitalk", 25, source_condition=False, clean_motion=False, takes_video=False)
INFINITETALK_LOOP = LoopVariant("infinitetalk", 9, source_condition=True, clean_motion=True, takes_video=True)

# what a caller may name as ``model``: an adapter, or "infinitetalk" (its single or multi adapter by speaker count)
MODEL_CHOICES = ("multitalk", "infinitetalk", "infinitetalk-single", "infinitetalk-multi")


def loop_for(model: str) -> LoopVariant:
    """The loop of a model name or adapter name (``MODEL_CHOICES``)."""
    return INFINITETALK_LOOP if model.startswith("infinitetalk") else MULTITALK_LOOP


def check_model_name(model: object, name: str = "model") -> str:
    if not isinstance(model, str) or model.strip().lower() not in MODEL_CHOICES:
        raise InputError(f"{name} must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    return model.strip().lower()


def adapter_for(model: str, speakers: int, name: str = "model") -> str:
    """The audio adapter that serves ``model`` for ``speakers`` speakers. ``infinitetalk`` picks its single-speaker
    weights for one speaker and its two-speaker weights for two; naming ``infinitetalk-single`` for two speakers is
    refused (it was not trained to route two voices) rather than silently switched."""
    model = check_model_name(model, name)
    if model == "infinitetalk":
        return "infinitetalk-multi" if speakers == MAX_SPEAKERS else "infinitetalk-single"
    if model == "infinitetalk-single" and speakers != 1:
        raise SpeakerCountError(
            f"{name}: infinitetalk-single animates one speaker, got {speakers}; use infinitetalk or infinitetalk-multi"
        )
    return model
