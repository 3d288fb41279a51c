"""The README and docs/ stay navigable: every relative link points at a file that exists, and every doc is linked
from the README."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_relative_links_resolve():
    broken = []
    for doc in _docs():
        for target in LINK.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_every_doc_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in readme]
    assert unlinked == []


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_preset_table_lists_every_preset_with_its_computed_cost():
    """docs/speed-and-memory.md "Choosing a preset": one row per preset, and its figures as the settings give them
    (forwards per window, window / new frames, forwards per second of video, tokens per forward)."""
    from multitalk_serve.engine import FPS, PRESETS
    from multitalk_serve.engine.pipeline.conditioning import BUCKETS
    from multitalk_serve.engine.pipeline.sampling import uses_text_pass
    from multitalk_serve.engine.pipeline.variants import FLASHTALK_LOOP, INFINITETALK_LOOP, MULTITALK_LOOP

    text = (ROOT / "docs" / "speed-and-memory.md").read_text()
    section = text.split("## Choosing a preset", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    assert sorted(cell[0].strip().strip("`") for cell in rows) == sorted(PRESETS)
    for name, model, forwards, window, per_second, tokens, work, _ in (map(str.strip, row) for row in rows):
        preset = PRESETS[name.strip("`")]
        loops = [FLASHTALK_LOOP] if preset.model == "flashtalk" else [MULTITALK_LOOP, INFINITETALK_LOOP]
        passes = 1 if preset.model == "flashtalk" else (3 if uses_text_pass(preset.text_scale) else 2)
        assert model == ("FlashTalk" if preset.model == "flashtalk" else "MultiTalk, InfiniteTalk"), (name, model)
        assert forwards.startswith(f"{preset.steps * passes} ({preset.steps} x {passes})"), (name, forwards)
        h, w = BUCKETS["flashtalk"]["1.71"] if preset.model == "flashtalk" else BUCKETS["480p"]["1.86"]
        for loop in loops:
            new = loop.frames_per_clip - loop.motion_frames
            assert f"{loop.frames_per_clip} / {new}" in window, (name, window)
            rate = preset.steps * passes * FPS / new
            assert f"{rate:.2f}" in per_second, (name, per_second)
            count = ((loop.frames_per_clip - 1) // 4 + 1) * (h // 16) * (w // 16)
            assert tokens.startswith(f"{count} ({h}x{w})"), (name, tokens)
            assert f"{rate * count / 1000:.0f}k" in work, (name, work)
