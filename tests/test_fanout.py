"""The client's fan-out (examples/fanout.py): the audio split at pauses, the parts' MP4s joined (video packets copied,
the input audio as the soundtrack), per-part retry; and end to end against the fake RunPod with several real worker
processes on loopback, one of them killed with SIGKILL mid-way."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from fake_runpod import FakeRunPod, start_worker
from multitalk_serve.engine.pipeline.video import Mp4Writer
from test_worker_api import png_b64

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import fanout
from client import main

RATE = fanout.SAMPLE_RATE


def speechlike(layout: list[tuple[str, float]], seed: int = 0, rate: int = RATE) -> tuple[np.ndarray, list]:
    """Bursts of a syllable-modulated voice (``("talk", s)``, with 60 ms dips inside them, as stop closures) and
    pauses (``("pause", s)``, faint noise 55 dB down). Returns the wave and the talk intervals in seconds."""
    rng = np.random.default_rng(seed)
    parts, talks, t = [], [], 0.0
    for kind, seconds in layout:
        n = int(seconds * rate)
        if kind == "talk":
            time_ = np.arange(n) / rate
            envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.5 * time_)  # syllables
            for dip in np.arange(0.37, seconds - 0.1, 0.61):  # closures: short near-silences inside speech
                envelope[int(dip * rate) : int((dip + 0.06) * rate)] = 0.002
            pitch = 2 * np.pi * np.cumsum(rng.uniform(110, 170) * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * time_))) / rate
            voiced = sum(np.sin(k * pitch) / k for k in range(1, 16))  # a voice: harmonics of a moving pitch
            parts.append(0.25 * envelope * voiced + 0.01 * envelope * rng.standard_normal(n))
            talks.append((t, t + seconds))
        else:
            parts.append(0.3 * 10 ** (-55 / 20) * rng.standard_normal(n))
        t += seconds
    return np.concatenate(parts).astype(np.float32), talks


def assert_cuts_outside_speech(split: fanout.Split, talks: list, margin_s: float = 0.1) -> None:
    for cut in split.cuts[1:-1]:
        t = cut / fanout.FPS
        inside = [(a, b) for a, b in talks if a - margin_s < t < b + margin_s]
        assert not inside, f"cut at {t:.2f} s is inside speech {inside}"


def test_cuts_fall_in_pauses_near_equal_parts():
    layout = []
    rng = np.random.default_rng(1)
    for _ in range(30):  # ~60 s: phrases of 1-2.5 s, pauses of 0.35-0.8 s
        layout += [("talk", float(rng.uniform(1.0, 2.5))), ("pause", float(rng.uniform(0.35, 0.8)))]
    wave, talks = speechlike(layout)
    total = int(len(wave) / RATE * fanout.FPS)
    for parts in (2, 3, 4, 7):
        split = fanout.split_at_pauses([wave], parts=parts)
        assert split.cuts[0] == 0 and split.cuts[-1] == total and len(split.parts) == parts, split.cuts
        assert not split.notes
        assert_cuts_outside_speech(split, talks)
        step = total / parts
        for k, cut in enumerate(split.cuts[1:-1], 1):
            assert abs(cut - k * step) <= 0.25 * step  # near the target
        # the within-word dips (60 ms) are never taken for pauses
        assert all((b - a) * 40 >= 300 - 80 for a, b in split.pauses)
    split = fanout.split_at_pauses([wave], segment_seconds=10.0)
    assert len(split.parts) == round(total / 250) and not split.notes
    lengths = [(e - s) / fanout.FPS for s, e in split.parts]
    assert all(7.0 <= x <= 13.0 for x in lengths), lengths


def test_no_pause_near_a_target_extends_the_part_to_the_next_pause():
    wave, talks = speechlike([("talk", 2.0), ("pause", 0.5), ("talk", 14.0), ("pause", 0.5), ("talk", 3.0)])
    split = fanout.split_at_pauses([wave], parts=2)  # target 10 s: inside 14 s of speech
    assert_cuts_outside_speech(split, talks)
    assert len(split.parts) == 2 and abs(split.cuts[1] / 25 - 16.75) < 0.05, split.cuts
    assert split.notes and "extended to the next pause" in split.notes[0]
    split = fanout.split_at_pauses([wave[: int(16.4 * RATE)]], parts=3)  # no pause after a target: to the end
    assert len(split.cuts) == 2 and "runs to the end" in split.notes[0], (split.cuts, split.notes)


def test_two_speakers_are_cut_only_where_both_are_silent():
    # A talks while B pauses and the reverse; both silent only at 5.0-5.6 s and 11.2-11.8 s
    a, talks_a = speechlike([("talk", 2.0), ("pause", 3.6), ("talk", 2.0), ("pause", 4.2), ("talk", 4.0)], seed=2)
    b, talks_b = speechlike([("pause", 1.6), ("talk", 3.4), ("pause", 3.0), ("talk", 3.2), ("pause", 4.8)], seed=3)
    n = min(len(a), len(b))
    split = fanout.split_at_pauses([a[:n], b[:n]], parts=3)
    assert_cuts_outside_speech(split, talks_a + talks_b)
    assert [round(c / 25, 1) for c in split.cuts[1:-1]] == [5.3, 11.5], split.cuts
    silent = np.zeros(n, np.float32)  # a silent second speaker (digital zeros) changes nothing
    assert fanout.split_at_pauses([a[:n], silent], parts=3).cuts == fanout.split_at_pauses([a[:n]], parts=3).cuts


def test_parts_carry_their_audio_length_and_key():
    wave, _ = speechlike([("talk", 2.0), ("pause", 0.5), ("talk", 2.0), ("pause", 0.5), ("talk", 2.0)])
    tracks = fanout.arrange([wave, None], "add")
    split = fanout.split_at_pauses(tracks, parts=2)
    jobs = fanout.part_jobs({"image": "x", "prompt": "p"}, tracks, split, "k1")
    assert [j["job_key"] for j in jobs] == ["k1.001-of-002", "k1.002-of-002"]
    assert all(j["audio_type"] == "para" and len(j["audio"]) == 2 for j in jobs)
    for job, (start, end) in zip(jobs, split.parts, strict=True):
        assert job["num_frames"] == end - start
        got = fanout.decode_audio(fanout.base64.b64decode(job["audio"][0].split(",", 1)[1]))
        assert len(got) == (end - start) * 640
        assert np.abs(got - np.clip(tracks[0][start * 640 : end * 640], -1, 1)).max() < 1e-4  # 16-bit PCM
    assert fanout.fan_key({"image": "x"}, tracks, split) == fanout.fan_key(
        {"image": "x", "job_key": "z"}, tracks, split
    )
    with pytest.raises(ValueError, match="num_frames"):
        fanout.part_jobs({"num_frames": 10}, tracks, split, "k")


# --- joining -------------------------------------------------------------------------------------------------------
def make_part(path: Path, start: int, frames: int, sound48: np.ndarray, size=(48, 64), crf: int = 19) -> Path:
    """A part as a worker makes it: H.264 + its own slice of the audio as AAC (Mp4Writer)."""
    rng = np.random.default_rng(start)
    writer = Mp4Writer(path, size[1], size[0], crf=crf)
    pictures = np.clip(rng.integers(0, 255, (frames, *size, 3)) // 2 + (np.arange(frames) * 3)[:, None, None, None], 0,
                       255).astype(np.uint8)  # fmt: skip
    writer.write(pictures)
    writer.close(sound48[start * 1920 : (start + frames) * 1920])
    return path


def packets_of(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def sound_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])])


def test_join_copies_the_video_packets_and_muxes_the_input_audio(tmp_path):
    wave16, _ = speechlike([("talk", 3.0), ("pause", 0.6), ("talk", 2.5), ("pause", 0.5), ("talk", 2.2)], seed=4)
    sound48 = np.interp(np.arange(len(wave16) * 3) / 3, np.arange(len(wave16)), wave16).astype(np.float32)
    split = fanout.split_at_pauses([wave16], parts=3)
    total = split.total
    assert total == int(len(wave16) / RATE * 25)
    paths = [make_part(tmp_path / f"p{i}.mp4", s, e - s, sound48) for i, (s, e) in enumerate(split.parts)]
    info = fanout.join(paths, split.cuts, sound48, tmp_path / "joined.mp4")
    assert info == {"frames": total, "copied": True, "note": ""}
    joined = tmp_path / "joined.mp4"
    assert packets_of(joined) == [p for path in paths for p in packets_of(path)]  # copied, not encoded again
    assert np.array_equal(frames_of(joined), np.concatenate([frames_of(p) for p in paths]))
    with av.open(str(joined)) as c:
        v = c.streams.video[0]
        times = [f.time for f in c.decode(v)]
    assert len(times) == total and np.allclose(np.diff(times), 0.04) and abs(times[0]) < 1e-6
    audio = sound_of(joined)
    expected = sound48[: total * 1920]
    assert abs(len(audio) - len(expected)) < 1024  # the length of the video, to an AAC frame
    n = min(len(audio), len(expected))
    error = np.sqrt(np.mean((audio[:n] - expected[:n]) ** 2)) / np.sqrt(np.mean(expected[:n] ** 2))
    assert error < 0.1, error  # one AAC encode of the input, aligned (no gap or shift at the part boundaries)
    for cut in split.cuts[1:-1]:  # around each boundary, where per-part AAC would have its priming gap
        window = slice(cut * 1920 - 4800, cut * 1920 + 4800)
        assert np.sqrt(np.mean((audio[window] - expected[window]) ** 2)) < 0.02


def test_join_encodes_again_when_the_parts_differ(tmp_path):
    sound = np.zeros(48000 * 2, np.float32)
    paths = [make_part(tmp_path / "a.mp4", 0, 20, sound), make_part(tmp_path / "b.mp4", 20, 15, sound, size=(64, 64))]
    info = fanout.join(paths, [0, 20, 35], sound, tmp_path / "j.mp4")
    assert not info["copied"] and info["frames"] == 35 and "encoded again" in info["note"]
    assert frames_of(tmp_path / "j.mp4").shape == (35, 48, 64, 3)
    with pytest.raises(ValueError, match="15 frames, the part has 16"):
        fanout.join(paths, [0, 20, 36], sound, tmp_path / "k.mp4")


def test_a_video_source_is_cut_to_the_frames_the_worker_would_show(tmp_path):
    """A 30 fps source, 3 s: the parts' pieces show, frame for frame, what the worker's VideoSource shows for the
    whole video at the same output frames (25 fps clock by timestamps), past the end the last frame (hold)."""
    from multitalk_serve.engine.pipeline.source import VideoSource

    source = tmp_path / "src.mp4"
    with av.open(str(source), "w") as c:
        v = c.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt, v.options = 64, 48, "yuv420p", {"crf": "0"}
        for k in range(90):
            picture = np.zeros((48, 64, 3), np.uint8)
            picture[:, :, 0], picture[:, : 2 * (k % 32), 1] = 2 * k, 200  # frame k: its own level and bar
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = k
            for packet in v.encode(frame):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
    cuts = [0, 20, 45, 80]  # 3.2 s: the last 5 frames are past the source's end
    pieces = fanout.cut_video(source, cuts, tmp_path / "cut", crf=0)
    whole = VideoSource(str(source))
    try:
        for piece, start, end in zip(pieces, cuts[:-1], cuts[1:], strict=True):
            got = frames_of(piece)
            assert len(got) == end - start
            for j, picture in enumerate(got):
                want = np.asarray(whole.image_at(start + j))
                assert np.abs(picture.astype(int) - want.astype(int)).mean() < 2.0, start + j
    finally:
        whole.close()
    with pytest.raises(ValueError, match="pingpong"):
        fanout.cut_video(source, cuts, tmp_path / "cut2", source_end="pingpong")


class MakingClient:
    """Completes every job at once with a part made here (``make_part``) of the job's ``num_frames``."""

    def __init__(self, folder: Path, sound48: np.ndarray):
        self.folder, self.sound48, self.sent = folder, sound48, []

    def submit(self, job):
        self.sent.append(job)
        return f"j{len(self.sent) - 1}"

    def status(self, job_id):
        return {"status": "COMPLETED", "output": {"job": int(job_id[1:])}}

    def cancel(self, job_id):
        pass

    def save_video(self, output, path):
        job = self.sent[output["job"]]
        start = sum(j["num_frames"] for j in self.sent[: output["job"]])
        return make_part(path, start, job["num_frames"], self.sound48)


