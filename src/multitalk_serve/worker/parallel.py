"""One job on several GPUs: the worker as N processes, one per GPU (``MULTITALK_GPUS``; docs/parallel.md).

The process RunPod starts is rank 0: it spawns ranks 1..N-1 (the followers), every rank loads the same pipeline
(``Worker.from_config``, on its own GPU) and splits the transformer's forward with the others
(``enable_pipeline_parallel``: Ulysses context parallelism, NCCL on GPUs, gloo on CPU). Rank 0 runs the RunPod
handler exactly as one process does (validation, downloads, progress, cancellation, segments, upload); its
pipeline's ``generate`` is wrapped so that each job is first handed to the followers (the fetched media as files
in a scratch folder on this machine, the options with the seed drawn on rank 0, a copy of the job's resume
folder) and every rank runs the same ``generate``. Followers write their video to the scratch folder and discard it.

Keeping the ranks in step: ``engine.JobControl`` broadcasts one word from rank 0 before each forward, and ``END``
when rank 0's job is over (returned, failed, cancelled or refused), so a follower never waits for a forward that
will not come. Failures:

- a follower that dies (killed, out of memory, a fault) or raises inside a forward: rank 0's collective fails
  (gloo) or its watch on the followers' processes sees the death (NCCL, whose collectives would block): the job
  fails with ``E_PARALLEL`` and ``refresh_worker``, and the worker exits with status 1 once the result is posted,
  for RunPod to start a fresh one. A group that failed is never used again;
- every collective has a deadline (``MULTITALK_PARALLEL_TIMEOUT_SECONDS``): a rank that hangs fails the others;
- rank 0 that dies: each follower watches its parent and exits;
- a follower that fails outside a forward for the same reason as rank 0 (a bad input every rank sees) is not a
  group failure: rank 0's error is the job's, and the group serves the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing.connection
import os
import random
import shutil
import tempfile
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from .config import WorkerConfig
from .errors import WorkerError

log = logging.getLogger("multitalk_serve.worker.parallel")

EXIT_GRACE_S = 60.0  # after a group failure: the longest wait for the failed job's result to be posted


def parallel_size(config: WorkerConfig) -> int:
    """How many processes share each job: ``MULTITALK_GPUS`` (``auto``: every visible GPU on a CUDA worker, 1 on
    a CPU one; a number: that many, which on CUDA must not exceed the GPUs visible)."""
    from ..engine import ConfigError

    cuda = torch.cuda.is_available() and (config.device is None or config.device.startswith("cuda"))
    gpus = torch.cuda.device_count() if cuda else 0
    if config.gpus == "auto":
        return max(1, gpus)
    try:
        size = int(config.gpus)
    except ValueError:
        raise ConfigError(f"MULTITALK_GPUS must be auto or a number of GPUs, got {config.gpus!r}") from None
    if size < 1:
        raise ConfigError(f"MULTITALK_GPUS must be at least 1, got {size}")
    if cuda and size > gpus:
        raise ConfigError(f"MULTITALK_GPUS={size}, but this worker sees {gpus} GPU(s)")
    return size


def _backend(config: WorkerConfig) -> str:
    cuda = torch.cuda.is_available() and (config.device is None or config.device.startswith("cuda"))
    return "nccl" if cuda else "gloo"


def _rank_config(config: WorkerConfig, rank: int, backend: str) -> WorkerConfig:
    """Each rank's settings: the same, on its own GPU."""
    return dataclasses.replace(config, device=f"cuda:{rank}") if backend == "nccl" else config


def _init_group(rank: int, world: int, store: str, backend: str, timeout_s: float) -> None:
    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend, init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )


# --- what a follower is sent for each job -------------------------------------------------------------------------
@dataclasses.dataclass
class FollowerJob:
    """One job for the followers: ``generate``'s arguments, media as files in ``folder`` (``("file", path)``)."""

    folder: Path
    args: dict[str, Any]
    job_dir: bool  # the job has a resume folder: each follower gets a copy in its own folder


