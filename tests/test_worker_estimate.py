"""Time and cost before a job starts (worker/estimate.py): the timing history on the volume, the estimate and its
scaling, the refusal of a job that cannot finish within its execution timeout (E_TOO_LONG), where the timeout comes
from, the execution_timeout_s input and the result's gpu_seconds / estimate. No model: plain values and a
JobPlan-like namespace."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from multitalk_serve.worker import estimate as est
from multitalk_serve.worker.config import WorkerConfig
from multitalk_serve.worker.errors import CODES, WorkerError
from multitalk_serve.worker.estimate import (
    TimingHistory,
    TimingKey,
    check_env,
    check_fits,
    estimate_job,
    execution_timeout_of,
    execution_timeout_with_source,
    gpu_seconds,
    key_for,
    price_per_second,
)
from multitalk_serve.worker.handler import Worker
from multitalk_serve.worker.response import EstimateInfo, JobOutput
from multitalk_serve.worker.schema import JobInput

H100 = "NVIDIA H100 80GB HBM3"


def plan(**changes) -> SimpleNamespace:
    """A JobPlan-like object: a 10-minute 480p MultiTalk job at quality settings."""
    values = dict(
        windows=190,
        frames=10641,
        height=480,
        width=832,
        steps=40,
        passes=3,
        frames_per_clip=81,
        model="multitalk",
        speakers=1,
        resume_from=0,
        speed_lora=False,
        cache_threshold=0.0,
    )
    return SimpleNamespace(**{**values, **changes})


def key(gpu: str = H100, memory_plan: str = "bf16", **changes) -> TimingKey:
    return key_for(plan(**changes), gpu, memory_plan)


# --- the history ------------------------------------------------------------------------------------------------
def test_a_job_s_windows_are_kept_across_instances_on_the_volume(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    history = TimingHistory.on_volume(volume)
    assert history.path == volume / "multitalk-state" / "timings.json"
    k = key()
    assert history.per_window(k) is None
    history.record(k, [95.0, 60.0, 62.0, 58.0, 61.0])
    # the first window is not in the mean (it may include one-time work): the median of the others is
    assert history.per_window(k) == 60.5
    assert history.entry(k)["first_extra_s"] == pytest.approx(34.5)  # kept apart: how much longer it took

    other = TimingHistory.on_volume(volume)  # another worker on the same volume
    assert other.per_window(k) == 60.5
    other.record(k, [90.0, 70.5, 70.5])  # a second job moves the mean by ALPHA of the difference
    assert history.per_window(k) == pytest.approx(60.5 + est.ALPHA * 10.0)  # the first instance re-reads the file
    entry = history.entry(k)
    assert (entry["jobs"], entry["windows"], entry["first_samples"]) == (2, 6, 2)
    assert json.loads(history.path.read_text())["version"] == est.HISTORY_VERSION
    assert [p.name for p in history.path.parent.iterdir()] == ["timings.json"]  # no temporary file left


def test_without_a_volume_the_history_is_in_memory():
    history = TimingHistory.on_volume(Path("/nonexistent-volume"))
    assert history.path is None
    history.record(key(), [9.0, 5.0, 5.0])
    assert history.per_window(key()) == 5.0


def test_one_window_jobs_a_cold_first_window_and_junk_values():
    history = TimingHistory(None)
    k = key()
    history.record(k, [30.0])  # one window and nothing to compare it with: nothing learnt
    assert history.entry(k) is None
    history.record(k, [600.0, 10.0, 10.0], first_is_cold=True)  # the worker's first job: compilation
    assert history.entry(k)["first_extra_s"] == 0.0 and history.entry(k)["first_samples"] == 0
    history.record(k, [14.0])  # a one-window job only tells how much longer a first window takes
    assert history.per_window(k) == 10.0 and history.entry(k)["first_extra_s"] == 4.0
    history.record(k, [float("nan"), -1.0, True, "x", 0.0])  # nothing usable: nothing changes
    assert history.entry(k)["jobs"] == 1


def test_at_most_max_keys_setups_are_kept_the_oldest_dropped():
    clock = iter(range(100))
    history = TimingHistory(None, max_keys=3, clock=lambda: next(clock))
    keys = [key(steps=s) for s in (10, 20, 30, 40, 50)]
    for k in keys:
        history.record(k, [2.0, 1.0])
    history.record(keys[2], [2.0, 1.0])  # used again: now the newest
    history.record(key(steps=60), [2.0, 1.0])
    assert {k.steps for k in keys if history.entry(k)} == {30, 50}
    assert history.entry(key(steps=60)) is not None


def test_a_corrupt_file_is_logged_and_rewritten_never_an_error(tmp_path, caplog):
    path = tmp_path / "timings.json"
    path.write_text('{"version": 1, "keys": {"trunc')
    history = TimingHistory(path)
    with caplog.at_level(logging.WARNING, logger="multitalk_serve.worker.estimate"):
        assert history.per_window(key()) is None
    assert "corrupt" in caplog.text
    history.record(key(), [3.0, 2.0])
    assert json.loads(path.read_text())["keys"][key().id]["per_window_s"] == 2.0

    # one bad entry (hand edit, older format) costs that entry only
    data = json.loads(path.read_text())
    data["keys"]["junk"] = {"key": {"gpu": 1}, "per_window_s": "fast"}
    data["keys"][key(steps=8).id] = {**data["keys"][key().id], "key": {**data["keys"][key().id]["key"], "steps": 8}}
    data["keys"][key(steps=8).id]["per_window_s"] = -3.0
    path.write_text(json.dumps(data))
    assert TimingHistory(path).per_window(key()) == 2.0
    assert TimingHistory(path).per_window(key(steps=8)) is None

    for garbage in (b"\xff\xfe\x00", b"[1, 2]", b"null", b""):
        path.write_bytes(garbage)
        assert TimingHistory(path).per_window(key()) is None


def test_an_unreadable_or_unwritable_place_keeps_the_history_in_memory(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    history = TimingHistory(tmp_path / "file" / "timings.json")  # its folder cannot be made (read-only alike)
    with caplog.at_level(logging.WARNING, logger="multitalk_serve.worker.estimate"):
        history.record(key(), [3.0, 2.0])
    assert history.per_window(key()) == 2.0 and "not saved" in caplog.text

    folder = tmp_path / "dir.json"
    folder.mkdir()
    history = TimingHistory(folder)  # a path that cannot be read as a file
    history.record(key(), [3.0, 2.0])
    assert history.per_window(key()) == 2.0


def test_a_full_disk_leaves_the_old_file_whole_and_no_temporary_file(tmp_path, monkeypatch, caplog):
    path = tmp_path / "timings.json"
    history = TimingHistory(path)
    history.record(key(), [3.0, 2.0])
    before = path.read_text()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(est.os, "fsync", full)
    with caplog.at_level(logging.WARNING, logger="multitalk_serve.worker.estimate"):
        history.record(key(), [3.0, 12.0])  # never raises
    assert "No space left" in caplog.text
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["timings.json"]
    assert history.per_window(key()) == pytest.approx(2.0 + est.ALPHA * 10.0)  # this worker's copy is newer
    assert TimingHistory(path).per_window(key()) == 2.0  # others read the old file, whole
    monkeypatch.undo()
    history.record(key(), [3.0, 2.0])  # space again: the next job saves everything
    assert TimingHistory(path).per_window(key()) == history.per_window(key()) and history.entry(key())["jobs"] == 3
    monkeypatch.setattr(est.os, "fsync", full)

    def boom(*args, **kwargs):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(est.json, "dump", boom)  # whatever goes wrong in the bookkeeping, the job goes on
    history.record(key(), [3.0, 12.0])


def test_two_workers_writing_at_once_never_corrupt_the_file(tmp_path):
    path = tmp_path / "timings.json"
    errors: list[str] = []
    stop = threading.Event()

    def writer(gpu: str) -> None:
        history = TimingHistory(path)
        for i in range(40):
            history.record(key(gpu=gpu, steps=1 + i % 5), [2.0, 1.0 + i])

    def reader() -> None:
        while not stop.is_set():
            try:
                if path.exists():
                    json.loads(path.read_text())
            except ValueError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=writer, args=(g,)) for g in ("A", "B")]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    keys = json.loads(path.read_text())["keys"]
    assert keys and all(v["per_window_s"] > 0 for v in keys.values())  # last writer wins: whole entries only
    assert [p.name for p in tmp_path.iterdir()] == ["timings.json"]


# --- the estimate -----------------------------------------------------------------------------------------------
def test_an_exact_estimate_counts_resumed_windows_as_done(tmp_path):
    history = TimingHistory(None)
    history.record(key(), [70.0, 60.0, 60.0])
    estimate = estimate_job(history, plan(resume_from=40), key(), env={})
    overhead = est.overhead_s(10641)
    assert (estimate.windows, estimate.windows_left, estimate.per_window_s) == (190, 150, 60.0)
    assert estimate.seconds == pytest.approx(150 * 60 + 10 + overhead)
    assert estimate.min_seconds == pytest.approx(150 * 60 + overhead)  # a refusal leaves out the first window's extra
    assert estimate.cost_usd == pytest.approx(estimate.seconds * 0.00116)
    assert not estimate.basis.scaled and estimate.basis.windows == 2 and estimate.basis.jobs == 1
    info = EstimateInfo(**estimate.as_dict())
    assert info.scaled is False and info.samples == 2 and "same settings" in info.basis and H100 in info.basis
    everything_done = estimate_job(history, plan(resume_from=190), key(), env={})
    assert everything_done.windows_left == 0 and everything_done.seconds == pytest.approx(overhead)


def test_without_history_on_this_gpu_there_is_no_estimate_and_no_refusal():
    history = TimingHistory(None)
    history.record(key(gpu="NVIDIA A100-SXM4-80GB"), [70.0, 60.0, 60.0])
    assert estimate_job(history, plan(), key(), env={}) is None  # another GPU says nothing about this one
    history.record(key(memory_plan="fp8+group-offload"), [70.0, 60.0, 60.0])
    assert estimate_job(history, plan(), key(), env={}) is None  # nor another memory plan
    history.record(key(model="infinitetalk-single"), [70.0, 60.0, 60.0])
    history.record(key(speed_lora=True), [70.0, 60.0, 60.0])
    history.record(key(cache_threshold=0.2), [70.0, 60.0, 60.0])
    assert estimate_job(history, plan(), key(), env={}) is None  # nor another model, speed LoRA or step caching
    check_fits(None, 1.0, 1000.0)  # nothing to go on: never refused
    check_fits(estimate_job(history, plan(), key(speed_lora=True), env={}), None, 1000.0)  # no timeout: same


def test_scaling_from_the_nearest_setup_by_work_per_window():
    history = TimingHistory(None)
    history.record(key(), [70.0, 60.0, 60.0])  # 480p, 40 steps x 3 passes
    history.record(key(steps=8, passes=2), [9.0, 4.0, 4.0])
    # 720p with 4 steps x 2 passes: nearest in work is the 8-step one
    job = plan(height=720, width=1280, steps=4, passes=2)
    estimate = estimate_job(history, job, key_for(job, H100, "bf16"), env={})
    tokens = (21 * 45 * 80) / (21 * 30 * 52)
    assert estimate.basis.scaled and estimate.basis.key.steps == 8
    assert estimate.basis.ratio == pytest.approx(tokens * 0.5)
    assert estimate.per_window_s == pytest.approx(4.0 * tokens * 0.5)
    # the least it can take: every part of the window scaled as little as it can (a part that does not scale)
    assert estimate.min_seconds == pytest.approx(190 * 4.0 * 1.0 + est.overhead_s(10641))  # more tokens, half the steps
    info = estimate.as_dict()
    assert info["scaled"] and "scaled x" in info["basis"] and "8 steps x 2 passes" in info["basis"]

    # a smaller size: attention may shrink quadratically, so the least is the square of the token ratio
    small = plan(height=240, width=416)
    estimate = estimate_job(history, small, key_for(small, H100, "bf16"), env={})
    assert estimate.basis.key.steps == 8  # nearer in work (x1.9) than the 40-step setup (x0.25)
    history = TimingHistory(None)
    history.record(key(), [70.0, 60.0, 60.0])
    estimate = estimate_job(history, small, key_for(small, H100, "bf16"), env={})
    r = (21 * 15 * 26) / (21 * 30 * 52)
    assert estimate.per_window_s == pytest.approx(60.0 * r)
    assert estimate.min_seconds == pytest.approx(190 * 60.0 * r * r + est.overhead_s(10641))


def test_a_scaled_estimate_refuses_only_on_the_least_the_job_can_take():
    history = TimingHistory(None)
    history.record(key(steps=10), [12.0, 10.0, 10.0])
    job = plan(steps=40)  # 4x the forwards: a guess of 40 s per window, but at least the measured 10 s
    estimate = estimate_job(history, job, key_for(job, H100, "bf16"), env={})
    assert estimate.per_window_s == pytest.approx(40.0) and estimate.min_seconds == pytest.approx(
        1900 + est.overhead_s(10641)
    )
    check_fits(estimate, 3600.0, 0.0)  # the guess (7600 s) is over an hour, the least (about 1930 s) is not
    with pytest.raises(WorkerError) as exc:
        check_fits(estimate, 1800.0, 0.0)
    assert "at least" in exc.value.message


def test_the_refusal_names_the_estimate_and_what_to_do():
    history = TimingHistory(None)
    history.record(key(), [90.0, 60.0, 61.0, 59.0])
    estimate = estimate_job(history, plan(), key(), env={})
    with pytest.raises(WorkerError) as exc:
        check_fits(estimate, 600.0, 12.0, source="policy.executionTimeout", frames=10641)
    error = exc.value
    assert error.code == "E_TOO_LONG" and "E_TOO_LONG" in CODES
    assert error.payload()["error"].startswith("E_TOO_LONG: this job cannot finish within its execution timeout")
    message = error.message
    for part in (
        "600 s (policy.executionTimeout)",
        "12 s have passed",
        "190 window(s) x 60.0 s per window",
        "measured on NVIDIA H100 80GB HBM3 over 1 job(s), 3 window(s), same settings",
        "about 11474 s (191 min)",
        "about $13.31 at $0.00116/s (RunPod serverless flex price)",
        "refused before sampling",
        "raise policy.executionTimeout to at least 12120000 ms (or execution_timeout_s to 12120)",
        "send shorter audio (about 18 s of video fits)",
        "faster preset",
    ):
        assert part in message, (part, message)
    assert "480p" not in message.split("To run it")[1] and "job_key" not in message

    resumed = estimate_job(history, plan(resume_from=100, height=720, width=1280), key(height=720, width=1280), {})
    with pytest.raises(WorkerError) as exc:
        check_fits(resumed, 600.0, 0.0)
    assert "use 480p" in exc.value.message and "100 window(s) made by an earlier run are kept" in exc.value.message
    assert "90 window(s) (of 190; 100 done by an earlier run)" in exc.value.message


def test_the_margin_decides_at_the_edge():
    history = TimingHistory(None)
    history.record(key(), [1.0, 1.0, 1.0])
    estimate = estimate_job(history, plan(windows=10, frames=560), key(), env={})
    need = estimate.min_seconds  # 10 windows + overhead
    timeout = (need + 5.0) / (1 - est.MARGIN)
    check_fits(estimate, timeout, 5.0)  # exactly at the limit: fits
    with pytest.raises(WorkerError):
        check_fits(estimate, timeout, 5.1)  # elapsed time counts against it
    with pytest.raises(WorkerError):
        check_fits(estimate, need + 5.0, 5.0)  # within the timeout but not within the margin
    check_fits(estimate_job(history, plan(windows=10, resume_from=10), key(), env={}), 1.0, 100.0)  # nothing left


# --- the timeout and the price ----------------------------------------------------------------------------------
def test_where_the_timeout_comes_from():
    env = {"EXECUTION_TIMEOUT_SECONDS": "900"}
    job = {"id": "j", "input": {}, "policy": {"executionTimeout": 1_800_000}}
    assert execution_timeout_with_source(job, 1200.0, env) == (1800.0, "policy.executionTimeout")
    assert execution_timeout_with_source({"id": "j"}, 1200.0, env) == (1200.0, "execution_timeout_s")
    assert execution_timeout_with_source({"id": "j"}, None, env) == (900.0, "EXECUTION_TIMEOUT_SECONDS")
    assert execution_timeout_of({"id": "j"}, None, {}) is None
    assert execution_timeout_of({"policy": {"ttl": 60000}}, None, {}) is None
    for bad in ("600000", None, True, -5, 0, float("nan")):  # RunPod's own field, if odd: ignored, never an error
        assert execution_timeout_of({"policy": {"executionTimeout": bad}}, 30.0, {}) == 30.0
    assert execution_timeout_of({"policy": "x"}, None, env) == 900.0
    for bad in ("ten minutes", "0", "-1", "inf", "nan"):
        assert execution_timeout_of({}, None, {"EXECUTION_TIMEOUT_SECONDS": bad}) is None  # logged, ignored
    assert execution_timeout_of({}, None, {"EXECUTION_TIMEOUT_SECONDS": ""}) is None


def test_bad_settings_fail_the_start():
    check_env({"GPU_PRICE_PER_HOUR": "2.5", "EXECUTION_TIMEOUT_SECONDS": "600"})
    check_env({"GPU_PRICE_PER_HOUR": "0"})  # a free GPU is fine
    check_env({})
    with pytest.raises(ValueError, match="GPU_PRICE_PER_HOUR must be a number, 0 or more, got '2,5'"):
        check_env({"GPU_PRICE_PER_HOUR": "2,5"})
    with pytest.raises(ValueError, match="EXECUTION_TIMEOUT_SECONDS must be a positive number, got '0'"):
        check_env({"EXECUTION_TIMEOUT_SECONDS": "0"})


@pytest.mark.parametrize(
    ("gpu", "per_second"),
    [
        ("NVIDIA H100 80GB HBM3", 0.00116),
        ("NVIDIA H100 PCIe", 0.00116),
        ("NVIDIA H200", 0.00155),
        ("NVIDIA B200", 0.00240),
        ("NVIDIA A100-SXM4-80GB", 0.00076),
        ("NVIDIA L40S", 0.00053),
        ("NVIDIA RTX 6000 Ada Generation", 0.00053),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 0.00111),
        ("NVIDIA GeForce RTX 4090", 0.00031),
        ("cpu", None),
        ("NVIDIA GeForce GTX 1080", None),
    ],
)
def test_prices_per_gpu(gpu, per_second):
    price, source = price_per_second(gpu, {})
    assert price == per_second and (source is None) == (per_second is None)
    assert price_per_second(gpu, {"GPU_PRICE_PER_HOUR": "3.6"}) == (pytest.approx(0.001), "GPU_PRICE_PER_HOUR")


def test_no_price_no_cost():
    history = TimingHistory(None)
    history.record(key(gpu="cpu"), [2.0, 1.0, 1.0])
    estimate = estimate_job(history, plan(), key(gpu="cpu"), env={})
    assert estimate.cost_usd is None and estimate.as_dict()["cost_usd"] is None
    assert "$" not in estimate.describe()
    priced = estimate_job(history, plan(), key(gpu="cpu"), env={"GPU_PRICE_PER_HOUR": "36"})
    assert priced.cost_usd == pytest.approx(priced.seconds * 0.01)


def test_gpu_seconds_and_the_result_fields():
    assert gpu_seconds(10.0, now=72.34567) == 62.346
    assert gpu_seconds(10.0, now=5.0) == 0.0
    assert est.FPS == __import__("multitalk_serve.engine", fromlist=["FPS"]).FPS
    assert {"gpu_seconds", "estimate"} <= set(JobOutput.model_fields)
    assert JobOutput.model_fields["gpu_seconds"].annotation == float | None


# --- the input field --------------------------------------------------------------------------------------------
A1, IMG = "https://example.com/a.wav", "https://example.com/face.png"


def test_execution_timeout_s_is_an_optional_positive_number():
    assert JobInput.model_validate({"image": IMG, "audio": A1}).execution_timeout_s is None
    assert JobInput.model_validate({"image": IMG, "audio": A1, "execution_timeout_s": 1800}).execution_timeout_s == 1800
    assert JobInput.model_validate({"image": IMG, "audio": A1, "execution_timeout_s": 0.5}).execution_timeout_s == 0.5


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0, "greater than 0"),
        (-60, "greater than 0"),
        ("600", "valid number"),
        (True, "valid number"),
        (8 * 24 * 3600, "less than or equal to 604800"),
        ([600], "valid number"),
    ],
)
def test_a_bad_execution_timeout_is_refused_naming_the_field(value, why):
    pipeline = SimpleNamespace(device=torch.device("cpu"), adapters=["multitalk"], speed_lora=None)
    worker = Worker(pipeline, WorkerConfig(s3=None, volume_path=Path("/nonexistent")))
    result = worker.run({"id": "t", "input": {"image": IMG, "audio": A1, "execution_timeout_s": value}})
    assert result["error"].startswith("E_INPUT: execution_timeout_s: "), result
    assert why in result["error"]


def test_the_environment_default_is_not_read_at_import(monkeypatch):
    monkeypatch.setenv("EXECUTION_TIMEOUT_SECONDS", "321")
    monkeypatch.setenv("GPU_PRICE_PER_HOUR", "7.2")
    assert execution_timeout_of({}, None) == 321.0  # os.environ when no env is given
    assert price_per_second("cpu") == (pytest.approx(0.002), "GPU_PRICE_PER_HOUR")
    assert os.environ["EXECUTION_TIMEOUT_SECONDS"] == "321"


# --- one job through the handler's callbacks --------------------------------------------------------------------
def test_job_timer_learns_from_one_job_and_refuses_the_next_that_cannot_fit(tmp_path):
    now = [100.0]
    history = TimingHistory(tmp_path / "timings.json")

    def timer(timeout, cold=False):
        return est.JobTimer(
            history, H100, "bf16", timeout, started=now[0], source="policy.executionTimeout", cold=cold, env={},
            clock=lambda: now[0],
        )  # fmt: skip

    first = timer(600.0, cold=True)
    first.on_plan(plan(windows=4, frames=200))  # nothing measured yet: no estimate, never refused
    for index, seconds in enumerate([40.0, 20.0, 22.0, 18.0]):
        first.on_segment(SimpleNamespace(index=index, seconds=seconds, resumed=False))
    now[0] += 120.0
    result = first.result()
    assert result == {"gpu_seconds": 120.0}  # no estimate to report
    first.record()  # once only
    assert history.entry(key())["jobs"] == 1 and history.per_window(key()) == 20.0
    assert history.entry(key())["first_samples"] == 0  # the worker's first job: its first window is not learnt

    second = timer(600.0)
    now[0] += 30.0  # downloads, audio, conditioning
    second.on_plan(plan(windows=20, frames=1000, resume_from=2))  # 18 x 20 s + 90 s < 570 s - 30 s
    second.on_segment(SimpleNamespace(index=1, seconds=99.0, resumed=True))  # an earlier run's: not this GPU's time
    second.on_segment(SimpleNamespace(index=2, seconds=30.0, resumed=False))
    second.on_segment(SimpleNamespace(index=3, seconds=26.0, resumed=False))
    now[0] += 400.0
    result = second.result()
    assert result["gpu_seconds"] == 430.0
    info = EstimateInfo(**result["estimate"])
    assert (info.windows, info.windows_left, info.per_window_s, info.scaled) == (20, 18, 20.0, False)
    assert history.per_window(key()) == pytest.approx(20.0 + est.ALPHA * 6.0)
    assert history.entry(key())["first_extra_s"] == pytest.approx(4.0)  # 30 s against this job's other window, 26 s

    third = timer(600.0)
    now[0] += 30.0
    with pytest.raises(WorkerError) as exc:
        third.on_plan(plan(windows=40, frames=2000))
    assert exc.value.code == "E_TOO_LONG" and "(policy.executionTimeout)" in exc.value.message
    third.record()  # nothing ran: nothing learnt
    assert history.entry(key())["jobs"] == 2