def test_fan_out_with_a_video_source_sends_each_part_its_piece(tmp_path):
    wave, _ = speechlike([("talk", 1.5), ("pause", 0.5), ("talk", 1.5), ("pause", 0.5), ("talk", 1.0)], seed=5)
    audio = tmp_path / "a.wav"
    audio.write_bytes(fanout.wav_bytes(wave))
    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for k in range(150):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), k, np.uint8), format="rgb24")
            frame.pts = k
            for packet in v.encode(frame):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
    client = MakingClient(tmp_path, fanout.decode_audio(audio, fanout.AUDIO_RATE))
    summary = fanout.fan_out(client, {"video": str(video), "prompt": "p"}, [audio], tmp_path / "out.mp4", parts=2,
                             poll_s=0.01, log=lambda m: None)  # fmt: skip
    assert summary["parts"] == 2 and summary["frames"] == 125 and summary["copied"]
    starts = [0, client.sent[0]["num_frames"]]
    for job, start in zip(client.sent, starts, strict=True):
        piece = tmp_path / f"piece{start}.mp4"
        piece.write_bytes(fanout.base64.b64decode(job["video"].split(",", 1)[1]))
        levels = frames_of(piece)[:, 0, 0, 0].astype(int)
        assert len(levels) == job["num_frames"]
        assert np.abs(levels - np.arange(start, start + len(levels))).max() <= 2  # the source at the part's times
    assert len(frames_of(tmp_path / "out.mp4")) == 125


