"""MultiTalk (audio-driven talking video) on diffusers: engine, CLI and RunPod serverless worker."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("multitalk-serve")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"
