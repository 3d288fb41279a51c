"""The engine has one public face: the worker and the CLI import only ``multitalk_serve.engine``, and the engine
imports neither them nor the test-model writer."""

from __future__ import annotations

import ast
from pathlib import Path

import multitalk_serve.engine as engine
from multitalk_serve.engine import errors

PACKAGE = Path(engine.__file__).parent.parent


def _imports(path: Path) -> list[str]:
    """Every module a file imports, as an absolute name inside ``multitalk_serve`` where it is relative."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = parts[:-1]  # a module's package; an __init__'s is its own folder, which is the same tuple
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append(".".join([*base, node.module] if node.module else base))
            else:
                found.append(node.module or "")
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_worker_and_cli_import_only_the_public_interface():
    files = [*sorted((PACKAGE / "worker").glob("*.py")), PACKAGE / "cli.py"]
    offending = [
        f"{path.name}: {name}"
        for path in files
        for name in _imports(path)
        if name.startswith("multitalk_serve.engine.")
    ]
    assert offending == []


def test_engine_imports_no_front_end_and_no_test_model_writer():
    offending = []
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[:2] in (["multitalk_serve", n] for n in ("worker", "cli", "tiny", "forward_check")):
                offending.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert offending == []


def test_every_public_name_resolves_and_all_lists_them():
    assert sorted(engine.__all__) == sorted(engine._EXPORTS)
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name


def test_every_engine_error_derives_from_engine_error():
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(classes) >= 8
    assert all(issubclass(c, errors.EngineError) for c in classes)
    assert issubclass(engine.SpeakerCountError, engine.InputError)
