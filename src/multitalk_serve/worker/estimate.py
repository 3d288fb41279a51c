"""A job's time and cost before it starts, the refusal of a job that cannot finish in time, and GPU-seconds.

- ``TimingHistory``: measured seconds per window ("clip") kept across jobs and workers in one small JSON file on the
  network volume (``VOLUME_PATH/multitalk-state/timings.json``; in memory only without a volume), keyed by what
  decides a window's cost (``TimingKey``: GPU, model, size, frames per window, steps, passes, speed LoRA, step
  caching on/off, memory plan). Each job adds the median of its windows to an exponentially weighted mean; the
  first window of each run (which may include one-time work: kernel selection, lazy initialisation, compilation)
  is kept apart, as how much longer it took than the others. Writes are atomic (temporary file + ``os.replace``);
  a corrupt, unreadable or unwritable file (read-only, disk full) is logged and never fails a job.
- ``estimate_job``: windows left x seconds per window (this exact setup's history, else scaled from the nearest
  setup measured on this GPU with the same model, memory plan, step caching and speed LoRA) + the first window's
  extra + ``overhead_s`` (final assembly and upload); its cost at ``GPU_PRICE_PER_HOUR`` or RunPod's serverless
  price for the GPU. No history on this GPU: no estimate (and no refusal: never refuse on a guess).
- ``execution_timeout_of`` / ``check_fits``: the timeout the job was given (RunPod's ``policy.executionTimeout``,
  else the request's ``execution_timeout_s``, else ``EXECUTION_TIMEOUT_SECONDS``) against elapsed + estimate;
  ``E_TOO_LONG`` when it cannot finish.
- ``gpu_seconds``: the time the job held the worker (job start to result), reported with every result.

The functions take plain values or a ``JobPlan``-like object (duck-typed: ``windows``, ``frames``, ``height``,
``width``, ``steps``, ``passes``, ``frames_per_clip``, ``model``, ``resume_from``, ``speed_lora``,
``cache_threshold``), so they run without the engine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import WorkerError

log = logging.getLogger("multitalk_serve.worker.estimate")

HISTORY_FILE = "multitalk-state/timings.json"  # under VOLUME_PATH
HISTORY_VERSION = 1
MAX_KEYS = 200  # setups kept; the least recently updated are dropped
ALPHA = 0.3  # weight of the newest job in the running mean of seconds per window
MARGIN = 0.05  # a job is refused when elapsed + estimate > timeout x (1 - MARGIN)
FPS = 25  # the engine's output frame rate (engine.FPS; a test keeps them equal)
# Time after the last window: the final MP4 assembled from the segments (video packets copied, the soundtrack
# encoded once: 48 kHz AAC), its upload and the result. Measured for 10 minutes of 480p video on 2 shared CPU cores
# (docs/reliability.md, "Time and cost estimate"): packets copied 2 s, AAC 44 s; that is 0.077 s per second of video.
OVERHEAD_BASE_S = 10.0  # upload (150 MB at 50 MB/s: 3 s), presigning, the thumbnail, the result
OVERHEAD_PER_VIDEO_S = 0.08

# RunPod serverless prices per second, flex workers (runpod.md section 2.4, from runpod/docs
# snippets/serverless-gpu-pricing-table.mdx); matched against torch's device name, first match wins.
RUNPOD_FLEX_PRICES: tuple[tuple[str, float], ...] = (
    ("h200", 0.00155),
    ("b200", 0.00240),
    ("h100", 0.00116),
    ("a100", 0.00076),
    ("rtx pro 6000", 0.00111),
    ("l40", 0.00053),  # L40 and L40S
    ("6000 ada", 0.00053),
    ("4090", 0.00031),
)
PRICE_ENV = "GPU_PRICE_PER_HOUR"
TIMEOUT_ENV = "EXECUTION_TIMEOUT_SECONDS"


# --- what decides a window's cost -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimingKey:
    """What decides how long one window takes."""

    gpu: str
    model: str
    height: int
    width: int
    frames_per_clip: int
    steps: int
    passes: int
    speed_lora: bool
    cache: bool  # step caching on (cache_threshold > 0)
    memory_plan: str

    @property
    def id(self) -> str:
        return (
            f"{self.gpu}|{self.model}|{self.width}x{self.height}|{self.frames_per_clip}f|{self.steps}s|"
            f"{self.passes}p|lora={int(self.speed_lora)}|cache={int(self.cache)}|{self.memory_plan}"
        )

    @property
    def tokens(self) -> int:
        """Transformer tokens per window: latent frames x (height / 16) x (width / 16)."""
        return ((self.frames_per_clip - 1) // 4 + 1) * (self.height // 16) * (self.width // 16)

    @property
    def forwards(self) -> int:
        """Transformer forwards per window."""
        return self.steps * self.passes

    def same_setup(self, other: TimingKey) -> bool:
        """Same GPU, model, memory plan, step caching and speed LoRA: only the amount of work differs."""
        return (self.gpu, self.model, self.memory_plan, self.cache, self.speed_lora) == (
            other.gpu,
            other.model,
            other.memory_plan,
            other.cache,
            other.speed_lora,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimingKey:
        types = {"gpu": str, "model": str, "memory_plan": str, "speed_lora": bool, "cache": bool}
        values = {}
        for f in fields(cls):
            value = data[f.name]
            kind = types.get(f.name, int)
            if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{f.name}: {value!r}")
            if kind is not int and not isinstance(value, kind):
                raise ValueError(f"{f.name}: {value!r}")
            values[f.name] = value
        return cls(**values)


def key_for(plan: Any, gpu: str, memory_plan: str) -> TimingKey:
    """The key of a ``JobPlan``-like object run on ``gpu`` (torch's device name, or ``cpu``) under ``memory_plan``
    (the worker's plan name)."""
    return TimingKey(
        gpu=str(gpu),
        model=str(plan.model),
        height=int(plan.height),
        width=int(plan.width),
        frames_per_clip=int(plan.frames_per_clip),
        steps=int(plan.steps),
        passes=int(plan.passes),
        speed_lora=bool(plan.speed_lora),
        cache=float(plan.cache_threshold or 0) > 0,
        memory_plan=str(memory_plan),
    )


# --- the history ------------------------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TimingHistory:
    """Seconds per window measured by earlier jobs, shared by every worker that mounts the same volume.

    ``path=None`` keeps it in memory only. Every read takes the file as it is now (another worker may have
    written it) and falls back to what this process last knew when it cannot be read; two workers writing at once
    never leave a broken file (the last writer wins)."""

    def __init__(self, path: Path | None, max_keys: int = MAX_KEYS, clock=time.time):
        self.path = Path(path) if path is not None else None
        self.max_keys = max_keys
        self.clock = clock
        self._entries: dict[str, dict] = {}
        self._unsaved = False  # the last write failed: this process's copy is newer than the file

    @classmethod
    def on_volume(cls, volume_path: Path, mounted: bool | None = None) -> TimingHistory:
        """``VOLUME_PATH/multitalk-state/timings.json`` when the volume is mounted, else in memory only."""
        volume_path = Path(volume_path)
        mounted = volume_path.is_dir() if mounted is None else mounted
        return cls(volume_path / HISTORY_FILE if mounted else None)

    # reading and writing
    def _read(self) -> dict[str, dict]:
        if self.path is None or self._unsaved:
            return self._entries
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return self._entries
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("timing history %s unreadable (%s): using what this worker knows", self.path, exc)
            return self._entries
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
                raise ValueError("not a timing history")
        except ValueError as exc:
            log.warning("timing history %s is corrupt (%s): it is rewritten by the next job", self.path, exc)
            return self._entries
        entries = {}
        for key_id, entry in data["keys"].items():
            try:
                key = TimingKey.from_dict(entry["key"])
                if key.id != key_id or not all(
                    _finite(entry[f]) and entry[f] >= 0 for f in ("per_window_s", "first_extra_s", "updated")
                ):
                    raise ValueError("bad values")
                if entry["per_window_s"] <= 0 or not all(
                    isinstance(entry[f], int) and entry[f] >= 0 for f in ("jobs", "windows", "first_samples")
                ):
                    raise ValueError("bad counts")
            except (KeyError, TypeError, ValueError):
                continue  # one bad entry (a hand edit, an older format) costs that entry only
            entries[key_id] = entry
        self._entries = entries
        return entries

    def _write(self, entries: dict[str, dict]) -> None:
        self._entries = entries
        if self.path is None:
            return
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".timings-", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump({"version": HISTORY_VERSION, "keys": entries}, f, indent=0, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            self._unsaved = False
        except OSError as exc:  # read-only volume, disk full, ...: the job goes on, the history stays in memory
            self._unsaved = True
            log.warning("timing history %s not saved (%s): kept in memory", self.path, exc)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    # the interface
    def record(self, key: TimingKey, window_seconds: Iterable[float], *, first_is_cold: bool = False) -> None:
        """Add a job's measured windows (in order, this run's only: not the resumed ones).

        The first window is not counted in the per-window mean: it may include one-time work. With other windows
        to compare, how much longer it took is kept apart (``first_extra_s``; skipped with ``first_is_cold``, the
        worker's first job, whose compilation or kernel selection later jobs do not pay). A job of one window adds
        nothing but that extra (when the setup has a mean to compare with)."""
        values = [float(s) for s in window_seconds if _finite(s) and s > 0]
        if not values:
            return
        try:
            entries = dict(self._read())
            entry = dict(entries.get(key.id) or {})
            steady = values[1:]
            now = float(self.clock())
            if steady:
                value = statistics.median(steady)
                if entry:
                    entry["per_window_s"] += ALPHA * (value - entry["per_window_s"])
                    entry["jobs"] += 1
                    entry["windows"] += len(steady)
                else:
                    entry = {
                        "key": asdict(key),
                        "per_window_s": value,
                        "first_extra_s": 0.0,
                        "first_samples": 0,
                        "jobs": 1,
                        "windows": len(steady),
                    }
            if not entry:
                return  # one window and nothing to compare it with
            if not first_is_cold:
                # against this job's other windows; a one-window job against the mean
                extra = max(0.0, values[0] - (statistics.median(steady) if steady else entry["per_window_s"]))
                old = entry["first_extra_s"]
                entry["first_extra_s"] = old + ALPHA * (extra - old) if entry["first_samples"] else extra
                entry["first_samples"] += 1
            entry["updated"] = now
            entries[key.id] = entry
            if len(entries) > self.max_keys:
                for old in sorted(entries, key=lambda k: entries[k]["updated"])[: len(entries) - self.max_keys]:
                    del entries[old]
            self._write(entries)
        except Exception as exc:  # never fail a job over its bookkeeping
            log.warning("timing history: could not record %s: %s: %s", key.id, type(exc).__name__, exc)

    def entry(self, key: TimingKey) -> dict | None:
        return self._read().get(key.id)

    def per_window(self, key: TimingKey) -> float | None:
        """Mean seconds per window measured with exactly this setup, or None."""
        entry = self.entry(key)
        return float(entry["per_window_s"]) if entry else None

    def nearest(self, key: TimingKey) -> tuple[TimingKey, dict] | None:
        """The measured setup closest in work to ``key`` among those of the same GPU, model, memory plan, step
        caching and speed LoRA (most windows measured breaks a tie), or None."""
        best = None
        for entry in self._read().values():
            other = TimingKey.from_dict(entry["key"])
            if not other.same_setup(key) or other == key:
                continue
            distance = abs(math.log(_work(key) / _work(other)))
            rank = (distance, -entry["windows"])
            if best is None or rank < best[0]:
                best = (rank, other, entry)
        return (best[1], best[2]) if best else None


def _work(key: TimingKey) -> float:
    return key.tokens * key.forwards


# --- the estimate -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Basis:
    """What an estimate stands on: the setup measured, over how many jobs and windows, and whether it was scaled
    from another setup (``ratio``: the work per window of this job over the measured one's)."""

    key: TimingKey
    jobs: int
    windows: int
    scaled: bool
    ratio: float = 1.0

    def describe(self) -> str:
        where = f"measured on {self.key.gpu} over {self.jobs} job(s), {self.windows} window(s)"
        if not self.scaled:
            return f"{where}, same settings"
        k = self.key
        return (
            f"scaled x{self.ratio:.2g} by work per window from {k.width}x{k.height}, {k.frames_per_clip} frames, "
            f"{k.steps} steps x {k.passes} passes {where}"
        )


@dataclass(frozen=True)
class Estimate:
    """How long the job's generation should take from now, and what it should cost.

    ``seconds`` = ``windows_left`` x ``per_window_s`` + ``first_window_extra_s`` + ``overhead_s``; ``min_seconds``
    the least it can take (equal to ``seconds`` less the first window's extra when measured with these settings;
    when scaled, every part of a window assumed to scale as little as it can): a refusal uses ``min_seconds``."""

    windows: int
    windows_left: int
    per_window_s: float
    first_window_extra_s: float
    overhead_s: float
    seconds: float
    min_seconds: float
    cost_usd: float | None
    price_per_s: float | None
    price_source: str | None
    basis: Basis
    key: TimingKey  # the job's own setup

    def as_dict(self) -> dict[str, Any]:
        """The result's ``estimate`` (``EstimateInfo`` in response.py)."""
        return {
            "windows": self.windows,
            "windows_left": self.windows_left,
            "per_window_s": round(self.per_window_s, 3),
            "seconds": round(self.seconds, 1),
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 4),
            "basis": self.basis.describe(),
            "samples": self.basis.windows,
            "scaled": self.basis.scaled,
        }

    def describe(self) -> str:
        left = f"{self.windows_left} window(s)" + (
            f" (of {self.windows}; {self.windows - self.windows_left} done by an earlier run)"
            if self.windows_left != self.windows
            else ""
        )
        text = (
            f"{left} x {self.per_window_s:.1f} s per window ({self.basis.describe()}) + "
            f"{self.first_window_extra_s + self.overhead_s:.0f} s for the first window's set-up, assembly and upload "
            f"= about {_duration(self.seconds)}"
        )
        if self.basis.scaled:
            text += f" (at least {_duration(self.min_seconds)})"
        if self.cost_usd is not None:
            text += f", about ${self.cost_usd:.2f} at ${self.price_per_s:.5f}/s ({self.price_source})"
        return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds:.0f} s ({seconds / 60:.0f} min)"


def overhead_s(frames: int) -> float:
    """Time after the last window: assembly of the final MP4, its upload and the result (see OVERHEAD_*)."""
    return OVERHEAD_BASE_S + OVERHEAD_PER_VIDEO_S * max(0, frames) / FPS


def _env_number(env: Mapping[str, str], name: str, *, positive: bool) -> float | None:
    value = env.get(name)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        kind = "a positive number" if positive else "a number, 0 or more"
        raise ValueError(f"environment variable {name} must be {kind}, got {value!r}")
    return number


def check_env(env: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` naming the variable when ``GPU_PRICE_PER_HOUR`` or ``EXECUTION_TIMEOUT_SECONDS`` is not
    a number (zero or more / more than zero): for the worker's start, so a typo fails it rather than being ignored
    job after job."""
    env = os.environ if env is None else env
    _env_number(env, PRICE_ENV, positive=False)
    _env_number(env, TIMEOUT_ENV, positive=True)


def _lenient(env: Mapping[str, str], name: str, *, positive: bool) -> float | None:
    try:
        return _env_number(env, name, positive=positive)
    except ValueError as exc:
        log.warning("%s: ignored", exc)
        return None


def price_per_second(gpu: str, env: Mapping[str, str] | None = None) -> tuple[float | None, str | None]:
    """USD per second of this GPU and where the figure comes from: ``GPU_PRICE_PER_HOUR`` when set, else RunPod's
    serverless flex price for the GPU's name; (None, None) when neither applies (a CPU, an unlisted GPU)."""
    env = os.environ if env is None else env
    hourly = _lenient(env, PRICE_ENV, positive=False)
    if hourly is not None:
        return hourly / 3600, PRICE_ENV
    name = gpu.lower()
    for fragment, price in RUNPOD_FLEX_PRICES:
        if fragment in name:
            return price, "RunPod serverless flex price"
    return None, None


def estimate_job(
    history: TimingHistory, plan: Any, key: TimingKey, env: Mapping[str, str] | None = None
) -> Estimate | None:
    """The time and cost of a ``JobPlan``-like job with ``key``'s setup, or None when nothing was measured on this
    GPU for this model, memory plan, step caching and speed LoRA."""
    windows = int(plan.windows)
    left = max(0, windows - max(0, int(getattr(plan, "resume_from", 0) or 0)))
    entry = history.entry(key)
    if entry is not None:
        basis = Basis(key, entry["jobs"], entry["windows"], scaled=False)
        per = low = float(entry["per_window_s"])
        extra = float(entry["first_extra_s"])
    else:
        near = history.nearest(key)
        if near is None:
            return None
        other, entry = near
        r_tokens = key.tokens / other.tokens
        r_forwards = key.forwards / other.forwards
        ratio = r_tokens * r_forwards
        basis = Basis(other, entry["jobs"], entry["windows"], scaled=True, ratio=ratio)
        per = float(entry["per_window_s"]) * ratio
        extra = float(entry["first_extra_s"]) * ratio
        # the least a window can take: its sampling scales with the forwards and between linearly and
        # quadratically (attention) with the tokens, its VAE and writing linearly with the pixels, anything else
        # not at all; measured time split among those in the least favourable way
        low = float(entry["per_window_s"]) * min(1.0, r_tokens, r_forwards * min(r_tokens, r_tokens**2))
    overhead = overhead_s(int(getattr(plan, "frames", 0) or 0))
    extra = extra if left else 0.0
    seconds = left * per + extra + overhead
    min_seconds = left * low + overhead
    price, source = price_per_second(key.gpu, env)
    return Estimate(
        windows=windows,
        windows_left=left,
        per_window_s=per,
        first_window_extra_s=extra,
        overhead_s=overhead,
        seconds=seconds,
        min_seconds=min_seconds,
        cost_usd=None if price is None else seconds * price,
        price_per_s=price,
        price_source=source,
        basis=basis,
        key=key,
    )


# --- the timeout ------------------------------------------------------------------------------------------------
def execution_timeout_with_source(
    job: Mapping[str, Any], request_value: float | None, env: Mapping[str, str] | None = None
) -> tuple[float | None, str | None]:
    """The execution timeout in seconds and where it came from (for messages): RunPod's per-request
    ``policy.executionTimeout`` (milliseconds) when the job carries it, else the request's ``execution_timeout_s``,
    else ``EXECUTION_TIMEOUT_SECONDS``; (None, None) when unknown."""
    policy = job.get("policy") if isinstance(job, Mapping) else None
    if isinstance(policy, Mapping):
        ms = policy.get("executionTimeout")
        if _finite(ms) and ms > 0:
            return ms / 1000, "policy.executionTimeout"
        if ms is not None:
            log.warning("policy.executionTimeout %r is not a positive number: ignored", ms)
    if request_value is not None and _finite(request_value) and request_value > 0:
        return float(request_value), "execution_timeout_s"
    env = os.environ if env is None else env
    seconds = _lenient(env, TIMEOUT_ENV, positive=True)
    if seconds is not None:
        return seconds, TIMEOUT_ENV
    return None, None


def execution_timeout_of(
    job: Mapping[str, Any], request_value: float | None, env: Mapping[str, str] | None = None
) -> float | None:
    """The execution timeout the job was given, in seconds (see ``execution_timeout_with_source``), or None."""
    return execution_timeout_with_source(job, request_value, env)[0]


def check_fits(
    estimate: Estimate | None,
    timeout_s: float | None,
    elapsed_s: float,
    *,
    margin: float = MARGIN,
    source: str | None = None,
    frames: int | None = None,
) -> None:
    """Raise ``E_TOO_LONG`` when ``elapsed_s`` + the least the job can take is over ``timeout_s`` x (1 - margin).
    Nothing is refused without an estimate or a timeout. ``frames`` (the job's length) lets the message say how
    much video would fit."""
    if estimate is None or timeout_s is None or estimate.windows_left == 0:
        return
    usable = timeout_s * (1 - margin)
    if elapsed_s + estimate.min_seconds <= usable:
        return
    given = f"{timeout_s:.0f} s" + (f" ({source})" if source else "")
    needed = math.ceil((elapsed_s + estimate.seconds) / (1 - margin) / 60) * 60
    advice = [f"raise policy.executionTimeout to at least {needed * 1000} ms (or execution_timeout_s to {needed})"]
    room = usable - elapsed_s - estimate.overhead_s - estimate.first_window_extra_s
    fit = int(room // estimate.per_window_s) if estimate.per_window_s > 0 and room > 0 else 0
    if frames and estimate.windows:
        done = estimate.windows - estimate.windows_left
        seconds = frames * min(1.0, (done + fit) / estimate.windows) / FPS
        advice.append(f"send shorter audio (about {seconds:.0f} s of video fits)" if fit else "send shorter audio")
    else:
        advice.append("send shorter audio")
    key = estimate.key
    if key.forwards > 8:
        advice.append(
            "use a faster preset (balanced, fast with a speed LoRA; one speaker from an image: realtime on a "
            "FlashTalk worker) or fewer sampling_steps"
        )
    if key.height * key.width > 480 * 832:
        advice.append("use 480p")
    done = estimate.windows - estimate.windows_left
    kept = (
        f" The {done} window(s) made by an earlier run are kept: sent again with the same job_key, it resumes there."
        if done
        else ""
    )
    raise WorkerError(
        "E_TOO_LONG",
        f"this job cannot finish within its execution timeout of {given}: {elapsed_s:.0f} s have passed and it "
        f"needs {estimate.describe()}; refused before sampling. To run it: " + ", or ".join(advice) + "." + kept,
    )


# --- GPU-seconds ------------------------------------------------------------------------------------------------
def gpu_seconds(started: float, now: float | None = None) -> float:
    """Seconds the job held the GPU worker: from ``started`` (``time.perf_counter()`` when the job began) to now."""
    end = time.perf_counter() if now is None else now
    return round(max(0.0, end - started), 3)


# --- one job, for the handler -----------------------------------------------------------------------------------
class JobTimer:
    """What the handler needs for one job: ``on_plan`` (the engine's callback, before sampling) estimates the job
    and raises ``E_TOO_LONG`` when it cannot finish in time; ``on_segment`` collects this run's window times;
    ``on_delivered`` notes when the first segment reached the client (time to first segment); ``record`` adds the
    window times to the history (once; also for a job that failed after some windows); ``result`` records and gives
    the result's ``gpu_seconds``, ``first_segment_s`` and ``estimate``.

    ``started`` is the job's start on ``clock`` (``time.perf_counter``), ``cold`` whether it is the worker's first
    job (its first window's extra is not learnt)."""

    def __init__(
        self,
        history: TimingHistory,
        gpu: str,
        memory_plan: str,
        timeout_s: float | None,
        started: float,
        *,
        source: str | None = None,
        cold: bool = False,
        env: Mapping[str, str] | None = None,
        clock=time.perf_counter,
    ):
        self.history, self.gpu, self.memory_plan = history, gpu, memory_plan
        self.timeout_s, self.source, self.started = timeout_s, source, started
        self.cold, self.env, self.clock = cold, env, clock
        self.key: TimingKey | None = None
        self.estimate: Estimate | None = None
        self.windows: list[float] = []
        self.first_segment_s: float | None = None  # job start to the first segment delivered
        self._recorded = False

    def on_plan(self, plan: Any) -> None:
        self.key = key_for(plan, self.gpu, self.memory_plan)
        self.estimate = estimate_job(self.history, plan, self.key, self.env)
        elapsed = self.clock() - self.started
        if self.estimate is not None:
            log.info("estimate: %s; %.0f s elapsed, timeout %s", self.estimate.describe(), elapsed, self.timeout_s)
        check_fits(self.estimate, self.timeout_s, elapsed, source=self.source, frames=int(plan.frames))

    def on_segment(self, segment: Any) -> None:
        if not getattr(segment, "resumed", False):
            self.windows.append(float(segment.seconds))

    def on_delivered(self) -> None:
        """A segment was delivered (streamed, or announced again on a resumed run): the first one's time counts."""
        if self.first_segment_s is None:
            self.first_segment_s = round(max(0.0, self.clock() - self.started), 3)

    def record(self) -> None:
        if self._recorded or self.key is None:
            return
        self._recorded = True
        self.history.record(self.key, self.windows, first_is_cold=self.cold)

    def result(self) -> dict[str, Any]:
        """``gpu_seconds`` and, when there were any, ``first_segment_s`` and ``estimate`` for ``JobOutput``."""
        self.record()
        out: dict[str, Any] = {"gpu_seconds": gpu_seconds(self.started, self.clock())}
        if self.first_segment_s is not None:
            out["first_segment_s"] = self.first_segment_s
        if self.estimate is not None:
            out["estimate"] = self.estimate.as_dict()
        return out
