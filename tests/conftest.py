from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """Every tiny layout, written once per test session (read-only for tests: copy before changing)."""
    from multitalk_serve.tiny import write_tiny_models

    root = tmp_path_factory.mktemp("tiny")
    write_tiny_models(root)
    return root


@pytest.fixture(scope="session")
def parity_root(tmp_path_factory) -> Path:
    """The official-parity checkpoint (original layout + MultiTalk, 1280-wide CLIP and 12 x 768 audio features)."""
    from multitalk_serve.tiny import PARITY_DIMS, write_original_layout

    root = tmp_path_factory.mktemp("parity")
    write_original_layout(root, PARITY_DIMS, seed=0)
    return root