def _to_files(value: Any, folder: Path, name: str) -> Any:
    if isinstance(value, bytes | bytearray):
        path = folder / name
        path.write_bytes(value)
        return ("file", str(path))
    return value


def _from_files(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "file":
        return Path(value[1]).read_bytes()
    return value


# --- rank 0 -------------------------------------------------------------------------------------------------------
class ParallelGroup:
    """Rank 0's side: the followers' processes and pipes, the job hand-over around ``generate``, and the watch."""

    def __init__(self, world: int, config: WorkerConfig):
        self.world = world
        self.config = config
        self.backend = _backend(config)
        self.timeout_s = config.parallel_timeout_s
        self.scratch = Path(tempfile.mkdtemp(prefix="multitalk-parallel-"))
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.broken = threading.Event()
        self.reason = ""
        self.serving = False  # after start: a failure fails the job and exits; before, it fails the start
        self.closing = False
        self.active = 0  # jobs inside the wrapped handlers
        self.control = None
        self._generate = None
        self._jobs = itertools.count(1)
        self._exit_started = False

    # start ------------------------------------------------------------------------------------------------------
    def start(self):
        """Spawn the followers, form the group, load the pipeline on every rank, split it; returns rank 0's Worker."""
        import torch.multiprocessing as mp

        from ..engine import JobControl, enable_pipeline_parallel
        from .handler import Worker

        ctx = mp.get_context("spawn")  # fresh interpreters: the only start method that works with CUDA
        store = str(self.scratch / "store")
        for rank in range(1, self.world):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=follower_main,
                args=(rank, self.world, store, self.backend, self.timeout_s, self.config, theirs, os.getpid()),
                name=f"multitalk-rank{rank}",
            )
            proc.start()
            theirs.close()
            self.procs.append(proc)
            self.conns.append(mine)
            log.info("parallel: rank %d of %d is process %d", rank, self.world, proc.pid)
        threading.Thread(target=self._watch, name="multitalk-parallel-watch", daemon=True).start()
        _init_group(0, self.world, store, self.backend, self.timeout_s)
        worker = Worker.from_config(_rank_config(self.config, 0, self.backend))
        self._expect("loaded", deadline=None)  # loading may take long (a 14B from a network volume): no deadline
        for conn in self.conns:
            conn.send(("enable", None))
        enable_pipeline_parallel(worker.pipeline)
        self.control = JobControl(worker.pipeline.transformer, worker.pipeline.device)
        self._expect("ready", deadline=time.monotonic() + self.timeout_s)
        self._generate = worker.pipeline.generate
        worker.pipeline.generate = self.generate  # this instance only: every job is handed to the followers first
        self.serving = True
        log.info("parallel: %d ranks (%s) serve each job together", self.world, self.backend)
        return worker

    def _expect(self, what: str, deadline: float | None) -> None:
        for rank, conn in enumerate(self.conns, start=1):
            kind, detail = self._receive(rank, conn, deadline)
            if kind != what:
                raise RuntimeError(f"rank {rank} failed to start: {detail}")

    def _receive(self, rank: int, conn, deadline: float | None):
        proc = self.procs[rank - 1]
        while not conn.poll(0.2):
            if not proc.is_alive():
                raise RuntimeError(f"rank {rank} (process {proc.pid}) exited with code {proc.exitcode}")
            if self.broken.is_set():
                raise RuntimeError(self.reason)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"rank {rank} did not answer within {self.timeout_s:g} s")
        try:
            return conn.recv()
        except (EOFError, OSError):
            proc.join(5)
            raise RuntimeError(f"rank {rank} (process {proc.pid}) exited with code {proc.exitcode}") from None

    # the watch and the exit ---------------------------------------------------------------------------------------
    def _watch(self) -> None:
        """A follower's process that ends while the group is up fails the group."""
        waiting = {p.sentinel: (rank, p) for rank, p in enumerate(self.procs, start=1)}
        while waiting and not self.closing:
            for sentinel in multiprocessing.connection.wait(list(waiting), timeout=1.0):
                rank, proc = waiting.pop(sentinel)
                proc.join(1)
                if not self.closing:
                    self.fail(f"rank {rank} (process {proc.pid}) exited with code {proc.exitcode}")

    def fail(self, reason: str) -> None:
        """The group is unusable: the running job (if any) fails with E_PARALLEL, then the worker exits."""
        if self.broken.is_set():
            return
        self.reason = reason
        self.broken.set()
        log.error("E_PARALLEL: %s", reason)
        if not self.serving:  # still starting: the start fails (a rank that died cannot be waited for)
            for rank, conn in enumerate(self.conns, start=1):  # what the rank said before it exited
                with contextlib.suppress(Exception):
                    while conn.poll(0):
                        kind, detail = conn.recv()
                        if kind == "error":
                            log.error("E_PARALLEL: rank %d failed to start: %s", rank, detail)
            log.error("E_PARALLEL: a rank failed while the worker started: exiting")
            self.exit_now()
        if not self._exit_started:
            self._exit_started = True
            threading.Thread(target=self._exit_after_job, name="multitalk-parallel-exit", daemon=True).start()

    def error(self) -> WorkerError:
        return WorkerError(
            "E_PARALLEL",
            f"{self.reason}; the worker stops for RunPod to start a fresh one (send the job again)",
            refresh=True,
        )

    def _exit_after_job(self) -> None:
        """Exit once the failed job's result is posted (the SDK no longer counts it), or after EXIT_GRACE_S."""
        deadline = time.monotonic() + EXIT_GRACE_S
        time.sleep(0.5)
        while time.monotonic() < deadline and (self.active > 0 or _sdk_jobs() > 0):
            time.sleep(0.2)
        time.sleep(0.5)  # the post's reply
        self.exit_now()

    def exit_now(self) -> None:
        log.error("E_PARALLEL: the worker exits (status 1) for RunPod to replace it")
        logging.shutdown()
        self.closing = True
        for proc in multiprocessing.active_children():  # the followers, and the RunPod SDK's heartbeat process
            with contextlib.suppress(Exception):
                proc.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)
        os._exit(1)  # a collective of the job thread may never return: no clean interpreter shutdown

    def close(self) -> None:
        """The worker stops (RunPod's SIGTERM, the end of a local run): the followers end too."""
        self.closing = True
        log.info("parallel: stopping ranks 1-%d", self.world - 1)
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        shutil.rmtree(self.scratch, ignore_errors=True)

    # one job ------------------------------------------------------------------------------------------------------
    def generate(self, image, audio, prompt, output, **kwargs):
        """``MultiTalkPipeline.generate`` on every rank: hand the job over, run it here, end it everywhere."""
        from ..engine import GenerateOptions

        if self.broken.is_set():
            raise self.error()
        options = kwargs.get("options") or GenerateOptions()
        if options.seed is None:  # drawn here, once, so that every rank samples the same noise
            options = dataclasses.replace(options, seed=random.randrange(2**31))
        kwargs["options"] = options
        folder = self.scratch / f"job{next(self._jobs)}"
        folder.mkdir()
        try:
            self._hand_over(folder, image, audio, prompt, kwargs)
            self.control.start_job()
            failure = None
            try:
                result = self._generate(image, audio, prompt, output, **kwargs)
            except BaseException as exc:
                failure = exc
            if self.control.in_forward:  # stopped inside a forward: the ranks are out of step for good
                self._settle(f"a parallel forward failed on rank 0 ({type(failure).__name__}: {failure})")
                raise self.error() from failure
            try:
                self.control.end_job()
            except Exception as exc:
                self._settle(f"the ranks could not end the job ({type(exc).__name__}: {exc})")
                raise self.error() from exc
            self._collect(failure)
            if failure is not None:
                raise failure
            return result
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _hand_over(self, folder: Path, image, audio, prompt, kwargs: dict) -> None:
        args = {
            "image": _to_files(image, folder, "image"),
            "audio": [_to_files(a, folder, f"audio{i}") for i, a in enumerate(audio)],
            "prompt": prompt,
            "video": _to_files(kwargs.get("video"), folder, "video"),
            "mask": _to_files(kwargs.get("mask"), folder, "mask"),
            **{k: kwargs.get(k) for k in ("boxes", "options", "names", "fingerprint") if kwargs.get(k) is not None},
        }
        job_dir = kwargs.get("job_dir")
        if job_dir is not None:
            from .jobstate import LOCK

            for rank in range(1, self.world):
                target = folder / f"rank{rank}" / "job"
                if Path(job_dir).is_dir():  # the same saved state: every rank resumes from the same window
                    shutil.copytree(job_dir, target, ignore=shutil.ignore_patterns(LOCK, f"{LOCK}.*"))
                else:
                    target.mkdir(parents=True)
        job = FollowerJob(folder, args, job_dir is not None)
        for rank, conn in enumerate(self.conns, start=1):
            try:
                conn.send(job)
            except (OSError, ValueError) as exc:
                self._settle(f"rank {rank} cannot be reached ({type(exc).__name__}: {exc})")
                raise self.error() from exc

    def _collect(self, failure: BaseException | None) -> None:
        """Every follower's end of the job; one that died or does not answer fails the group."""
        deadline = time.monotonic() + self.timeout_s
        for rank, conn in enumerate(self.conns, start=1):
            try:
                kind, detail = self._receive(rank, conn, deadline)
            except (RuntimeError, TimeoutError) as exc:
                self._settle(str(exc))
                raise self.error() from failure
            if kind == "error" and failure is None:
                log.warning("parallel: rank %d failed after its last forward (rank 0's job stands): %s", rank, detail)

    def _settle(self, fallback: str) -> None:
        """A collective failed: wait a moment for the watch to name the follower that died, else use ``fallback``."""
        deadline = time.monotonic() + 3.0
        while not self.broken.is_set() and time.monotonic() < deadline:
            if any(not p.is_alive() for p in self.procs):
                time.sleep(0.2)  # the watch reports it
                continue
            time.sleep(0.1)
        self.fail(fallback)

    # the handlers -------------------------------------------------------------------------------------------------
    def wrap(self, handler):
        """RunPod's async handler, failing the job at once with E_PARALLEL when the group fails (an NCCL collective
        of a dead peer would keep the job's thread waiting)."""

        async def handle(job: dict) -> dict:
            if self.broken.is_set():
                return self.error().payload()
            self.active += 1
            task = asyncio.ensure_future(handler(job))
            try:
                while True:
                    done = await self._wait(task)
                    if done:
                        return task.result()
                    if self.broken.is_set():
                        return self.error().payload()
            finally:
                self.active -= 1

        return handle

    def wrap_stream(self, handler):
        """The same for the generator handler (``MULTITALK_STREAM``)."""

        async def handle_stream(job: dict):
            if self.broken.is_set():
                yield self.error().payload()
                return
            self.active += 1
            items = handler(job)
            try:
                while True:
                    step = asyncio.ensure_future(items.__anext__())
                    while True:
                        done = await self._wait(step)
                        if done or self.broken.is_set():
                            break
                    if not done:
                        yield self.error().payload()
                        return
                    try:
                        item = step.result()
                    except StopAsyncIteration:
                        return
                    yield item
            finally:
                self.active -= 1

        return handle_stream

    async def _wait(self, task: asyncio.Future) -> bool:
        """Whether ``task`` finished within a quarter second. A stop of the job (RunPod's cancel, a timeout) is
        passed on to ``task`` (the worker's handler stops the job between steps and cleans up), then raised."""
        try:
            done, _ = await asyncio.wait({task}, timeout=0.25)
        except asyncio.CancelledError:
            task.cancel()
            while not task.done() and not self.broken.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task}, timeout=0.25)
            raise
        return bool(done)


