"""The engine's public interface: everything the worker, the CLI and library users need, and nothing else.

The data path, folder by folder:

- ``loading/``  model folders and files on disk -> models: layouts (original Wan, diffusers, single file, GGUF),
  tensor indexes and streamed reads, the original ``.pth`` encoders, completeness checks (inventory).
- ``models/``   the networks: the MultiTalk transformer (audio projection, audio cross-attention, label RoPE) and
  thin adapters around the library T5 / CLIP / VAE.
- ``pipeline/`` a job: audio front end, conditioning (buckets, boxes, masks), sampling, colour, MP4; ``generate.py``
  holds ``MultiTalkPipeline``.
- ``speed/``    presets and their policy, step caching, speed LoRA, fp8 / offload / memory planner, attention kernels.

Names are imported on first use (so ``import multitalk_serve.engine`` stays cheap for a CLI's ``--help``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .libraries import quiet_library_noise

quiet_library_noise()  # before any library loads: only what a user can act on is printed

# public name -> module (relative to this package) that defines it
_EXPORTS: dict[str, str] = {
    # the pipeline and what a job passes in and gets back
    "MultiTalkPipeline": ".pipeline.generate",
    "GenerateOptions": ".pipeline.generate",
    "GenerationResult": ".pipeline.generate",
    "Progress": ".pipeline.generate",
    "STAGES": ".pipeline.generate",
    "Box": ".pipeline.conditioning",
    "MODEL_CHOICES": ".pipeline.variants",
    "check_inputs": ".pipeline.inputs",
    "check_output_path": ".pipeline.inputs",
    "CheckedInputs": ".pipeline.inputs",
    "InputNames": ".pipeline.inputs",
    "LIBRARY_INPUT_NAMES": ".pipeline.inputs",
    "VIDEO_SUFFIXES": ".pipeline.inputs",
    "ProgressClock": ".pipeline.progress",
    "JobPlan": ".pipeline.segments",
    "LoopState": ".pipeline.segments",
    "Segment": ".pipeline.segments",
    "SEGMENT_FORMAT": ".pipeline.segments",
    "MAX_SPEAKERS": ".limits",
    "MAX_STEPS": ".limits",
    "FPS": ".pipeline.video",
    "SAMPLE_RATE": ".pipeline.audio",
    "DTYPES": ".dtypes",
    "default_dtype": ".dtypes",
    # what media may be: containers and image formats that are opened (nothing else, and nothing they name)
    "AUDIO_CONTAINERS": ".pipeline.media",
    "VIDEO_CONTAINERS": ".pipeline.media",
    "IMAGE_FORMATS": ".pipeline.media",
    "open_container": ".pipeline.media",
    # the condition source of a job: an image or a video read on the 25 fps clock (InfiniteTalk)
    "ImageSource": ".pipeline.source",
    "VideoSource": ".pipeline.source",
    "open_source": ".pipeline.source",
    "sniff_media": ".pipeline.source",
    "SOURCE_ENDS": ".pipeline.source",
    "MAX_VIDEO_SECONDS": ".pipeline.source",
    # keep the rest of the frame: the regenerated region, the blend, and how close two videos are
    "region_mask": ".pipeline.composite",
    "composite": ".pipeline.composite",
    "psnr": ".pipeline.composite",
    # presets and the speed policy
    "PRESETS": ".speed.presets",
    "DEFAULT_PRESET": ".speed.presets",
    "preset_values": ".speed.presets",
    "SettingNames": ".speed.policy",
    "DEFAULT_SPEED_LORA_SCALE": ".speed.policy",
    "LIBRARY_NAMES": ".speed.policy",
    "CLI_NAMES": ".speed.policy",
    "WORKER_NAMES": ".speed.policy",
    "SpeedSetup": ".speed.policy",
    "find_speed_lora": ".speed.policy",
    "plan_speed_setup": ".speed.policy",
    "check_loaded": ".speed.policy",
    "choose_preset": ".speed.policy",
    # memory plans
    "MemoryPlan": ".speed.memory",
    "parse_plan": ".speed.memory",
    "plan_memory": ".speed.memory",
    "T5_BYTES": ".speed.memory",
    # model folders
    "inspect_model_dir": ".loading.inventory",
    "Inventory": ".loading.inventory",
    "find_components": ".loading.paths",
    # models: the audio adapters one base transformer switches between (MultiTalk, InfiniteTalk single / multi)
    "AUDIO_ADAPTERS": ".loading.adapters",
    "DEFAULT_ADAPTER": ".loading.adapters",
    "AdapterSpec": ".loading.adapters",
    "AdapterBank": ".loading.adapters",
    "SwitchReport": ".loading.adapters",
    "adapter_spec": ".loading.adapters",
    # whole models with their own audio layers (FlashTalk): one per process, never with an adapter
    "FULL_MODELS": ".loading.adapters",
    "check_model_set": ".loading.adapters",
    # errors
    "EngineError": ".errors",
    "CheckpointError": ".errors",
    "ConfigError": ".errors",
    "InputError": ".errors",
    "AudioError": ".errors",
    "ImageInputError": ".errors",
    "VideoInputError": ".errors",
    "MaskInputError": ".errors",
    "SpeakerCountError": ".errors",
    "GenerationCancelled": ".errors",
    "SpeechInputError": ".errors",
    "TextEmptyError": ".errors",
    "TextTooLongError": ".errors",
    "SpeechTooLongError": ".errors",
    "UnknownVoiceError": ".errors",
    "VoiceFileError": ".errors",
    "SpeakerTagError": ".errors",
    "UnreadableTextError": ".errors",
    "LanguageError": ".errors",
    "SpeechOptionError": ".errors",
    # text to speech (Kokoro-82M): a request, the synthesiser, its result
    "SpeechSynthesizer": ".pipeline.speech",
    "SpeechRequest": ".pipeline.speech",
    "Speech": ".pipeline.speech",
    "Turn": ".pipeline.speech",
    "SpokenTurn": ".pipeline.speech",
    "FAL_VOICES": ".pipeline.speech",
    "MAX_TEXT_CHARS": ".pipeline.speech",
    "MAX_SPEECH_SECONDS": ".pipeline.speech",
    "SPEECH_RATE": ".pipeline.speech",
    "KOKORO_DIR": ".pipeline.speech",
    "inspect_kokoro": ".pipeline.speech",
    "wav_bytes": ".pipeline.speech",
    "tagged_speakers": ".pipeline.speech",
    # one job on several GPUs (context parallel; docs/parallel.md): the worker's ranks
    "enable_pipeline_parallel": ".parallel.pipeline",
    "JobControl": ".parallel.control",
}

__all__ = [  # the same names as _EXPORTS (a test keeps them equal)
    "AUDIO_ADAPTERS",
    "AUDIO_CONTAINERS",
    "CLI_NAMES",
    "DEFAULT_ADAPTER",
    "DEFAULT_PRESET",
    "DEFAULT_SPEED_LORA_SCALE",
    "DTYPES",
    "FAL_VOICES",
    "FPS",
    "FULL_MODELS",
    "IMAGE_FORMATS",
    "KOKORO_DIR",
    "LIBRARY_INPUT_NAMES",
    "LIBRARY_NAMES",
    "MAX_SPEAKERS",
    "MAX_SPEECH_SECONDS",
    "MAX_STEPS",
    "MAX_TEXT_CHARS",
    "MAX_VIDEO_SECONDS",
    "MODEL_CHOICES",
    "PRESETS",
    "SAMPLE_RATE",
    "SEGMENT_FORMAT",
    "SOURCE_ENDS",
    "SPEECH_RATE",
    "STAGES",
    "T5_BYTES",
    "VIDEO_CONTAINERS",
    "VIDEO_SUFFIXES",
    "WORKER_NAMES",
    "AdapterBank",
    "AdapterSpec",
    "AudioError",
    "Box",
    "CheckedInputs",
    "CheckpointError",
    "ConfigError",
    "EngineError",
    "GenerateOptions",
    "GenerationCancelled",
    "GenerationResult",
    "ImageInputError",
    "ImageSource",
    "InputError",
    "InputNames",
    "Inventory",
    "JobControl",
    "JobPlan",
    "LanguageError",
    "LoopState",
    "MaskInputError",
    "MemoryPlan",
    "MultiTalkPipeline",
    "Progress",
    "ProgressClock",
    "Segment",
    "SettingNames",
    "SpeakerCountError",
    "SpeakerTagError",
    "Speech",
    "SpeechInputError",
    "SpeechOptionError",
    "SpeechRequest",
    "SpeechSynthesizer",
    "SpeechTooLongError",
    "SpeedSetup",
    "SpokenTurn",
    "SwitchReport",
    "TextEmptyError",
    "TextTooLongError",
    "Turn",
    "UnknownVoiceError",
    "UnreadableTextError",
    "VideoInputError",
    "VideoSource",
    "VoiceFileError",
    "adapter_spec",
    "check_inputs",
    "check_loaded",
    "check_model_set",
    "check_output_path",
    "choose_preset",
    "composite",
    "default_dtype",
    "enable_pipeline_parallel",
    "find_components",
    "find_speed_lora",
    "inspect_kokoro",
    "inspect_model_dir",
    "open_container",
    "open_source",
    "parse_plan",
    "plan_memory",
    "plan_speed_setup",
    "preset_values",
    "psnr",
    "region_mask",
    "sniff_media",
    "tagged_speakers",
    "wav_bytes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from .dtypes import DTYPES, default_dtype
    from .errors import (
        AudioError,
        CheckpointError,
        ConfigError,
        EngineError,
        GenerationCancelled,
        ImageInputError,
        InputError,
        MaskInputError,
        SpeakerCountError,
        VideoInputError,
    )
    from .limits import MAX_SPEAKERS, MAX_STEPS
    from .loading.adapters import (
        AUDIO_ADAPTERS,
        DEFAULT_ADAPTER,
        FULL_MODELS,
        AdapterBank,
        AdapterSpec,
        SwitchReport,
        adapter_spec,
        check_model_set,
    )
    from .loading.inventory import Inventory, inspect_model_dir
    from .loading.paths import find_components
    from .parallel.control import JobControl
    from .parallel.pipeline import enable_pipeline_parallel
    from .pipeline.audio import SAMPLE_RATE
    from .pipeline.composite import composite, psnr, region_mask
    from .pipeline.conditioning import Box
    from .pipeline.generate import STAGES, GenerateOptions, GenerationResult, MultiTalkPipeline, Progress
    from .pipeline.inputs import (
        LIBRARY_INPUT_NAMES,
        VIDEO_SUFFIXES,
        CheckedInputs,
        InputNames,
        check_inputs,
        check_output_path,
    )
    from .pipeline.media import AUDIO_CONTAINERS, IMAGE_FORMATS, VIDEO_CONTAINERS, open_container
    from .pipeline.progress import ProgressClock
    from .pipeline.segments import SEGMENT_FORMAT, JobPlan, LoopState, Segment
    from .pipeline.source import (
        MAX_VIDEO_SECONDS,
        SOURCE_ENDS,
        ImageSource,
        VideoSource,
        open_source,
        sniff_media,
    )
    from .pipeline.variants import MODEL_CHOICES
    from .pipeline.video import FPS
    from .speed.memory import T5_BYTES, MemoryPlan, parse_plan, plan_memory
    from .speed.policy import (
        CLI_NAMES,
        DEFAULT_SPEED_LORA_SCALE,
        LIBRARY_NAMES,
        WORKER_NAMES,
        SettingNames,
        SpeedSetup,
        check_loaded,
        choose_preset,
        find_speed_lora,
        plan_speed_setup,
    )
    from .speed.presets import DEFAULT_PRESET, PRESETS, preset_values