# --- retries -------------------------------------------------------------------------------------------------------
class ScriptedClient:
    """Answers /status from a script per submission: a list of status bodies, the last repeated."""

    def __init__(self, scripts: list[list[dict]], video: Path):
        self.scripts, self.video = scripts, video
        self.sent, self.cancelled, self.replies = [], [], {}

    def submit(self, job):
        job_id = f"j{len(self.sent)}"
        self.replies[job_id] = list(self.scripts[len(self.sent)])
        self.sent.append(job)
        return job_id

    def status(self, job_id):
        replies = self.replies[job_id]
        return replies.pop(0) if len(replies) > 1 else replies[0]

    def cancel(self, job_id):
        self.cancelled.append(job_id)

    def save_video(self, output, path):
        path.write_bytes(self.video.read_bytes())
        return path


def test_a_failed_or_lost_part_is_sent_again_with_its_key_and_a_final_error_stops_all(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"mp4")
    split = fanout.Split([0, 50, 100], [])
    jobs = [{"job_key": "k.001"}, {"job_key": "k.002"}]
    done = {"status": "COMPLETED", "output": {"video_path": "x"}}
    running = {"status": "IN_PROGRESS", "output": {"pct": 40.0}}
    client = ScriptedClient(
        [[running, done], [running], [{"status": "FAILED", "error": "E_CUDA: boom"}], [running, done]], video
    )
    reports = []
    runner = fanout.FanOut(client, jobs, split, tmp_path / "parts", lost_after_s=0.3, poll_s=0.05,
                           on_progress=reports.append, log=lambda m: None)  # fmt: skip
    paths = runner.run()
    assert [p.name for p in paths] == ["part_000.mp4", "part_001.mp4"]
    assert [j["job_key"] for j in client.sent] == ["k.001", "k.002", "k.002", "k.002"]  # lost, failed, done
    assert client.cancelled == ["j1"] and runner.retried == 2
    assert reports[0]["pct"] == 40.0 and reports[-1]["pct"] == 100.0 and reports[-1]["done"] == 2
    assert any(r["pct"] == 70.0 and r["done"] == 1 for r in reports)  # one half done, the other at 40 %
    client = ScriptedClient([[running], [{"status": "FAILED", "error": "E_AUDIO: empty"}]], video)
    with pytest.raises(fanout.FanOutError, match="E_AUDIO"):
        fanout.FanOut(client, jobs, split, tmp_path / "p2", poll_s=0.01, log=lambda m: None).run()
    assert client.cancelled == ["j0"]  # the others are stopped
    client = ScriptedClient([[done]] + [[{"status": "FAILED", "error": "E_CUDA: x"}]] * 3, video)
    with pytest.raises(fanout.FanOutError, match="no retries left"):
        fanout.FanOut(client, jobs, split, tmp_path / "p3", retries=2, poll_s=0.01, log=lambda m: None).run()
    assert len(client.sent) == 4


