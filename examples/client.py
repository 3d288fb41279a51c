"""Client for the MultiTalk worker: on RunPod (``https://api.runpod.ai/v2/<endpoint-id>``) or the local API
server (``python -m multitalk_serve.worker --rp_serve_api`` -> ``http://localhost:8000``).

As a command:

    python examples/client.py --endpoint https://api.runpod.ai/v2/ENDPOINT_ID --image face.png \\
        --audio voice.wav --prompt "A woman talks to the camera" --out talk.mp4     # RUNPOD_API_KEY from the env
    python examples/client.py --endpoint ... --video interview.mp4 --audio new_voice.wav --model infinitetalk \\
        --keep-background --out dubbed.mp4                                         # dub a video (InfiniteTalk)

As a library:

    from client import MultiTalkClient, media
    client = MultiTalkClient("https://api.runpod.ai/v2/ENDPOINT_ID", api_key="...")
    output = client.generate({"image": media("face.png"), "audio": [media("voice.wav")], "prompt": "..."},
                             on_progress=print)
    client.save_video(output, "talk.mp4")

Only ``requests`` is needed. Jobs go through ``/run`` and are polled on ``/status`` (progress is printed), or through
``/runsync`` with ``--sync``. The video comes back as a presigned URL, a path on the network volume, or inline base64,
and ``save_video`` handles each.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests


def media(path: str | Path) -> str:
    """A local file as a data URI (fine up to a few MB; use URLs or S3 keys for bigger inputs)."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


class JobFailed(RuntimeError):
    """The job ended FAILED, CANCELLED or TIMED_OUT; ``str(exc)`` is the worker's ``"E_CODE: message"``."""

    def __init__(self, status: str, error: str, job_id: str):
        super().__init__(f"{status}: {error}")
        self.status, self.error, self.job_id = status, error, job_id

    @property
    def code(self) -> str:
        return self.error.split(":", 1)[0] if self.error.startswith("E_") else "E_UNKNOWN"


