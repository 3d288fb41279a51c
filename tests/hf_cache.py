"""A Hugging Face hub cache laid out as huggingface_hub writes it (RunPod's cached models use the same layout)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fake_hf_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """``folder`` as a cache snapshot: blobs by hash, a snapshot of relative symlinks, ``refs/<revision>``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snapshot
