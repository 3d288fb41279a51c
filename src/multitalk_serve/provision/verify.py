"""``verify``: is a model directory complete and consistent? The worker runs the same check at start.

Two layers: what ``download`` recorded in ``.multitalk/manifest.json`` (every file present, same size; with
``hashes=True`` every byte re-hashed against the recorded sha256), then the engine's inventory (every component
found, its files, tensor names and shapes, configs, and the widths between components; headers only). Kokoro-82M
(text to speech, optional) is checked when it is there or asked for (``tts=True``): its config, the weights' keys and
shapes against it, every voice's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.loading.inventory import Inventory, inspect_model_dir
from ..engine.loading.paths import read_manifest
from .download import entry_unchanged, file_digest


@dataclass
class Verification:
    inventory: Inventory
    manifest: str | None  # the profile the manifest records, None without a manifest
    problems: list[str] = field(default_factory=list)  # from the manifest
    notes: list[str] = field(default_factory=list)
    files_hashed: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.inventory.ok

    @property
    def all_problems(self) -> list[str]:
        return self.problems + self.inventory.problems

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "profile": self.manifest,
            "problems": self.all_problems,
            "notes": self.notes,
            "files_hashed": self.files_hashed,
            "inventory": self.inventory.as_dict(),
        }


def _check_entry(root: Path, dest: str, entry: dict, hashes: bool) -> tuple[str | None, str | None, bool]:
    """(problem, note, hashed) for one recorded file."""
    path = root / dest
    if not path.is_file():
        return f"{dest}: missing (recorded by download; rerun download to fetch it)", None, False
    size = path.stat().st_size
    if size != entry.get("size"):
        return (
            f"{dest}: {size} bytes, {entry.get('size')} expected (truncated or replaced; rerun download)",
            None,
            False,
        )
    if hashes:
        if file_digest(path) != entry.get("sha256"):
            return f"{dest}: content changed since it was verified (sha256 differs; rerun download)", None, True
        return None, None, True
    if not entry_unchanged(entry, path):
        return None, f"{dest}: modified since it was verified (same size); `verify --hashes` checks its bytes", False
    return None, None, False


def verify_model_dir(
    root: str | Path,
    *,
    hashes: bool = False,
    transformer: str | Path | None = None,
    cache_dirs: list[Path] | None = None,
    workers: int = 4,
    adapters: str | Sequence[str] | None = None,
    tts: bool | None = None,
) -> Verification:
    """``adapters``: audio models that must be there (names, or ``"a,b"``; ``None``: any one, see
    ``inspect_model_dir``). ``tts``: Kokoro-82M must be there (``True``), is checked if present (``None``)."""
    root = Path(root)
    manifest = read_manifest(root) if root.is_dir() else None
    if isinstance(adapters, str):
        adapters = [a for a in adapters.split(",") if a]
    inventory = inspect_model_dir(root, transformer=transformer, cache_dirs=cache_dirs, adapters=adapters)
    result = Verification(inventory, None)
    _check_kokoro(root, tts, result)
    if manifest is None:
        result.notes.append("no .multitalk/manifest.json (not made by `download`): checked the files themselves only")
        return result
    result.manifest = manifest.get("profile")
    files = manifest.get("files") or {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(lambda item: _check_entry(root, item[0], item[1], hashes), sorted(files.items())))
    for problem, note, hashed in outcomes:
        if problem:
            result.problems.append(problem)
        if note:
            result.notes.append(note)
        result.files_hashed += int(hashed)
    return result


def _check_kokoro(root: Path, tts: bool | None, result: Verification) -> None:
    import importlib.util

    from ..engine.loading.paths import KOKORO_DIR

    folder = root / KOKORO_DIR
    if tts is False or (tts is None and not folder.exists()):
        return
    if importlib.util.find_spec("kokoro") is None:
        message = f"{KOKORO_DIR}: not checked (the tts extra is not installed: pip install 'multitalk-serve[tts]')"
        (result.problems if tts else result.notes).append(message)
        return
    from ..engine.pipeline.speech import inspect_kokoro

    result.problems.extend(inspect_kokoro(folder))