class MultiTalkClient:
    def __init__(self, endpoint: str, api_key: str | None = None, timeout: float = 60.0):
        self.endpoint = endpoint.rstrip("/")
        self.local = "api.runpod.ai" not in self.endpoint
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    # --- raw calls ----------------------------------------------------------------------------------------------
    def submit(self, job_input: dict, s3_config: dict | None = None, webhook: str | None = None,
               execution_timeout_s: float | None = None) -> str:  # fmt: skip
        """``/run``: queue a job, return its id."""
        body = self._body(job_input, s3_config, webhook, execution_timeout_s)
        reply = self._post("/run", body)
        return reply["id"]

    def status(self, job_id: str) -> dict:
        """``/status/{id}`` (the local server wants POST and runs the job during this call)."""
        if self.local:
            return self._post(f"/status/{job_id}", None, timeout=None)
        response = self.session.get(f"{self.endpoint}/status/{job_id}", timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def cancel(self, job_id: str) -> dict:
        return self._post(f"/cancel/{job_id}", None)

    def run_sync(self, job_input: dict, s3_config: dict | None = None) -> dict:
        """``/runsync``: wait for the result in one call (RunPod waits up to 90 s, then ``wait`` takes over)."""
        reply = self._post("/runsync", self._body(job_input, s3_config, None, None), timeout=None)
        if reply.get("status") in ("IN_QUEUE", "IN_PROGRESS"):
            return self.wait(reply["id"])
        return self._result(reply)

    def wait(self, job_id: str, on_progress: Callable[[dict], None] | None = None, poll_s: float = 2.0,
             timeout_s: float = 6 * 3600) -> dict:  # fmt: skip
        """Poll until the job ends; ``on_progress`` gets each new progress dict; returns the output."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            reply = self.status(job_id)
            status = reply.get("status")
            if status in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
                return self._result(reply)
            progress = reply.get("output")
            if on_progress and isinstance(progress, dict) and progress != last:
                on_progress(progress)
                last = progress
            time.sleep(poll_s)
        raise TimeoutError(f"job {job_id} still running after {timeout_s:.0f} s")

    def generate(self, job_input: dict, s3_config: dict | None = None,
                 on_progress: Callable[[dict], None] | None = None) -> dict:  # fmt: skip
        """Submit and wait: the job's output."""
        return self.wait(self.submit(job_input, s3_config), on_progress)

    # --- results ------------------------------------------------------------------------------------------------
    def save_video(self, output: dict, path: str | Path) -> Path:
        """Write the video of a job output to ``path`` (download, decode, or copy from a mounted volume)."""
        path = Path(path)
        if output.get("video_url"):
            with self.session.get(output["video_url"], stream=True, timeout=self.timeout) as response:
                response.raise_for_status()
                with path.open("wb") as f:
                    shutil.copyfileobj(response.raw, f)
        elif output.get("video_base64"):
            path.write_bytes(base64.b64decode(output["video_base64"]))
        elif output.get("video_path") and Path(output["video_path"]).exists():
            shutil.copyfile(output["video_path"], path)
        elif output.get("video_path"):
            raise FileNotFoundError(f"the video is on the worker's network volume: {output['video_path']}")
        else:
            raise ValueError("the output holds no video")
        return path

    # --- helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def _body(job_input, s3_config, webhook, execution_timeout_s) -> dict:
        body: dict = {"input": job_input}
        if s3_config:
            body["s3Config"] = s3_config
        if webhook:
            body["webhook"] = webhook
        if execution_timeout_s:
            body["policy"] = {"executionTimeout": int(execution_timeout_s * 1000)}
            # also in the input: the worker refuses at once a job it estimates cannot finish in time (E_TOO_LONG),
            # and the local API drops policy
            body["input"] = {"execution_timeout_s": float(execution_timeout_s), **job_input}
        return body

    def _post(self, path: str, body: dict | None, timeout: float | None = 60.0) -> dict:
        response = self.session.post(f"{self.endpoint}{path}", json=body, timeout=timeout)
        response.raise_for_status()
        return response.json()

    @staticmethod
    def _result(reply: dict) -> dict:
        status = reply.get("status")
        if status != "COMPLETED":
            raise JobFailed(status or "UNKNOWN", str(reply.get("error", "")), reply.get("id", ""))
        return reply["output"]


def _print_progress(p: dict) -> None:
    if p.get("stage") == "sampling":
        eta = f", ~{p['eta_s']:.0f} s left" if "eta_s" in p else ""
        print(f"  {p['pct']:5.1f}%  clip {p['clip']}/{p['total_clips']} step {p['step']}/{p['total_steps']}{eta}",
              file=sys.stderr)  # fmt: skip
    else:
        print(f"  {p.get('pct', 0):5.1f}%  {p.get('stage')}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Make a talking video with a MultiTalk / InfiniteTalk worker.")
    parser.add_argument("--endpoint", required=True, help="https://api.runpod.ai/v2/<endpoint-id> or http://host:8000")
    parser.add_argument("--api-key", default=os.environ.get("RUNPOD_API_KEY"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="a file, a URL, or a path on the worker's volume")
    source.add_argument("--video", help="instead of --image: a video to dub (InfiniteTalk); a file, URL or path")
    parser.add_argument("--audio", required=True, action="append", help="one per speaker (twice for two)")
    parser.add_argument("--prompt", default="A person is talking.")
    parser.add_argument("--model", choices=("multitalk", "infinitetalk", "infinitetalk-single", "infinitetalk-multi"),
                        help="default: the worker's (MULTITALK_MODEL; with --video: infinitetalk)")  # fmt: skip
    parser.add_argument("--keep-background", action="store_true",
                        help="regenerate only the speaker regions; the rest stays the source's")  # fmt: skip
    parser.add_argument("--mask-image", help="white = the region regenerated (implies --keep-background)")
    parser.add_argument("--source-end", choices=("hold", "pingpong"), help="a video shorter than the audio")
    parser.add_argument("--feather", type=float, help="--keep-background's edge width in pixels")
    parser.add_argument("--audio-type", choices=("add", "para"), default="add")
    parser.add_argument("--resolution", choices=("480p", "720p"), default="480p")
    parser.add_argument("--preset", choices=("quality", "balanced", "fast"), help="default: the worker's")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--extra", type=json.loads, default={}, help="more input fields as JSON")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sync", action="store_true", help="use /runsync instead of /run + /status")
    return parser


def job_input(args: argparse.Namespace) -> dict:
    """The job's ``input`` from the command line: local files are sent inline, anything else as given."""

    def source(value: str) -> str:
        return media(value) if Path(value).is_file() else value

    job: dict = {"audio": [source(a) for a in args.audio], "prompt": args.prompt, "audio_type": args.audio_type,
                 "resolution": args.resolution}  # fmt: skip
    if args.video is not None:
        job["video"] = source(args.video)
    else:
        job["image"] = source(args.image)
    if args.mask_image is not None:
        job["mask_image"] = source(args.mask_image)
    if args.keep_background:
        job["keep_background"] = True
    for key, value in (("preset", args.preset), ("sampling_steps", args.steps), ("seed", args.seed),
                       ("width", args.width), ("height", args.height), ("model", args.model),
                       ("source_end", args.source_end), ("feather", args.feather)):  # fmt: skip
        if value is not None:
            job[key] = value
    return {**job, **args.extra}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    job = job_input(args)
    client = MultiTalkClient(args.endpoint, args.api_key)
    started = time.monotonic()
    try:
        output = client.run_sync(job) if args.sync else client.generate(job, on_progress=_print_progress)
    except JobFailed as exc:
        print(f"job failed: {exc}", file=sys.stderr)
        return 1
    path = client.save_video(output, args.out)
    video = output["video"]
    model = output.get("params", {}).get("model", "?")
    print(f"saved {path}: {video['duration_s']:.2f} s, {video['frames']} frames, {video['width']}x{video['height']}, "
          f"{video['bytes'] / 1e6:.2f} MB, seed {output['seed']}, model {model}, "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    for warning in output.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
