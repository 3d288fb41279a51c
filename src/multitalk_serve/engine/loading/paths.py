"""Where each component lives: a model root, its provisioning manifest, and Hugging Face caches.

A model root may hold any mix of the published layouts (``multitalk-serve download`` writes them like this)::

    ROOT/Wan2.1-I2V-14B-480P-Diffusers/   diffusers layout: text_encoder/ tokenizer/ image_encoder/ vae/ (transformer/)
    ROOT/Wan2.1-I2V-14B-480P/             original layout: transformer shards, models_t5_*.pth, models_clip_*.pth,
                                          Wan2.1_VAE.pth, google/umt5-xxl/
    ROOT/*.gguf                           a GGUF transformer
    ROOT/MeiGen-MultiTalk/multitalk.safetensors
    ROOT/InfiniteTalk/single/infinitetalk.safetensors, ROOT/InfiniteTalk/multi/infinitetalk.safetensors
    ROOT/SoulX-FlashTalk-14B/             FlashTalk: a whole transformer (original Wan layout, its shards hold the audio
                                          layers too) and the Wan encoders (models_t5_*.pth, ... google/umt5-xxl/)
    ROOT/chinese-wav2vec2-base/
    ROOT/Kokoro-82M/                      optional, text input only: config.json, kokoro-v1_0.pth, voices/*.pt
    ROOT/.multitalk/manifest.json         written by ``download``: which profile, and which file is which component

The audio weights are the audio adapters (``loading/adapters.py``): MultiTalk's, InfiniteTalk's single and multi.
A folder needs at least one of them (or a transformer that holds its audio weights); any mix is a valid folder, an
InfiniteTalk-only one (no ``MeiGen-MultiTalk/``) included. ``ModelPaths.adapters()`` lists those found.

FlashTalk (``Soul-AILab/SoulX-FlashTalk-14B``) is not an adapter: it is a transformer of its own (InfiniteTalk's,
distilled), audio layers inside, which the Wan base cannot share. ``ModelPaths.flashtalk`` is its folder (never
listed by ``adapters()``); it is also where the encoders are taken from when no Wan folder has them, and the
transformer when there is no Wan transformer (a folder holding only FlashTalk and the wav2vec2 is complete).

ROOT may also itself be a ``-Diffusers`` or original folder. A component not found under ROOT is looked up in the
Hugging Face caches (``HF_HUB_CACHE``, ``HF_HOME/hub`` and RunPod's cached models under
``/runpod-volume/huggingface-cache/hub``), in place: nothing is copied. Order for each component: an explicit
argument, the manifest, then discovery (diffusers layout before the original one; for the transformer the
diffusers ``transformer/`` if it holds weights, then the original shards, then a GGUF file if there is one only,
then FlashTalk's folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import CheckpointError
from .formats import GGUF, format_of
from .layouts import (
    CONFIG_NAME,
    INFINITETALK_WEIGHTS_NAME,
    MODEL_INDEX_NAME,
    MULTITALK_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)
from .original_encoders import CLIP_CHECKPOINT, T5_CHECKPOINT, T5_TOKENIZER, VAE_CHECKPOINT

DIFFUSERS_DIR = "Wan2.1-I2V-14B-480P-Diffusers"
ORIGINAL_DIR = "Wan2.1-I2V-14B-480P"
MULTITALK_DIR = "MeiGen-MultiTalk"
INFINITETALK_DIR = "InfiniteTalk"  # MeiGen-AI/InfiniteTalk as its README downloads it: single/ multi/ quant_models/
FLASHTALK_DIR = "SoulX-FlashTalk-14B"  # Soul-AILab/SoulX-FlashTalk-14B as its README downloads it
WAV2VEC_DIR = "chinese-wav2vec2-base"
KOKORO_DIR = "Kokoro-82M"  # text to speech (hexgrad/Kokoro-82M): config.json, kokoro-v1_0.pth, voices/*.pt
MANIFEST = Path(".multitalk") / "manifest.json"
RUNPOD_HF_CACHE = Path("/runpod-volume/huggingface-cache/hub")

# Audio adapter name (``adapters.AUDIO_ADAPTERS``, what a request and ``download --models`` name) -> the
# ``ModelPaths`` field (and the provisioning manifest's component name) holding its weights file.
ADAPTER_FIELDS = {
    "multitalk": "multitalk",
    "infinitetalk-single": "infinitetalk_single",
    "infinitetalk-multi": "infinitetalk_multi",
}
# Where each adapter's weights lie under a model root, as the official READMEs download them (for messages).
ADAPTER_FILES = {
    "multitalk": f"{MULTITALK_DIR}/{MULTITALK_WEIGHTS_NAME} (MeiGen-AI/MeiGen-MultiTalk)",
    "infinitetalk-single": f"{INFINITETALK_DIR}/single/{INFINITETALK_WEIGHTS_NAME} (MeiGen-AI/InfiniteTalk)",
    "infinitetalk-multi": f"{INFINITETALK_DIR}/multi/{INFINITETALK_WEIGHTS_NAME} (MeiGen-AI/InfiniteTalk)",
}
# Models that are whole transformers with their audio layers (``adapters.FULL_MODELS``) -> their ``ModelPaths`` field.
FULL_MODEL_FIELDS = {"flashtalk": "flashtalk"}
FULL_MODEL_FILES = {"flashtalk": f"{FLASHTALK_DIR}/ (Soul-AILab/SoulX-FlashTalk-14B)"}

# Hugging Face repositories each folder comes from (for cache lookups).
REPOS = {
    "diffusers": ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"),
    "original": ("Wan-AI/Wan2.1-I2V-14B-480P", "Wan-AI/Wan2.1-I2V-14B-720P"),
    "multitalk": ("MeiGen-AI/MeiGen-MultiTalk",),
    "infinitetalk": ("MeiGen-AI/InfiniteTalk",),
    "flashtalk": ("Soul-AILab/SoulX-FlashTalk-14B",),
    "wav2vec": ("TencentGameMate/chinese-wav2vec2-base",),
}


@dataclass(frozen=True)
class ModelPaths:
    transformer: Path  # any layout load_transformer accepts
    multitalk: Path | None  # None: no MultiTalk file (InfiniteTalk only, or audio weights in/beside the transformer)
    text_encoder: Path  # diffusers folder or the original .pth
    tokenizer: Path
    image_encoder: Path  # diffusers folder or the original .pth
    image_processor: Path | None  # None: the official CLIP normalisation
    vae: Path  # diffusers folder or the original .pth
    wav2vec: Path
    infinitetalk_single: Path | None = None  # InfiniteTalk's audio weights, if present (loading/adapters.py)
    infinitetalk_multi: Path | None = None
    flashtalk: Path | None = None  # FlashTalk's folder (a transformer with its audio layers, and encoders), if present

    def adapters(self) -> dict[str, Path]:
        """The audio adapters found, by name, in the order ``multitalk``, ``infinitetalk-single``,
        ``infinitetalk-multi`` (the only listing of what a folder holds; ``ADAPTER_FIELDS`` maps the names)."""
        return {k: getattr(self, f) for k, f in ADAPTER_FIELDS.items() if getattr(self, f) is not None}

    def as_dict(self) -> dict[str, str | None]:
        return {f.name: (str(getattr(self, f.name)) if getattr(self, f.name) else None) for f in fields(self)}


def hf_cache_dirs() -> list[Path]:
    """Hugging Face hub caches to search, existing ones only: ``HF_HUB_CACHE``, ``HF_HOME/hub``, RunPod's."""
    candidates = []
    if os.environ.get("HF_HUB_CACHE"):
        candidates.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        candidates.append(Path(os.environ["HF_HOME"]) / "hub")
    candidates.append(RUNPOD_HF_CACHE)
    return [p for p in dict.fromkeys(candidates) if p.is_dir()]


