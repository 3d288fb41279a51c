"""The one owner of the preset / speed-LoRA policy: which LoRA file a process loads, whether it is merged into the
weights, and which preset a job runs. The pipeline's loader, the worker and the CLI all call these functions, so
the rules (and their messages) exist once. Messages name each setting as the caller exposes it (``SettingNames``:
the worker's environment variables, the CLI's options, the library's keyword arguments).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError
from .presets import PRESETS, preset_values

SPEED_LORA_DIR = "Lightx2v"  # where ``download --speed-lora`` puts the LoRA inside a model folder
# The speed LoRA's strength unless the caller sets one (MULTITALK_SPEED_LORA_SCALE, --speed-lora-scale,
# speed_lora_scale=). 1.0 is what the LoRA's publishers run: lightx2v's own config for its Wan2.1 I2V 4-step distill
# LoRA (ModelTC/LightX2V configs/distill/wan21/wan_i2v_distill_lora_4step_cfg.json) uses strength 1.0, and a
# step-distillation LoRA is the difference to the distilled model, which strength 1 reproduces. The official
# MultiTalk CLI's --lora_scale defaults to 1.2, but every LoRA command in its README passes --lora_scale 1.0; its
# merge ignores the LoRA's alpha, ours applies alpha / rank (the same when alpha = rank, as in the lightx2v files).
DEFAULT_SPEED_LORA_SCALE = 1.0
# The original worker's ``turbo`` on a worker without a speed LoRA: fewer steps and 2-pass guidance on the base model.
TURBO_BASE = {"steps": 16, "text_scale": 1.0, "audio_scale": 3.0, "shift": None, "speed_lora": False}


@dataclass(frozen=True)
class SettingNames:
    """How the caller names each setting, for messages."""

    preset: str = "default_preset"
    speed_lora: str = "speed_lora"
    fuse: str = "fuse_speed_lora"


LIBRARY_NAMES = SettingNames()
CLI_NAMES = SettingNames(preset="--preset", speed_lora="--speed-lora", fuse="--fuse-speed-lora")
WORKER_NAMES = SettingNames(
    preset="MULTITALK_PRESET", speed_lora="MULTITALK_SPEED_LORA", fuse="MULTITALK_FUSE_SPEED_LORA"
)


def find_speed_lora(model_path: str | Path, given: str | Path | None = None) -> Path | None:
    """The speed LoRA to load: ``given`` (absolute, or relative to ``model_path``; ``"none"``: no LoRA); unset, the
    first ``model_path/Lightx2v/*.safetensors`` (where ``download --speed-lora`` puts it), if any."""
    model_path = Path(model_path)
    if given is not None:
        if str(given).lower() == "none":
            return None
        path = Path(given)
        return path if path.is_absolute() else model_path / path
    found = sorted((model_path / SPEED_LORA_DIR).glob("*.safetensors"))
    return found[0] if found else None


@dataclass(frozen=True)
class SpeedSetup:
    """What a process loads for speed: the LoRA file (or none), its scale, and whether it is merged into the weights
    (``None``: only where the weights need it, i.e. fp8; the process then serves only presets that use it)."""

    default_preset: str
    speed_lora: Path | None
    scale: float
    fuse: bool | None


def plan_speed_setup(
    default_preset: str,
    speed_lora: Path | None,
    scale: float = DEFAULT_SPEED_LORA_SCALE,
    fuse: bool = False,
    names: SettingNames = LIBRARY_NAMES,
) -> SpeedSetup:
    """Check a process's speed settings before anything loads; ``ConfigError`` naming the setting when they
    contradict each other."""
    if default_preset not in PRESETS:
        raise ConfigError(f"{names.preset} must be one of {', '.join(PRESETS)}, got {default_preset!r}")
    wants_lora = bool(PRESETS[default_preset].speed_lora)
    if speed_lora is not None and not Path(speed_lora).is_file():
        raise ConfigError(f"{names.speed_lora}: {speed_lora} is not a file")
    if fuse and (speed_lora is None or not wants_lora):
        raise ConfigError(f"{names.fuse} needs a speed LoRA ({names.speed_lora}) and {names.preset}=fast")
    if wants_lora and speed_lora is None:
        raise ConfigError(
            f"{names.preset}={default_preset} needs a speed LoRA ({names.speed_lora}, or download --speed-lora)"
        )
    # one that serves fast by default merges the LoRA if its weights need it (fp8); otherwise it stays switchable
    return SpeedSetup(default_preset, speed_lora, scale, True if fuse else (None if wants_lora else False))


def check_loaded(setup: SpeedSetup, loaded: Path | None, notes: list[str], names: SettingNames = LIBRARY_NAMES) -> None:
    """After loading: a process whose default preset needs the LoRA must have it."""
    if PRESETS[setup.default_preset].speed_lora and loaded is None:
        raise ConfigError(
            f"{names.preset}={setup.default_preset}, but the speed LoRA was not loaded: " + "; ".join(notes)
        )


def fp8_lora_note(speed_lora: Path, names: SettingNames = LIBRARY_NAMES) -> str:
    """Why a speed LoRA is left out when the weights are fp8 and merging was not allowed."""
    return (
        f"speed LoRA {speed_lora.name} not loaded: with fp8 weights a speed LoRA is merged into the weights at load "
        f"({names.preset}=fast or {names.fuse}), and the process then runs only fast"
    )


def choose_preset(
    requested: str | None,
    default: str,
    *,
    lora_loaded: bool,
    lora_fused: bool,
    turbo: bool = False,
    warnings: list[str] | None = None,
) -> tuple[str, dict[str, object]]:
    """The preset a job runs and its option values. ``turbo`` (the original worker's switch) means fast; without a
    loaded LoRA it falls back to the base-model recipe (``turbo-base``) with a warning. ``InputError`` when the
    preset needs what this process does not have."""
    if turbo and requested not in (None, "fast"):
        raise InputError(f"turbo means preset=fast; it conflicts with preset={requested}")
    name = requested or ("fast" if turbo else default)
    try:
        values = preset_values(name)
    except Exception as exc:
        raise InputError(str(exc)) from exc
    if values["speed_lora"] and not lora_loaded:
        if requested is None and turbo:
            if warnings is not None:
                warnings.append("turbo: fewer steps and 2-pass guidance on the base model (no speed LoRA is loaded)")
            return "turbo-base", {**values, **TURBO_BASE}
        raise InputError(
            f"preset: {name} needs a speed LoRA and none is loaded (download --speed-lora puts one in "
            f"MODEL/{SPEED_LORA_DIR}/); use quality or balanced"
        )
    if lora_fused and not values["speed_lora"]:
        raise InputError(f"preset: the speed LoRA is fused into the weights, so only fast runs here, not {name}")
    return name, values
