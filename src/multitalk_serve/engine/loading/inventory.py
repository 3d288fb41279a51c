"""Is a model directory complete and consistent? Checked from file headers and configs only.

``inspect_model_dir`` resolves every component (``model_paths``), then for each one checks, without reading any
tensor data: the files its index names exist and are long enough; every tensor the model needs is there with its
shape (the model is built on the meta device); configs parse; and the components fit together (the transformer's
text / image / audio widths against the T5, CLIP and wav2vec2 it will be fed, the VAE's latent channels). Every
problem is collected, so one run says everything that is missing. ``verify`` and the worker's start-up check use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CheckpointError
from .layouts import is_audio_key
from .paths import ADAPTER_FIELDS, ADAPTER_FILES, ModelPaths, find_components

COMPONENTS = ("transformer", "text_encoder", "tokenizer", "image_encoder", "image_processor", "vae", "wav2vec")


@dataclass
class ComponentReport:
    name: str
    path: str | None
    layout: str = ""
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    problem: str | None = None


@dataclass
class Inventory:
    root: str
    paths: ModelPaths | None  # None when a component could not be found
    components: list[ComponentReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def files(self) -> list[str]:
        return sorted({f for c in self.components for f in c.files})

    def as_dict(self) -> dict:
        return {
            "root": self.root,
            "ok": self.ok,
            "paths": self.paths.as_dict() if self.paths else None,
            "components": [asdict(c) for c in self.components],
            "problems": self.problems,
        }

    def raise_if_incomplete(self) -> None:
        if self.problems:
            raise CheckpointError(f"{self.root}: " + "; ".join(self.problems))


def _adapters(located: dict) -> dict[str, Path]:
    """The audio adapters found, by name, in ``ModelPaths.adapters()``'s order."""
    return {name: located[f] for name, f in ADAPTER_FIELDS.items() if located.get(f) is not None}


def _no_audio_message(root: Path, transformer: Path) -> str:
    expected = " or ".join(str(root / f) for f in ADAPTER_FILES.values())
    return (
        f"no audio weights: {transformer} holds none and no audio model was found; expected {expected} "
        "(`multitalk-serve download --models ...` fetches them)"
    )


def _flashtalk(path: Path, report: ComponentReport) -> tuple[dict, int]:
    """FlashTalk's folder checked as the whole transformer it is (its own audio layers, its config's audio numbers);
    the report gets its files and bytes. Returns (widths, bytes of its audio layers)."""
    from .transformer import _check_keys_and_shapes, build_empty_model, resolve_transformer

    source = resolve_transformer(path, own_audio=True)
    _check_keys_and_shapes(build_empty_model(source.dims), source)
    report.files = [str(f) for f in source.files]
    report.bytes = sum(r.nbytes for r in source.refs.values())
    audio = sum(r.nbytes for k, r in source.refs.items() if is_audio_key(k))
    return {"text": source.dims.text_dim, "image": source.dims.image_dim, "audio": source.dims}, audio