def cached_snapshot(repo_id: str, cache_dirs: list[Path], revision: str = "main") -> Path | None:
    """``<cache>/models--org--name/snapshots/<commit>`` for ``revision`` (via ``refs/``), or the only snapshot."""
    for cache in cache_dirs:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / revision
        if ref.is_file():
            commit = ref.read_text().strip()
            if (snapshots / commit).is_dir():
                return snapshots / commit
        found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


def read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest ({exc}); rerun `download` to rewrite it") from exc


def _is_diffusers(folder: Path) -> bool:
    return (folder / MODEL_INDEX_NAME).is_file()


def _is_original(folder: Path) -> bool:
    return (folder / T5_CHECKPOINT).is_file() or (folder / VAE_CHECKPOINT).is_file()


def _has_transformer(folder: Path) -> bool:
    weights = (folder / WEIGHTS_INDEX_NAME).is_file() or (folder / WEIGHTS_NAME).is_file()
    return (folder / CONFIG_NAME).is_file() and weights


def _is_flashtalk(folder: Path) -> bool:
    """A FlashTalk folder: a transformer whose config states the audio layers (the official ``WanModel`` of
    InfiniteTalk / FlashTalk registers ``audio_window``, ``output_dim``, ...), or one in a folder named as published."""
    if not _has_transformer(folder):
        return False
    if folder.name == FLASHTALK_DIR:
        return True
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "audio_window" in config and "dim" in config


