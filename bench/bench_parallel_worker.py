"""A whole job through the worker on 1 and on N processes (``MULTITALK_GPUS``): the worker's own timings.

    python bench/bench_parallel_worker.py --gpus 1 2                      # CPU (gloo), the tiny model: overhead figure
    python bench/bench_parallel_worker.py --model-path /models --gpus 1 2 4 8 --size 480 832 --steps 8 --seconds 5

Each count starts a real worker process (``python -m multitalk_serve.worker``, the production job loop) against a
fake RunPod on loopback, sends the same job ``--repeats`` times (the first pays the set-up: it is reported apart) and
prints the job's ``timings`` (total, sampling, VAE, ...) as JSON lines. Without ``--model-path`` the tiny random model
is written to a temporary folder (noise, not video). The frames of every count are compared with the first count's
(crf 0: lossless): ``max_difference`` is the largest pixel difference (0: the same video).
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import av  # noqa: E402
import numpy as np  # noqa: E402

from fake_runpod import FakeRunPod, start_worker  # noqa: E402
from media import write_audio  # noqa: E402
from test_worker_api import png_b64  # noqa: E402


def frames_of(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def run(count: int, args, model_path: Path, tmp: Path, job: dict) -> list[dict]:
    fake = FakeRunPod()
    volume = tmp / f"volume{count}"
    volume.mkdir()
    env = {
        **fake.env(),
        "MODEL_PATH": str(model_path),
        "VOLUME_PATH": str(volume),
        "MULTITALK_GPUS": str(count),
        "MULTITALK_STREAM": "0",
        **({"MULTITALK_DEVICE": "cpu", "MULTITALK_DTYPE": "fp32"} if args.cpu else {}),
        **({"MULTITALK_WINDOW_FRAMES": str(args.window[0]), "MULTITALK_MOTION_FRAMES": str(args.window[1])}),
    }
    worker = start_worker(env, tmp / f"worker{count}.log")
    results = []
    try:
        for repeat in range(args.repeats):
            job_id = f"n{count}-{repeat}"
            fake.jobs.put({"id": job_id, **job})
            final = fake.wait_for(lambda job_id=job_id: fake.final(job_id), args.timeout, job_id)
            if "error" in final:
                raise RuntimeError(f"{job_id}: {final['error']}")
            out = final["output"]
            results.append({"processes": count, "repeat": repeat, "timings": out["timings"], "path": out["video_path"]})
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except Exception:
            worker.kill()
        fake.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model-path", type=Path, default=None, help="default: the tiny model, on CPU")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.2, help="length of the test voice")
    parser.add_argument("--window", type=int, nargs=2, default=(9, 1), metavar=("FRAMES", "MOTION"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    args.cpu = args.model_path is None
    with tempfile.TemporaryDirectory(prefix="bench-parallel-worker-") as name:
        tmp = Path(name)
        model_path = args.model_path
        if model_path is None:
            from multitalk_serve.tiny import write_tiny_models

            model_path = tmp / "tiny"
            write_tiny_models(model_path)
        voice = base64.b64encode(write_audio(tmp / "voice.wav", args.seconds).read_bytes()).decode()
        h, w = args.size
        job = {
            "input": {
                "image": png_b64(),
                "audio": [voice],
                "height": h,
                "width": w,
                "sampling_steps": args.steps,
                "seed": 5,
                "prompt": "a person talks",
                "output": {"format": "volume", "crf": 0},
            }
        }
        print(json.dumps({"machine": platform.processor() or platform.machine(), "started": time.ctime()}))
        reference = None
        for count in args.gpus:
            for result in run(count, args, model_path, tmp, job):
                frames = frames_of(result.pop("path"))
                reference = frames if reference is None else reference
                result["max_difference"] = int(np.abs(frames.astype(int) - reference.astype(int)).max())
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