# --- end to end ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_long_video_by_several_workers_with_one_killed(tiny_root, tmp_path, capsys):
    """60 s of speech-like audio, ``--parallel 4`` against the fake RunPod with three worker processes (production
    job loop, tiny model); one worker is killed with SIGKILL while it runs a part; the client sees that part lost,
    sends it again under its job_key and another worker continues it. The joined MP4 has the audio's length to the
    frame, every part's video packets, and the input audio."""
    layout = []
    rng = np.random.default_rng(7)
    while sum(s for _, s in layout) < 60.0:
        layout += [("talk", float(rng.uniform(1.5, 3.0))), ("pause", float(rng.uniform(0.4, 0.7)))]
    wave, _ = speechlike(layout, seed=8)
    wave = wave[: 60 * RATE]
    audio = tmp_path / "long.wav"
    audio.write_bytes(fanout.wav_bytes(wave))
    (tmp_path / "face.png").write_bytes(fanout.base64.b64decode(png_b64().split(",", 1)[1]))
    fake = FakeRunPod()
    volume = tmp_path / "volume"
    volume.mkdir()
    base = {
        **fake.env(),
        "MULTITALK_WINDOW_FRAMES": "81",
        "MULTITALK_MOTION_FRAMES": "1",
        "MODEL_PATH": str(tiny_root),
        "VOLUME_PATH": str(volume),
        "MULTITALK_DTYPE": "fp32",
        "PROGRESS_INTERVAL_SECONDS": "0",
    }
    workers = {}
    started = time.monotonic()
    try:
        for name in ("w1", "w2", "w3"):  # each names itself in its posts (the query string)
            env = {k: v.replace("gpu=test", f"gpu=test&w={name}") if k.startswith("RUNPOD_WEBHOOK") else v
                   for k, v in base.items()}  # fmt: skip
            workers[name] = start_worker({**env, "RUNPOD_POD_ID": name}, tmp_path / f"{name}.log")
        killed = {}

        def kill_one_mid_part():
            """Once worker w2 has finished a window of its part (its state is saved), kill it."""
            for post in list(fake.posts):
                segment = (post["body"].get("output") or {}).get("segment") or {}
                if "w=w2" in post["query"] and segment.get("index", 0) >= 1:  # two windows done, state saved
                    killed["job"], killed["at"] = post["job"], time.monotonic() - started
                    workers["w2"].send_signal(signal.SIGKILL)
                    workers["w2"].wait(timeout=30)
                    return True
            return False

        import threading

        watcher = threading.Thread(target=lambda: fake.wait_for(kill_one_mid_part, 240, "w2 mid-part"), daemon=True)
        watcher.start()
        out = tmp_path / "long.mp4"
        code = main(["--endpoint", fake.base, "--api-key", "k", "--image", str(tmp_path / "face.png"),
                     "--audio", str(audio), "--width", "64", "--height", "64", "--steps", "1", "--seed", "3",
                     "--extra", '{"output": {"format": "volume"}}', "--out", str(out),
                     "--parallel", "4", "--lost-after", "30"])  # fmt: skip
        elapsed = time.monotonic() - started
        watcher.join(timeout=1)
        err = capsys.readouterr().err
        assert code == 0, err[-3000:]
        assert killed, "worker w2 never ran a part"
        assert "lost" in err and "sent again" in err, err[-3000:]
        assert killed["job"] not in [p["job"] for p in list(fake.posts) if "w=w2" not in p["query"]]
        # the part sent again continued after the windows the killed worker had finished
        outputs = [s.get("output") or {} for s in fake.states.values() if s["status"] == "COMPLETED"]
        assert len(outputs) == 4
        assert sum(any("resumed after window" in w for w in o.get("warnings", [])) for o in outputs) == 1
        frames = frames_of(out)
        assert len(frames) == 1500  # 60 s at 25 fps, to the frame
        parts = sorted((tmp_path / "long.parts").glob("part_*.mp4"))
        assert len(parts) == 4
        assert packets_of(out) == [p for path in parts for p in packets_of(path)]
        sound = sound_of(out)
        expected = fanout.decode_audio(audio, fanout.AUDIO_RATE)[: 1500 * 1920]
        assert abs(len(sound) - len(expected)) < 1024
        n = min(len(sound), len(expected))
        assert np.sqrt(np.mean((sound[:n] - expected[:n]) ** 2)) / np.sqrt(np.mean(expected[:n] ** 2)) < 0.1
        print(f"fan-out end to end: {elapsed:.1f} s, w2 killed at {killed['at']:.1f} s", file=sys.__stderr__)
    finally:
        for process in workers.values():  # all stop at once
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in workers.values():
            if process.poll() is None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        fake.close()