def _find_folder(root: Path, kind: str, cache_dirs: list[Path]) -> Path | None:
    """A Wan folder of ``kind`` (``diffusers`` or ``original``); FlashTalk's folder, although in the original layout,
    is not one (its transformer is FlashTalk's own; ``_find_flashtalk``)."""
    base = _is_diffusers if kind == "diffusers" else _is_original

    def test(p: Path) -> bool:
        return base(p) and not (kind == "original" and _is_flashtalk(p))

    if test(root):
        return root
    preferred = root / (DIFFUSERS_DIR if kind == "diffusers" else ORIGINAL_DIR)
    if test(preferred):
        return preferred
    found = sorted(p for p in root.iterdir() if p.is_dir() and test(p)) if root.is_dir() else []
    if found:
        return found[0]
    for repo in REPOS[kind]:
        snapshot = cached_snapshot(repo, cache_dirs)
        if snapshot is not None and test(snapshot):
            return snapshot
    return None


def _find_named(root: Path, folder: str, kind: str, cache_dirs: list[Path], check) -> Path | None:
    if check(root / folder):
        return root / folder
    for repo in REPOS[kind]:
        for revision in ("main", "refs/pr/1"):
            snapshot = cached_snapshot(repo, cache_dirs, revision)
            if snapshot is not None and check(snapshot):
                return snapshot
    return None


def _from_manifest(root: Path, manifest: dict | None) -> dict[str, Path | None]:
    out: dict[str, Path | None] = {}
    for name, value in ((manifest or {}).get("components") or {}).items():
        out[name] = None if value is None else (Path(value) if Path(value).is_absolute() else root / value)
    return out


def resolve_model_paths(
    root: str | Path,
    *,
    transformer: str | Path | None = None,
    multitalk: str | Path | None = None,
    wav2vec: str | Path | None = None,
    cache_dirs: list[Path] | None = None,
    adapters: Sequence[str] | None = None,
) -> ModelPaths:
    """Every component's path (see module docstring); ``CheckpointError`` lists everything that is missing.

    ``adapters``: the audio adapters the caller needs (names of ``AUDIO_ADAPTERS``); each one missing is a problem
    naming the file expected. ``None``: whatever the folder holds (``ModelPaths.adapters()``)."""
    found, problems = find_components(
        root, transformer=transformer, multitalk=multitalk, wav2vec=wav2vec, cache_dirs=cache_dirs, adapters=adapters
    )
    if problems:
        raise CheckpointError(f"incomplete model directory {root}: " + "; ".join(problems))
    return ModelPaths(**found)


