"""The wheel folder for a bare GPU machine: what its Python lacks of this project's dependencies, downloaded here.

    python scripts/gpu_wheels.py                 # -> .whl/ (git-ignored), sizes checked against the carry limit
    python scripts/gpu_wheels.py --out DIR --limit-mib 64 --machine-freeze freeze.txt
    python scripts/gpu_wheels.py --check         # on the GPU machine, after scripts/gpu_install.sh (it runs this)

The machine (this workplace's ``nvidia-h200`` kind: Python 3.12, x86_64, CUDA torch 2.11 and many packages, no
network; see ``MACHINE`` below, from its KINDS.md listing of 2026-11) runs the project under its own torch. For
each dependency of the project (``pyproject.toml``: the runtime list and the ``fp8`` extra) the plan is:

- on the machine at a version that meets the project's requirement: use the machine's;
- on the machine at another version (or one not listed): use the machine's, and say so, unless the name is in
  ``ALWAYS_CARRY`` (small packages whose version matters to the speed code: peft for the speed LoRA);
- missing: carry the pinned version. Then every requirement of what is carried is resolved the same way
  (a missing one is carried at the version this environment has installed, i.e. the tested one).

Wheels come from PyPI via ``pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp``
for manylinux x86_64, plus this project built as a wheel. The folder must fit, with the working tree that travels
beside it, in the device tool's 64 MiB carry limit: the script reports both sizes and fails when they do not fit.
torch is never carried: the machine's CUDA build stays.

``--check`` (run by ``scripts/gpu_install.sh`` on the machine, with the installed wheels first on ``sys.path``):
every requirement of every carried distribution is met by what is importable, torch is the machine's; exits 1
with the list of problems otherwise, before any GPU time is spent on the suite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
LIMIT_MIB = 64
PYTHON_VERSION = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
EXTRAS = ("fp8",)
ALWAYS_CARRY = {"peft"}
NEVER_CARRY = {"torch", "triton"}  # the machine's CUDA build and its compiler stay
MANIFEST = "gpu_wheels.json"
CARRIED_EXTRAS = (".official",)  # other ignored folders a suite run carries (the official checkout's wan/)

# The machine's Python packages (KINDS.md, "Python packages already there", read 2026-11-17) with the versions its
# pip list showed where known (None: present, version not recorded). ``--machine-freeze`` replaces this with a
# ``pip freeze`` taken there.
MACHINE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex
requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
MACHINE: dict[str, str | None] = {name: None for name in MACHINE_PACKAGES.split()} | {
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "sentencepiece": "0.2.2",
    "tokenizers": "0.23.2",
    "torch": "2.11.0",
    "torchaudio": "2.11.0",
    "torchvision": "0.26.0",
    "transformers": "5.17.0",
    "triton": "3.6.0",
}


def machine_environment() -> dict[str, str]:
    """Marker values of the machine's interpreter (CPython 3.12 on Linux x86_64)."""
    env = default_environment()
    env.update(
        python_version=PYTHON_VERSION,
        python_full_version=PYTHON_VERSION + ".3",
        implementation_name="cpython",
        platform_python_implementation="CPython",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        os_name="posix",
    )
    return env


def read_freeze(path: Path) -> dict[str, str | None]:
    """``pip freeze`` / ``pip list --format=freeze`` output -> {name: version}."""
    found: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[canonicalize_name(name.strip())] = version.strip()
    return found


def project_requirements() -> list[Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(data["dependencies"])
    for extra in EXTRAS:
        lines += data.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(line) for line in lines]


def installed_here(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def wheel_metadata(path: Path) -> tuple[str, str, list[Requirement]]:
    """(name, version, requirements without extras) of a wheel file."""
    with zipfile.ZipFile(path) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(meta_name).decode())
    requires = [Requirement(r) for r in message.get_all("Requires-Dist") or []]
    return message["Name"], message["Version"], requires


def applies(req: Requirement, env: dict[str, str]) -> bool:
    """Whether a requirement holds on the machine without extras (``extra == ...`` markers never do)."""
    if req.marker is None:
        return True
    return req.marker.evaluate({**env, "extra": ""})


def decide(req: Requirement, machine: dict[str, str | None], carried: dict[str, str]) -> tuple[str, str | None]:
    """('machine' | 'machine-other-version' | 'carry' | 'carried' | 'never', version to carry)."""
    name = canonicalize_name(req.name)
    if name in carried:
        return "carried", None
    if name in NEVER_CARRY:
        return "never", None
    if name in machine and name not in ALWAYS_CARRY:
        have = machine[name]
        if have is not None and req.specifier and not req.specifier.contains(Version(have), prereleases=True):
            return "machine-other-version", None
        return "machine", None
    pinned = [s.version for s in req.specifier if s.operator == "=="]
    return "carry", pinned[0] if pinned else installed_here(req.name)


def download(spec: str, out: Path) -> Path:
    before = set(out.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version"]
    cmd += [PYTHON_VERSION, "--implementation", "cp", "-d", str(out), "-q"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, spec], check=True)
    name = canonicalize_name(Requirement(spec).name)
    new = [p for p in set(out.glob("*.whl")) - before if canonicalize_name(p.name.split("-")[0]) == name]
    if not new:  # already there from an earlier run
        new = [p for p in out.glob("*.whl") if canonicalize_name(p.name.split("-")[0]) == name]
    return new[0]