def _transformer(located: dict, root: Path, reports: list[ComponentReport], problems: list[str]) -> dict:
    """The transformer with the first audio adapter found (MultiTalk's, else InfiniteTalk single's, else multi's:
    what the pipeline loads it with by default); every other adapter found is checked against the same model (into
    ``problems``, so one bad adapter does not hide the others). ``reports``: the transformer's, then one per adapter.
    When the only transformer is FlashTalk's (``located["flashtalk"]``), it is checked with its own audio layers and
    the adapters, which need the Wan base, are problems."""
    from .transformer import _check_keys_and_shapes, build_empty_model, resolve_transformer

    report = reports[0]
    adapters = _adapters(located)
    flashtalk = located.get("flashtalk")
    if flashtalk is not None and located["transformer"] == flashtalk:
        found, audio = _flashtalk(flashtalk, report)
        report.layout = "original"
        reports.append(ComponentReport("flashtalk", str(flashtalk), "audio: flashtalk", bytes=audio))
        for name, path in adapters.items():
            problem = (
                f"{ADAPTER_FIELDS[name]}: {path} needs the Wan2.1-I2V-14B base transformer, which this folder does "
                f"not have ({flashtalk} is FlashTalk's own transformer)"
            )
            reports.append(ComponentReport(ADAPTER_FIELDS[name], str(path), f"audio: {name}", [str(path)], 0, problem))
            problems.append(problem)
        return found
    first = next(iter(adapters.values()), None)
    try:
        source = resolve_transformer(located["transformer"], first)
    except CheckpointError as exc:
        if first is None and "no MultiTalk audio weights" in str(exc):
            raise CheckpointError(_no_audio_message(root, located["transformer"])) from exc
        raise
    model = build_empty_model(source.dims)
    _check_keys_and_shapes(model, source)
    report.layout = source.layout
    report.files = [str(f) for f in source.files]
    separate = source.audio_file is not None  # the audio bytes are reported per adapter below
    report.bytes = sum(r.nbytes for k, r in source.refs.items() if not (separate and is_audio_key(k)))
    for name, path in adapters.items():
        field_name = ADAPTER_FIELDS[name]
        adapter = ComponentReport(field_name, str(path), layout=f"audio: {name}", files=[str(path)])
        reports.append(adapter)
        try:
            other = source if path == first else resolve_transformer(located["transformer"], path)
            if other is not source:
                _check_keys_and_shapes(model, other)
            adapter.bytes = sum(r.nbytes for k, r in other.refs.items() if is_audio_key(k))
        except CheckpointError as exc:
            adapter.problem = f"{field_name}: {exc}"
            problems.append(adapter.problem)
            continue
        if path != first:
            report.files.append(str(path))
    return {"text": source.dims.text_dim, "image": source.dims.image_dim, "audio": source.dims}


def _flashtalk_beside(located: dict, reports: list[ComponentReport], problems: list[str]) -> dict | None:
    """FlashTalk's folder next to a Wan transformer: checked on its own (a report of its own, ``flashtalk``)."""
    flashtalk = located.get("flashtalk")
    if flashtalk is None or located.get("transformer") == flashtalk:
        return None
    report = ComponentReport("flashtalk", str(flashtalk), layout="audio: flashtalk")
    reports.append(report)
    try:
        return _flashtalk(flashtalk, report)[0]
    except CheckpointError as exc:
        report.problem = f"flashtalk: {exc}"
        problems.append(report.problem)
        return None


def _encoder(kind: str, path: Path, report: ComponentReport) -> dict:
    from . import encoders

    source = {"text_encoder": encoders.text_encoder_source, "image_encoder": encoders.image_encoder_source}.get(
        kind, encoders.vae_source
    )(path)
    encoders.check(source)
    report.layout, report.files, report.bytes = source.layout, [str(f) for f in source.files], source.nbytes
    return source.config


def _tokenizer(path: Path, report: ComponentReport) -> None:
    from transformers import AutoTokenizer

    from ..libraries import quiet_transformers

    try:
        with quiet_transformers():
            AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: tokenizer does not load ({exc})") from exc
    report.files = sorted(str(p) for p in path.iterdir() if p.is_file())


def _image_processor(path: Path, report: ComponentReport) -> None:
    config_path = path / "preprocessor_config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: missing or invalid ({exc})") from exc
    for key in ("image_mean", "image_std"):
        if not (isinstance(config.get(key), list) and len(config[key]) == 3):
            raise CheckpointError(f"{config_path}: {key} must be a list of 3 numbers")
    report.files = [str(config_path)]