def find_components(
    root: str | Path,
    *,
    transformer: str | Path | None = None,
    multitalk: str | Path | None = None,
    wav2vec: str | Path | None = None,
    cache_dirs: list[Path] | None = None,
    adapters: Sequence[str] | None = None,
) -> tuple[dict[str, Path | None], list[str]]:
    """What ``resolve_model_paths`` finds, without raising: (component -> path or None, problems)."""
    root = Path(root)
    unknown = [a for a in adapters or () if a not in ADAPTER_FIELDS and a not in FULL_MODEL_FIELDS]
    if unknown:
        known = ", ".join((*ADAPTER_FIELDS, *FULL_MODEL_FIELDS))
        return dict.fromkeys(f.name for f in fields(ModelPaths)), [
            f"unknown audio model {a!r}: choose from {known}" for a in unknown
        ]
    if not root.is_dir():
        return dict.fromkeys(f.name for f in fields(ModelPaths)), [f"model directory does not exist: {root}"]
    caches = hf_cache_dirs() if cache_dirs is None else cache_dirs
    listed = _from_manifest(root, read_manifest(root))
    diffusers = _find_folder(root, "diffusers", caches)
    original = _find_folder(root, "original", caches)
    problems = []

    def pick(name: str, explicit, *candidates: Path | None) -> Path | None:
        if explicit is not None:
            return Path(explicit)
        if name in listed:
            return listed[name]
        return next((c for c in candidates if c is not None and c.exists()), None)

    def sub(folder: Path | None, name: str) -> Path | None:
        return folder / name if folder is not None and (folder / name).exists() else None

    flashtalk = pick(
        "flashtalk",
        None,
        root if _is_flashtalk(root) else _find_named(root, FLASHTALK_DIR, "flashtalk", caches, _has_transformer),
    )
    text_encoder = pick(
        "text_encoder",
        None,
        sub(diffusers, "text_encoder"),
        sub(original, T5_CHECKPOINT),
        sub(flashtalk, T5_CHECKPOINT),
    )
    tokenizer = pick(
        "tokenizer", None, sub(diffusers, "tokenizer"), sub(original, T5_TOKENIZER), sub(flashtalk, T5_TOKENIZER)
    )
    image_encoder = pick(
        "image_encoder",
        None,
        sub(diffusers, "image_encoder"),
        sub(original, CLIP_CHECKPOINT),
        sub(flashtalk, CLIP_CHECKPOINT),
    )
    image_processor = pick("image_processor", None, sub(diffusers, "image_processor"))
    vae = pick("vae", None, sub(diffusers, "vae"), sub(original, VAE_CHECKPOINT), sub(flashtalk, VAE_CHECKPOINT))
    diffusers_transformer = sub(diffusers, "transformer")
    if diffusers_transformer is not None and not _has_transformer(diffusers_transformer):
        diffusers_transformer = None  # encoders-only download (a GGUF profile)
    original_transformer = original if original is not None and _has_transformer(original) else None
    ggufs = sorted(p for p in root.glob("*") if p.is_file() and format_of(p) is GGUF)
    chosen = pick(
        "transformer",
        transformer,
        diffusers_transformer,
        original_transformer,
        ggufs[0] if len(ggufs) == 1 else None,
        None if len(ggufs) > 1 else flashtalk,  # no Wan transformer: FlashTalk's is the one there is
    )
    if chosen is None and len(ggufs) > 1:
        problems.append(
            f"{root}: several GGUF transformers ({', '.join(p.name for p in ggufs)}); name one with "
            "--transformer (MULTITALK_TRANSFORMER for the worker) or keep one"
        )
    audio = pick(
        "multitalk",
        multitalk,
        _find_named(root, MULTITALK_DIR, "multitalk", caches, lambda p: (p / MULTITALK_WEIGHTS_NAME).is_file()),
    )
    if audio is not None and audio.is_dir():
        audio = audio / MULTITALK_WEIGHTS_NAME
    infinitetalk: dict[str, Path | None] = {}
    for kind in ("single", "multi"):

        def has_file(p: Path, kind: str = kind) -> bool:
            return (p / kind / INFINITETALK_WEIGHTS_NAME).is_file()

        folder = _find_named(root, INFINITETALK_DIR, "infinitetalk", caches, has_file)
        file = folder / kind / INFINITETALK_WEIGHTS_NAME if folder is not None else None
        infinitetalk[kind] = pick(f"infinitetalk_{kind}", None, file)
    speech = pick(
        "wav2vec",
        wav2vec,
        _find_named(root, WAV2VEC_DIR, "wav2vec", caches, lambda p: (p / CONFIG_NAME).is_file()),
    )

    wanted = {
        "transformer": (chosen, f"a transformer (Wan2.1-I2V-14B-480P[-Diffusers], a GGUF file or {FLASHTALK_DIR})"),
        "text_encoder": (text_encoder, f"the T5 text encoder (text_encoder/ or {T5_CHECKPOINT})"),
        "tokenizer": (tokenizer, f"the T5 tokenizer (tokenizer/ or {T5_TOKENIZER}/)"),
        "image_encoder": (image_encoder, f"the CLIP image encoder (image_encoder/ or {CLIP_CHECKPOINT})"),
        "vae": (vae, f"the VAE (vae/ or {VAE_CHECKPOINT})"),
        "wav2vec": (speech, f"{WAV2VEC_DIR} (TencentGameMate/chinese-wav2vec2-base)"),
    }
    searched = ", ".join(str(p) for p in [root, *caches])
    for name, (path, what) in wanted.items():
        if path is None and name == "transformer" and len(ggufs) > 1:
            continue  # reported above
        if path is None:
            problems.append(f"{name}: not found, expected {what} (searched {searched})")
        elif not path.exists():
            problems.append(f"{name}: {path} does not exist")
    located = {
        "multitalk": audio,
        "infinitetalk_single": infinitetalk["single"],
        "infinitetalk_multi": infinitetalk["multi"],
        "flashtalk": flashtalk,
    }
    for field_name, path in located.items():
        if path is not None and not path.exists():  # named explicitly or by the manifest, and gone
            problems.append(f"{field_name}: {path} does not exist")
    for name in dict.fromkeys(adapters or ()):
        if name in FULL_MODEL_FIELDS:
            if located[FULL_MODEL_FIELDS[name]] is None:
                problems.append(
                    f"{FULL_MODEL_FIELDS[name]}: the {name} model is missing, expected {root}/{FULL_MODEL_FILES[name]}"
                )
        elif located[ADAPTER_FIELDS[name]] is None:
            problems.append(
                f"{ADAPTER_FIELDS[name]}: the {name} audio weights are not there, expected {root}/{ADAPTER_FILES[name]}"
            )
    found = {
        "transformer": chosen,
        "multitalk": audio,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "image_encoder": image_encoder,
        "image_processor": image_processor,
        "vae": vae,
        "wav2vec": speech,
        "infinitetalk_single": infinitetalk["single"],
        "infinitetalk_multi": infinitetalk["multi"],
        "flashtalk": flashtalk,
    }
    return {k: (v if v is None or v.exists() else None) for k, v in found.items()}, problems
