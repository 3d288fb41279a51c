"""scripts/gpu_wheels.py: which dependencies travel to the bare GPU machine as wheels, and the check run there after
the offline install. No network here: the download itself is exercised by running the script (docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheels():
    spec = importlib.util.spec_from_file_location("gpu_wheels", REPO / "scripts" / "gpu_wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A wheel holding only its metadata (enough for the plan and the check)."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    info = f"{name}-{version}.dist-info"
    wheel = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{info}/METADATA", meta)
        archive.writestr(f"{info}/WHEEL", wheel)
        archive.writestr(f"{info}/RECORD", f"{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return path


def test_machine_list_knows_the_machine_and_its_versions(wheels):
    machine = wheels.MACHINE
    assert machine["torch"] == "2.11.0" and machine["transformers"] == "5.17.0"
    assert machine["pillow"] is None  # present there, version not recorded
    for missing in ("diffusers", "av", "gguf", "torchao", "pyloudnorm", "ftfy"):
        assert missing not in machine


@pytest.mark.parametrize(
    ("requirement", "decision", "version"),
    [
        ("diffusers==0.42.1", "carry", "0.42.1"),  # missing there: the pin travels
        ("av==18.1.0", "carry", "18.1.0"),
        ("safetensors==0.8.0", "machine", None),  # the machine has the pinned version
        ("transformers==5.24.0", "machine-other-version", None),  # another version there: the machine's is used
        ("scipy==1.17.1", "machine", None),  # there, version not recorded
        ("peft==0.21.2", "carry", "0.21.2"),  # always carried (the speed LoRA depends on its version)
        ("torch>=2.6", "never", None),  # the machine's CUDA build stays
    ],
)
def test_each_dependency_is_carried_or_left_to_the_machine(wheels, requirement, decision, version):
    assert wheels.decide(Requirement(requirement), wheels.MACHINE, carried={}) == (decision, version)


def test_an_unpinned_missing_requirement_travels_at_the_tested_version(wheels):
    from importlib.metadata import version

    assert wheels.decide(Requirement("wcwidth"), wheels.MACHINE, carried={}) == ("carry", version("wcwidth"))
    assert wheels.decide(Requirement("wcwidth"), wheels.MACHINE, carried={"wcwidth": "w.whl"})[0] == "carried"


def test_markers_are_read_for_the_machine(wheels):
    env = wheels.machine_environment()
    assert env["python_version"] == "3.12" and env["platform_machine"] == "x86_64"
    assert wheels.applies(Requirement('hf-xet>=1.6; platform_machine == "x86_64"'), env)
    assert not wheels.applies(Requirement('tomli>=1.1; python_version < "3.11"'), env)
    assert not wheels.applies(Requirement('pytest; extra == "test"'), env)


def test_the_project_requirements_include_the_fp8_extra(wheels):
    names = {r.name for r in wheels.project_requirements()}
    assert {"diffusers", "av", "gguf", "torchao", "torch"} <= names


def test_check_reports_what_the_installed_folder_lacks(wheels, tmp_path):
    # installed here (pytest, packaging) vs absent (the fake distributions themselves and their needs)
    fake_wheel(tmp_path, "pytest", __import__("pytest").__version__, ["packaging>=1.0", "no-such-dist-xyz>=1"])
    fake_wheel(tmp_path, "not_installed_dist_xyz", "1.0", [])
    fake_wheel(tmp_path, "multitalk_serve", "0.1.0", ["packaging==0.0.1"])
    problems, notes = wheels.check(tmp_path)
    assert problems == [
        "not_installed_dist_xyz 1.0: not importable (installed?)",
        "pytest needs no-such-dist-xyz>=1: not installed",
    ]
    assert len(notes) == 1 and notes[0].startswith("the project pins packaging==0.0.1; the machine's")


def test_install_script_refuses_an_empty_folder(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_install.sh"), str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert "no wheels in" in proc.stderr and "gpu_wheels.py" in proc.stderr


def test_install_script_installs_offline_into_its_own_folder(tmp_path):
    """A pure-Python wheel installs with --no-index into GPU_SITE, leaving the interpreter's packages alone."""
    folder = tmp_path / "whl"
    folder.mkdir()
    fake_wheel(folder, "gpu_suite_probe_pkg", "1.0", [])
    site = tmp_path / "site"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": sys.executable, "GPU_SITE": str(site)}
    script = f". {REPO / 'scripts' / 'gpu_install.sh'} {folder} && echo PYTHONPATH=$PYTHONPATH"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (site / "gpu_suite_probe_pkg-1.0.dist-info" / "METADATA").is_file()
    assert f"PYTHONPATH={site}" in proc.stdout
    assert "1 carried wheels checked: 0 problem(s)" in proc.stdout