def _wav2vec(path: Path, report: ComponentReport) -> dict:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from .formats import read_index
    from .weights import check_refs, empty_weights

    for name in ("config.json", "preprocessor_config.json"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: missing {name}")
    weights = next((path / w for w in ("model.safetensors", "pytorch_model.bin") if (path / w).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")
    config = Wav2Vec2Config.from_pretrained(path)
    with empty_weights():
        model = Wav2Vec2Model(config)
    refs = {k.removeprefix("wav2vec2."): v for k, v in read_index(weights).items()}
    expected = {k: tuple(p.shape) for k, p in model.named_parameters()}
    # The checkpoint is a pre-training one: its quantizer / projection heads are extra and unused.
    check_refs(expected, {k: v for k, v in refs.items() if k in expected or k.startswith(("encoder.", "feature_"))})
    report.layout = "transformers"
    report.files = [str(path / "config.json"), str(path / "preprocessor_config.json"), str(weights)]
    report.bytes = sum(refs[k].nbytes for k in expected)
    return {"hidden": config.hidden_size, "layers": config.num_hidden_layers}


def inspect_model_dir(
    root: str | Path,
    *,
    transformer: str | Path | None = None,
    multitalk: str | Path | None = None,
    wav2vec: str | Path | None = None,
    cache_dirs: list[Path] | None = None,
    adapters: Sequence[str] | None = None,
) -> Inventory:
    """Check every component of the model directory ``root``; never raises for a bad directory (see ``problems``).

    The audio adapters found are reported after the components (``multitalk``, ``infinitetalk_single``,
    ``infinitetalk_multi``), each checked against the transformer; ``adapters`` names those that must be there
    (``None``: any one of them, or audio weights in the transformer itself)."""
    located, problems = find_components(
        root, transformer=transformer, multitalk=multitalk, wav2vec=wav2vec, cache_dirs=cache_dirs, adapters=adapters
    )
    paths = ModelPaths(**located) if not problems else None
    inventory = Inventory(str(root), paths, problems=list(problems))
    found: dict[str, object] = {}
    for name in COMPONENTS:
        path = located[name]
        report = ComponentReport(name, str(path) if path else None)
        inventory.components.append(report)
        if path is None:
            if name == "image_processor":  # optional: the original layout uses the official constants
                report.layout = "official constants"
            else:
                report.problem = next((p for p in problems if p.startswith(f"{name}:")), "not found")
            continue
        audio_problem = any(p.startswith(tuple(f"{f}:" for f in ADAPTER_FIELDS.values())) for p in problems)
        if name == "transformer" and audio_problem and not _adapters(located):
            continue  # the audio weights named are missing (reported already) and there are no others
        try:
            if name == "transformer":
                reports = [report]
                try:
                    found[name] = _transformer(located, Path(root), reports, inventory.problems)
                    found["flashtalk"] = _flashtalk_beside(located, reports, inventory.problems)
                finally:
                    inventory.components.extend(reports[1:])
            elif name in ("text_encoder", "image_encoder", "vae"):
                found[name] = _encoder(name, path, report)
            elif name == "tokenizer":
                _tokenizer(path, report)
            elif name == "image_processor":
                _image_processor(path, report)
            else:
                found[name] = _wav2vec(path, report)
        except CheckpointError as exc:
            report.problem = str(exc)
            inventory.problems.append(f"{name}: {exc}")
    inventory.problems += _mismatches(found)
    return inventory


def _mismatches(found: dict) -> list[str]:
    """Widths that must agree between components (only for components that passed their own checks); FlashTalk's
    transformer, when it is there beside a Wan one, is fed by the same encoders."""
    problems = _widths(found, found.get("transformer"))
    if found.get("flashtalk"):
        problems += [f"flashtalk: {p}" for p in _widths(found, found["flashtalk"])]
    return problems


def _widths(found: dict, t: dict | None) -> list[str]:
    problems: list[str] = []
    if not t:
        return problems
    text, clip, vae, speech = (found.get(k) for k in ("text_encoder", "image_encoder", "vae", "wav2vec"))
    if text and text.get("d_model") != t["text"]:
        problems.append(f"the transformer takes {t['text']}-wide text features; the T5 encoder makes {text['d_model']}")
    if clip and clip.get("hidden_size") != t["image"]:
        problems.append(f"the transformer takes {t['image']}-wide CLIP features; CLIP makes {clip['hidden_size']}")
    if vae and vae.get("z_dim", 16) * 2 + 4 != t["audio"].in_dim:
        problems.append(f"the transformer takes {t['audio'].in_dim} input channels; the VAE's latents need 36")
    if speech:
        dims = t["audio"]
        if (speech["layers"], speech["hidden"]) != (dims.audio_layers, dims.audio_channels):
            problems.append(
                f"the MultiTalk audio layers take {dims.audio_layers} x {dims.audio_channels} wav2vec2 features, "
                f"the wav2vec2 model makes {speech['layers']} x {speech['hidden']}"
            )
    return problems