def _sdk_jobs() -> int:
    """Jobs the RunPod SDK still holds (taken, result not yet posted); 0 where it does not count (local runs)."""
    try:
        from runpod.serverless.modules.worker_state import JobsProgress

        return JobsProgress().get_job_count()
    except Exception:
        return 0


def start(config: WorkerConfig, world: int):
    """Rank 0: start the followers and load every rank; returns ``(worker, group)``."""
    group = ParallelGroup(world, config)
    try:
        return group.start(), group
    except BaseException:
        group.close()
        raise


# --- ranks 1..N-1 -------------------------------------------------------------------------------------------------
def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            log.error("parallel: rank 0 (process %d) is gone: this rank exits", parent)
            os._exit(1)


def follower_main(
    rank: int, world: int, store: str, backend: str, timeout_s: float, config: WorkerConfig, conn, parent: int
) -> None:
    """A follower: load the pipeline like rank 0, then run every job rank 0 hands over, until told to stop."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s rank {rank} %(name)s: %(message)s")
    threading.Thread(target=_watch_parent, args=(parent,), name="multitalk-parent-watch", daemon=True).start()
    try:
        from ..engine import JobControl, enable_pipeline_parallel
        from .handler import Worker

        _init_group(rank, world, store, backend, timeout_s)
        pipe = Worker.from_config(_rank_config(config, rank, backend)).pipeline  # the same checks and loading
        conn.send(("loaded", None))
        order = conn.recv()
        if order is None:  # rank 0 failed to start: nothing to serve
            os._exit(0)
        if order[0] != "enable":
            raise RuntimeError(f"expected the order to split the pipeline, got {order!r}")
        enable_pipeline_parallel(pipe)
        control = JobControl(pipe.transformer, pipe.device)
        conn.send(("ready", None))
    except BaseException:
        text = traceback.format_exc()
        log.error("parallel: rank %d failed to start:\n%s", rank, text)
        with contextlib.suppress(Exception):
            conn.send(("error", text.strip().splitlines()[-1]))
        os._exit(1)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # rank 0 is gone
            os._exit(1)
        if job is None:
            break
        status = _follow(rank, pipe, control, job)
        if status[0] != "ok":
            log.info("parallel: rank %d: job %s (%s)", rank, status[0], status[1] or "rank 0 ended it")
        conn.send(status)
    import torch.distributed as dist

    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def _follow(rank: int, pipe, control, job: FollowerJob) -> tuple[str, str | None]:
    """Run one job as rank 0 does; ``("ok" | "ended" | "error", detail)``. Exits the process when the group can no
    longer be trusted (a failure inside a forward, or the ranks out of step)."""
    folder = job.folder / f"rank{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    args = dict(job.args)
    control.start_job()
    status: tuple[str, str | None] = ("ok", None)
    try:
        pipe.generate(
            _from_files(args.pop("image")),
            [_from_files(a) for a in args.pop("audio")],
            args.pop("prompt"),
            folder / "video.mp4",
            video=_from_files(args.pop("video")),
            mask=_from_files(args.pop("mask")),
            job_dir=folder / "job" if job.job_dir else None,
            **args,
        )
    except BaseException as exc:
        if control.ended:
            return ("ended", None)
        if control.in_forward:
            log.error("parallel: rank %d failed inside a forward: exiting\n%s", rank, traceback.format_exc())
            os._exit(1)
        status = ("error", f"{type(exc).__name__}: {exc}")
    try:
        control.await_end()
    except Exception:
        log.error("parallel: rank %d out of step with rank 0: exiting\n%s", rank, traceback.format_exc())
        os._exit(1)
    return status
