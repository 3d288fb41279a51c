"""The worker on 2 processes (``MULTITALK_GPUS=2``; gloo on CPU): the real worker process against the fake RunPod.

Rank 0 takes the jobs, rank 1 follows; a job's frames equal one process's (crf 0: lossless, so the decoded frames are
the generated ones); a cancelled job and a bad input end on both ranks and the group goes on. Then rank 1 is killed
(SIGKILL) in the middle of a job: the job fails with E_PARALLEL and the worker exits with status 1, within a bounded
time, for RunPod to replace it. Rank 0 killed: rank 1 exits. The handler wrappers (a job thread stuck in a collective
answers anyway; RunPod's stop reaches the worker's handler) are tested without processes. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import time
from pathlib import Path

import av
import numpy as np
import pytest

from fake_runpod import FakeRunPod, start_worker
from media import write_audio
from test_worker_api import png_b64

# 9-frame windows with 1 motion frame: 8 new frames a window
WINDOWS = {"MULTITALK_WINDOW_FRAMES": "9", "MULTITALK_MOTION_FRAMES": "1"}
FAST = {"width": 64, "height": 64, "sampling_steps": 1, "seed": 5, "prompt": "a person talks"}


def frames_of(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def voice(tmp_path: Path, seconds: float) -> str:
    return base64.b64encode(write_audio(tmp_path / f"v{seconds}.wav", seconds).read_bytes()).decode()


def one_process_frames(tiny_root: Path, volume: Path, jobs: list[dict]) -> list[np.ndarray]:
    """The same requests through a one-process worker loaded from the same settings (in this process)."""
    from multitalk_serve.worker.config import WorkerConfig
    from multitalk_serve.worker.handler import Worker

    config = WorkerConfig(
        model_path=tiny_root,
        volume_path=volume,
        s3=None,
        device="cpu",
        dtype="fp32",
        window_frames=9,
        motion_frames=1,
        gpus="1",
    )
    worker = Worker.from_config(config)
    frames = []
    for n, job in enumerate(jobs):
        output = worker.run({"id": f"one-process-{n}", **job})
        assert "error" not in output, output
        frames.append(frames_of(output["video_path"]))
    return frames


@pytest.mark.slow
def test_two_processes_serve_a_job_like_one_and_a_killed_rank_fails_the_job_and_the_worker(tiny_root, tmp_path):
    fake = FakeRunPod()
    volume = tmp_path / "volume"
    volume.mkdir()
    env = {
        **fake.env(),
        **WINDOWS,
        "MODEL_PATH": str(tiny_root),
        "VOLUME_PATH": str(volume),
        "MULTITALK_DEVICE": "cpu",
        "MULTITALK_DTYPE": "fp32",
        "MULTITALK_GPUS": "2",
        "MULTITALK_PARALLEL_TIMEOUT_SECONDS": "60",
        "PROGRESS_INTERVAL_SECONDS": "0",
    }
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    try:
        lossless = {"output": {"format": "volume", "crf": 0}}
        job = {"input": {"image": png_b64(), "audio": [voice(tmp_path, 2.2)], **FAST, **lossless}}
        # 4 s: 13 windows, stopped after some, then continued from its saved state (job_key)
        resumable = {"input": {"image": png_b64(), "audio": [voice(tmp_path, 4.0)], **FAST, **lossless}}
        (tmp_path / "volume1").mkdir()
        expected, expected_resumed = one_process_frames(tiny_root, tmp_path / "volume1", [job, resumable])
        resumable["input"]["job_key"] = "resume-key"

        # long jobs: 12 s of voice is 38 windows
        long_job = {"input": {"image": png_b64(), "audio": [voice(tmp_path, 12.0)], **FAST}}

        def windows_started(job_id: str) -> int:
            clips = [
                (p["body"].get("output") or {}).get("clip") or 0
                for p in fake.posts_for(job_id)
                if p["kind"] == "done" and p["body"].get("status") == "IN_PROGRESS"
            ]
            return max(clips, default=0)

        # a job stopped mid-way (RunPod's cancel): rank 0 stops between steps, rank 1 at its next forward
        fake.jobs.put({"id": "cancelled", **resumable})
        fake.wait_for(lambda: windows_started("cancelled") >= 2, 300, "two windows of the job to cancel")
        fake.stops.put("cancelled")
        fake.wait_for(lambda: "rank 1: job ended (rank 0 ended it)" in log_path.read_text(), 60, "rank 1 to stop")
        assert fake.final("cancelled") is None  # a stopped job posts no result: the platform marks it cancelled
        assert windows_started("cancelled") < 13

        # unreadable audio: every rank fails the same way before any forward; the group goes on
        bad = {"input": {"image": png_b64(), "audio": [base64.b64encode(b"RIFF" + bytes(400)).decode()], **FAST}}
        fake.jobs.put({"id": "bad-audio", **bad})
        final = fake.wait_for(lambda: fake.final("bad-audio"), 120, "the bad job's result")
        assert final["error"].startswith("E_AUDIO"), final

        fake.jobs.put({"id": "two-ranks", **job})
        final = fake.wait_for(lambda: fake.final("two-ranks"), 300, "the 2-process job")
        output = final.get("output") or {}
        assert "error" not in final, final
        frames = frames_of(output["video_path"])
        assert frames.shape == expected.shape == (55, 64, 64, 3)
        assert np.array_equal(frames, expected), np.abs(frames.astype(int) - expected).max()

        # the stopped job sent again: every rank continues from the saved window (rank 1 from a copy of the folder)
        fake.jobs.put({"id": "resumed", **resumable})
        final = fake.wait_for(lambda: fake.final("resumed"), 300, "the resumed job")
        assert "error" not in final, final
        assert any("resumed after window" in w for w in final["output"]["warnings"]), final["output"]["warnings"]
        assert np.array_equal(frames_of(final["output"]["video_path"]), expected_resumed)
        # rank 1 ran its own loop to the end from the same window (not stopped early by rank 0: its forwards matched)
        assert log_path.read_text().count("rank 1: job ended") == 1  # the cancelled job only

        text = log_path.read_text()
        assert "parallel: 2 ranks (gloo) serve each job together" in text
        follower = int(re.search(r"rank 1 of 2 is process (\d+)", text).group(1))

        # rank 1 killed once rank 0 reports the long job's third window
        fake.jobs.put({"id": "killed", **long_job})
        fake.wait_for(lambda: windows_started("killed") >= 3, 300, "three windows of the long job")
        os.kill(follower, signal.SIGKILL)
        killed_at = time.monotonic()
        final = fake.wait_for(lambda: fake.final("killed"), 120, "the failed job's result")
        assert final["error"].startswith("E_PARALLEL: rank 1 "), final
        assert final.get("stopPod") is True  # refresh_worker: RunPod replaces the worker
        assert worker.wait(timeout=120) == 1
        assert time.monotonic() - killed_at < 90
        assert "the worker exits (status 1)" in log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
        fake.close()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_the_followers_exit_when_rank_0_dies(tiny_root, tmp_path):
    fake = FakeRunPod()
    env = {
        **fake.env(),
        **WINDOWS,
        "MODEL_PATH": str(tiny_root),
        "VOLUME_PATH": str(tmp_path),
        "MULTITALK_DEVICE": "cpu",
        "MULTITALK_DTYPE": "fp32",
        "MULTITALK_GPUS": "2",
        "MULTITALK_PARALLEL_TIMEOUT_SECONDS": "60",
    }
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    others: list[int] = []
    try:
        fake.wait_for(lambda: fake.polled, 300, "the worker to ask for jobs")
        follower = int(re.search(r"rank 1 of 2 is process (\d+)", log_path.read_text()).group(1))
        others = [p for p in _children(worker.pid) if p != follower]  # the SDK's heartbeat, a resource tracker
        worker.send_signal(signal.SIGKILL)  # as the OOM killer would: no clean-up in rank 0
        worker.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(follower) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(follower), "rank 1 outlived rank 0"
        assert "rank 0 (process" in log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
        for pid in others:  # not this feature's: the RunPod SDK's heartbeat outlives a SIGKILLed worker
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        fake.close()


def test_the_number_of_processes_comes_from_multitalk_gpus():
    from multitalk_serve.engine import ConfigError
    from multitalk_serve.worker.config import WorkerConfig
    from multitalk_serve.worker.parallel import parallel_size

    cpu = {"device": "cpu", "s3": None}
    assert parallel_size(WorkerConfig(gpus="auto", **cpu)) == 1  # a CPU worker is one process unless told
    assert parallel_size(WorkerConfig(gpus="3", **cpu)) == 3  # on CPU (gloo), any number: for tests
    for wrong in ("0", "two"):
        with pytest.raises(ConfigError, match="MULTITALK_GPUS"):
            parallel_size(WorkerConfig(gpus=wrong, **cpu))


@pytest.fixture
def group(tmp_path):
    """Rank 0's group object without processes: only its handler wrappers are used."""
    from multitalk_serve.worker.config import WorkerConfig
    from multitalk_serve.worker.parallel import ParallelGroup

    group = ParallelGroup(2, WorkerConfig(device="cpu", s3=None))
    yield group
    group.close()


