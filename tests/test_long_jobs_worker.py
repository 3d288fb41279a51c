"""Long jobs through the worker: segments streamed while the job runs (the local API's /stream and the production
job loop), the job folder on the volume under the job's key, one writer per key, and a worker killed with SIGKILL
whose job, run again, continues from its last window and gives the same video as an uninterrupted run."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from runpod.serverless.modules.rp_fastapi import WorkerAPI

from fake_runpod import FakeRunPod, start_worker
from media import write_audio
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.handler import Worker
from multitalk_serve.worker.jobstate import STATE_DIR, JobFolders, JobLock
from test_worker_api import png_b64

# 9-frame windows with 1 motion frame: 8 new frames a window, so a 2.2 s voice is 7 windows
WINDOWS = {"MULTITALK_WINDOW_FRAMES": "9", "MULTITALK_MOTION_FRAMES": "1"}
FAST = {"width": 64, "height": 64, "sampling_steps": 1, "seed": 5, "prompt": "a person talks"}


def frames_of(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("voice")
    return base64.b64encode(write_audio(tmp / "v.wav", 2.2).read_bytes()).decode()


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("volume")


@pytest.fixture(scope="module")
def worker(tiny_pipeline, tiny_root, volume):
    config = WorkerConfig(
        model_path=tiny_root,
        volume_path=volume,
        s3=None,
        progress_interval_s=0.0,
        window_frames=9,
        motion_frames=1,
        job_lock_wait_s=1.0,
    )
    return Worker(tiny_pipeline, config, load_seconds=1.0)


def test_the_local_api_streams_every_window_then_the_result(worker, voice, volume):
    client = TestClient(WorkerAPI({"handler": worker.handle_stream, "return_aggregate_stream": True}).rp_app)
    job = client.post("/run", json={"input": {"image": png_b64(), "audio": [voice], **FAST}}).json()
    reply = client.post(f"/stream/{job['id']}").json()
    items = [chunk["output"] for chunk in reply["stream"]]
    kinds = [item.get("type") for item in items]
    assert kinds[-1] == "result" and set(kinds) == {"progress", "segment", "result"}, kinds
    segments = [item for item in items if item["type"] == "segment"]
    assert [s["index"] for s in segments] == list(range(7)) and all(s["total"] == 7 for s in segments)
    assert all(s["format"] == "mpegts" and Path(s["path"]).is_file() for s in segments)
    assert [s["start_s"] for s in segments][:3] == [0.0, 0.36, 0.68]
    playlist = Path(segments[-1]["playlist_path"]).read_text()
    assert playlist.count("#EXTINF") == 7 and "#EXT-X-ENDLIST" in playlist
    result = items[-1]
    video = Path(result["video_path"])
    joined = np.concatenate([frames_of(s["path"]) for s in segments])
    assert np.array_equal(frames_of(video), joined)  # the final file is the segments, not encoded again
    assert result["video"]["frames"] == 55
    assert not any((volume / STATE_DIR).iterdir())  # stored: the job's folder is gone


def test_a_second_run_of_a_running_job_is_refused_after_waiting(worker, voice, volume):
    folder = volume / STATE_DIR / "busy-key"
    folder.mkdir(parents=True, exist_ok=True)
    holder = JobLock(folder)
    holder.acquire(0)
    try:
        started = time.monotonic()
        out = worker.run({"id": "j2", "input": {"image": png_b64(), "audio": [voice], "job_key": "busy-key", **FAST}})
        assert out["error"].startswith("E_BUSY: job_key busy-key: another run of this job is in progress")
        assert 0.9 < time.monotonic() - started < 10
    finally:
        holder.release()


def test_a_lock_left_by_a_dead_process_or_not_refreshed_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "lock").write_text(f'{{"host": "{JobLock(tmp_path).owner["host"]}", "pid": {dead.pid}}}')
    lock = JobLock(tmp_path)
    lock.acquire(0)  # its owner's process is gone: taken at once
    lock.release()
    assert not (tmp_path / "lock").exists()
    (tmp_path / "lock").write_text('{"host": "another-machine", "pid": 1}')
    os.utime(tmp_path / "lock", (time.time() - 600, time.time() - 600))
    JobLock(tmp_path, stale_s=60).acquire(0)  # not refreshed for 10 min: its worker died
    with pytest.raises(Exception, match=r"E_BUSY|another run"):
        JobLock(tmp_path).acquire(0.2)


def test_two_takers_of_one_lock_never_both_win(tmp_path):
    winners, barrier = [], threading.Barrier(8)

    def take():
        barrier.wait()
        try:
            JobLock(tmp_path, heartbeat_s=100).acquire(0)
            winners.append(1)
        except Exception:
            pass

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_old_job_folders_are_swept(tmp_path):
    folders = JobFolders(tmp_path, ttl_s=3600, wait_s=1)
    old, new = tmp_path / STATE_DIR / "old", tmp_path / STATE_DIR / "new"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"x")
    os.utime(old / "state.pt", (time.time() - 7200, time.time() - 7200))
    assert folders.sweep() == 1 and not old.exists() and new.exists()


def test_a_worker_killed_mid_job_is_continued_by_the_next_with_the_same_video(tiny_root, voice, tmp_path):
    """The production job loop in stream mode: worker A dies (SIGKILL) after some windows; RunPod gives the job to
    worker B, which continues from A's last window; the video equals the same request run without a break."""
    fake = FakeRunPod()
    volume = tmp_path / "volume"
    volume.mkdir()
    env = {
        **fake.env(),
        **WINDOWS,
        "MODEL_PATH": str(tiny_root),
        "VOLUME_PATH": str(volume),
        "MULTITALK_DTYPE": "fp32",
        "MULTITALK_STREAM": "1",
        "PROGRESS_INTERVAL_SECONDS": "0",
    }
    # crf 0: lossless, so the decoded frames are the generated frames whatever the encoder decides (x264's bytes
    # for the same pictures were seen to differ between jobs of one long-lived worker process)
    job = {"input": {"image": png_b64(), "audio": [voice], **FAST, "output": {"format": "volume", "crf": 0}}}
    workers = []
    try:
        first = start_worker(env, tmp_path / "a.log")
        workers.append(first)
        fake.jobs.put({"id": "long-job", **job})
        state = volume / STATE_DIR / "long-job" / "state.pt"

        def windows_streamed() -> int:
            return sum(
                1
                for p in fake.posts_for("long-job")
                if p["kind"] == "stream" and (p["body"].get("output") or {}).get("type") == "segment"
            )

        fake.wait_for(lambda: windows_streamed() >= 3 and state.is_file(), 300, "three windows of worker A")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        done_by_a = windows_streamed()
        assert fake.final("long-job") is None and done_by_a < 7
        # callers polling /status see the latest segment in the progress bodies
        progress = [p["body"] for p in fake.posts_for("long-job") if p["kind"] == "done"]
        assert any((b.get("output") or {}).get("segment", {}).get("type") == "segment" for b in progress), progress[-1]

        second = start_worker(env, tmp_path / "b.log")
        workers.append(second)
        fake.jobs.put({"id": "long-job", **job})  # RunPod's retry: the same job, the same id
        final = fake.wait_for(lambda: fake.final("long-job"), 300, "worker B's result")
        output = final["output"]
        assert isinstance(output, list) and output[-1]["type"] == "result", str(final)[:2000]
        result = output[-1]
        assert any("resumed after window" in w for w in result["warnings"]), result["warnings"]
        resumed = frames_of(result["video_path"])

        fake.jobs.put({"id": "same-request-no-break", **job})
        whole = fake.wait_for(lambda: fake.final("same-request-no-break"), 300, "the uninterrupted run")["output"]
        assert not any("resumed" in w for w in whole[-1]["warnings"])
        assert np.array_equal(resumed, frames_of(whole[-1]["video_path"]))
        assert len(resumed) == 55
        assert not (volume / STATE_DIR / "long-job").exists()  # finished: its state is gone
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        fake.close()


def test_a_bucket_failing_mid_stream_never_fails_the_job(worker, tmp_path):
    """Every segment upload fails (the bucket is down): the items say so, the segments stay on the worker, and the
    job completes with the video on the volume (the final upload's fallback)."""
    short = base64.b64encode(write_audio(tmp_path / "s.wav", 1.0).read_bytes()).decode()
    s3 = {"endpointUrl": "http://127.0.0.1:9", "accessId": "a", "accessSecret": "b", "bucketName": "down"}
    items = []
    out = worker.run(
        {"id": "down-bucket", "s3Config": s3, "input": {"image": png_b64(), "audio": [short], **FAST}},
        emit=items.append,
    )
    assert "error" not in out, out
    segments = [i for i in items if i["type"] == "segment"]
    assert len(segments) == 3 and all("note" in s and "url" not in s for s in segments), segments
    assert Path(out["video_path"]).is_file() and out["video"]["frames"] == 25
    assert any("segments were not delivered" in w for w in out["warnings"]), out["warnings"]