def build_project(out: Path) -> Path:
    for old in out.glob("multitalk_serve-*.whl"):
        old.unlink()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    subprocess.run(cmd, check=True)
    return next(out.glob("multitalk_serve-*.whl"))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def tree_bytes() -> int:
    """Bytes of what the device tool sends: tracked files and untracked files git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    return sum((REPO / p.decode()).stat().st_size for p in listed if p and (REPO / p.decode()).is_file())


def build(out: Path, machine: dict[str, str | None], limit_mib: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = machine_environment()
    carried: dict[str, str] = {}  # name -> wheel file
    plan: list[dict] = []
    queue = [(req, "multitalk-serve") for req in project_requirements()]
    while queue:
        req, wanted_by = queue.pop(0)
        if not applies(req, env):
            continue
        how, version = decide(req, machine, carried)
        name = canonicalize_name(req.name)
        if how == "carried":
            continue
        row = {"name": name, "requirement": str(req), "wanted_by": wanted_by, "decision": how}
        if how.startswith("machine"):
            row["machine_version"] = machine.get(name)
        if how == "never":
            row["machine_version"] = "the machine's own build"
        if how == "carry":
            if version is None:
                raise SystemExit(f"{req}: missing on the machine and not installed here: no version to carry")
            wheel = download(f"{req.name}=={version}", out)
            carried[name] = wheel.name
            row |= {"version": version, "wheel": wheel.name, "bytes": wheel.stat().st_size}
            _, _, requires = wheel_metadata(wheel)
            queue += [(r, name) for r in requires]
        plan.append(row)
    project = build_project(out)
    carried["multitalk-serve"] = project.name
    plan.append(
        {"name": "multitalk-serve", "decision": "carry", "wheel": project.name, "bytes": project.stat().st_size}
    )
    stale = [p.name for p in out.glob("*.whl") if p.name not in carried.values()]
    for name in stale:
        (out / name).unlink()
    wheels = sum(p.stat().st_size for p in out.glob("*.whl"))
    extras = {name: folder_bytes(REPO / name) for name in CARRIED_EXTRAS if (REPO / name).is_dir()}
    tree = tree_bytes() + sum(extras.values())
    report = {
        "python": PYTHON_VERSION,
        "platforms": list(PLATFORMS),
        "wheels": sorted(carried.values()),
        "wheels_mib": round(wheels / MIB, 2),
        "working_tree_mib": round(tree / MIB, 2),  # with the carried extras
        "carried_extras_mib": {name: round(size / MIB, 2) for name, size in extras.items()},
        "total_mib": round((wheels + tree) / MIB, 2),
        "limit_mib": limit_mib,
        "fits": wheels + tree <= limit_mib * MIB,
        "plan": plan,
        "removed_stale": stale,
    }
    (out / MANIFEST).write_text(json.dumps(report, indent=2) + "\n")
    return report


def check(folder: Path) -> tuple[list[str], list[str]]:
    """On the machine: every requirement of every carried distribution is met by what this interpreter imports.
    This project's own pins are only required to be present: where the machine's version differs (the plan chose
    it), that is a note. Returns (problems, notes)."""
    from importlib.metadata import PackageNotFoundError, version

    env = default_environment()
    problems, notes = [], []
    for wheel in sorted(folder.glob("*.whl")):
        name, wanted, requires = wheel_metadata(wheel)
        try:
            have = version(name)
        except PackageNotFoundError:
            problems.append(f"{name} {wanted}: not importable (installed?)")
            continue
        if Version(have) != Version(wanted):
            problems.append(f"{name}: {have} is found first, not the carried {wanted} (another copy shadows it)")
        for req in requires:
            if not applies(req, env):
                continue
            try:
                found = version(req.name)
            except PackageNotFoundError:
                problems.append(f"{name} needs {req}: not installed")
                continue
            if req.specifier and not req.specifier.contains(Version(found), prereleases=True):
                if canonicalize_name(name) == "multitalk-serve":
                    notes.append(f"the project pins {req}; the machine's {found} is used")
                else:
                    problems.append(f"{name} needs {req}: {found} is installed")
    return problems, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / ".whl", help="wheel folder (default .whl, git-ignored)")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="the device tool's carry limit")
    parser.add_argument("--machine-freeze", type=Path, help="pip freeze of the machine (default: the built-in list)")
    parser.add_argument("--check", action="store_true", help="on the machine: verify an installed folder")
    args = parser.parse_args()
    if args.check:
        problems, notes = check(args.out)
        import torch

        print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, available: {torch.cuda.is_available()})")
        for note in notes:
            print(f"note: {note}")
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        print(f"{len(list(args.out.glob('*.whl')))} carried wheels checked: {len(problems)} problem(s)")
        return 1 if problems else 0
    machine = read_freeze(args.machine_freeze) if args.machine_freeze else MACHINE
    report = build(args.out, machine, args.limit_mib)
    for row in report["plan"]:
        detail = row.get("wheel") or f"machine {row.get('machine_version') or '(version not recorded)'}"
        size = f" {row['bytes'] / MIB:6.2f} MiB" if "bytes" in row else ""
        print(f"{row['decision']:>22}  {row['name']:<20}{size}  {detail}  <- {row.get('wanted_by', '')}")
    for name, size in report["carried_extras_mib"].items():
        print(f"carried beside the working tree: {name} {size} MiB")
    print(
        f"wheels {report['wheels_mib']} MiB + working tree {report['working_tree_mib']} MiB = "
        f"{report['total_mib']} MiB of {report['limit_mib']} MiB: {'fits' if report['fits'] else 'DOES NOT FIT'}"
    )
    return 0 if report["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