def _break_later(group, delay: float) -> None:
    import threading

    def later():
        time.sleep(delay)
        group.reason = "rank 1 (process 1) exited with code -9"
        group.broken.set()  # as the watch does (without its exit of this process)

    threading.Thread(target=later, daemon=True).start()


def test_a_job_stuck_in_a_collective_fails_at_once_when_the_group_breaks(group):
    """NCCL: a dead peer's collective would keep the job's thread waiting; the handler answers anyway."""
    import asyncio

    async def stuck(job):
        await asyncio.sleep(3600)

    async def items(job):
        yield {"type": "progress"}
        await asyncio.sleep(3600)

    async def main():
        _break_later(group, 0.3)
        started = time.monotonic()
        answer = await group.wrap(stuck)({"id": "j"})
        assert answer["error"].startswith("E_PARALLEL: rank 1 (process 1) exited with code -9")
        assert answer["refresh_worker"] is True and time.monotonic() - started < 5
        streamed = [item async for item in group.wrap_stream(items)({"id": "j"})]  # broken already: refused
        assert streamed == [answer]
        group.broken.clear()
        _break_later(group, 0.3)
        streamed = [item async for item in group.wrap_stream(items)({"id": "j"})]
        assert streamed[0] == {"type": "progress"} and streamed[1]["error"].startswith("E_PARALLEL")
        assert group.active == 0

    asyncio.run(main())


def test_a_stop_of_the_job_reaches_the_worker_handler(group):
    import asyncio

    stopped = []

    async def handler(job):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append(job["id"])  # the worker's handler sets its cancel flag here
            raise

    async def main():
        task = asyncio.ensure_future(group.wrap(handler)({"id": "j"}))
        await asyncio.sleep(0.3)
        task.cancel()  # RunPod's stop
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert stopped == ["j"] and group.active == 0
