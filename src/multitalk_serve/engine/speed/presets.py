"""Speed presets: named starting points for the sampling options; every field can still be set on its own.

| preset | steps | guidance | shift | step cache | speed LoRA | forwards per 81-frame clip |
|---|---|---|---|---|---|---|
| ``quality`` | 40 | 3-pass (text 5, audio 4) | 7 / 11 | off | no | 120 |
| ``balanced`` | 40 | 3-pass (text 5, audio 4) | 7 / 11 | TeaCache 0.2 | no | 120, of which the cache skips a share |
| ``fast`` | 4 | 2-pass (text 1, audio 2) | 2 | off | yes | 8 |
| ``realtime`` | 4 | none (1 pass) | 5 | off | no (distilled model) | 4 per 33-frame window |

``quality`` is the official default. ``balanced`` is the official ``--use_teacache`` run (threshold 0.2, the
official default). ``fast`` is the official recipe for the lightx2v step-distilled LoRA (4 steps, text scale 1, audio
scale 2, shift 2; FusionX: 8 steps); it needs a speed LoRA loaded (``MultiTalkPipeline.load_speed_lora``).
``realtime`` is another model: SoulX-FlashTalk-14B (``model="flashtalk"``), InfiniteTalk distilled to 4 steps without
guidance, 33-frame windows (28 new frames each) at about 768x448, one speaker (``variants.FLASHTALK_LOOP``); the
preset and the model go together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import EngineError
from .step_cache import DEFAULT_THRESHOLD


@dataclass(frozen=True)
class Preset:
    steps: int
    text_scale: float
    audio_scale: float
    shift: float | None  # None: the resolution's default (7 at 480p, 11 at 720p)
    cache_threshold: float
    speed_lora: bool
    model: str | None = None  # the model the preset runs (None: whatever the job names)


PRESETS: dict[str, Preset] = {
    "quality": Preset(steps=40, text_scale=5.0, audio_scale=4.0, shift=None, cache_threshold=0.0, speed_lora=False),
    "balanced": Preset(
        steps=40, text_scale=5.0, audio_scale=4.0, shift=None, cache_threshold=DEFAULT_THRESHOLD, speed_lora=False
    ),
    "fast": Preset(steps=4, text_scale=1.0, audio_scale=2.0, shift=2.0, cache_threshold=0.0, speed_lora=True),
    "realtime": Preset(
        steps=4, text_scale=1.0, audio_scale=1.0, shift=5.0, cache_threshold=0.0, speed_lora=False, model="flashtalk"
    ),
}
DEFAULT_PRESET = "quality"
PRESET_FIELDS = tuple(f.name for f in fields(Preset))


def preset_values(name: str) -> dict[str, object]:
    """The option values a preset sets (``GenerateOptions`` field names; ``model`` only where the preset has one)."""
    if name not in PRESETS:
        raise EngineError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    values = asdict(PRESETS[name])
    if values["model"] is None:
        del values["model"]
    return values


def preset_for_model(model: str) -> str | None:
    """The preset a model must run with (``realtime`` for ``flashtalk``), or None when any preset will do."""
    return next((name for name, p in PRESETS.items() if p.model == model), None)
