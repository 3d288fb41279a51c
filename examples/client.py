"""Client for the MultiTalk worker: on RunPod (``https://api.runpod.ai/v2/<endpoint-id>``) or the local API
server (``python -m multitalk_serve.worker --rp_serve_api`` -> ``http://localhost:8000``).

As a command:

    python examples/client.py --endpoint https://api.runpod.ai/v2/ENDPOINT_ID --image face.png \\
        --audio voice.wav --prompt "A woman talks to the camera" --out talk.mp4     # RUNPOD_API_KEY from the env
    python examples/client.py --endpoint ... --video interview.mp4 --audio new_voice.wav --model infinitetalk \\
        --keep-background --out dubbed.mp4                                         # dub a video (InfiniteTalk)
    python examples/client.py --endpoint ... --image face.png --audio talk.wav --out talk.mp4 \\
        --segments live/ --job-key talk-42      # segments as they come: ffplay live/index.m3u8 plays while it is made
    python examples/client.py --endpoint ... --image face.png --audio talk.wav --preset realtime --segments live/ \\
        --out talk.mp4                          # FlashTalk (a worker with MULTITALK_ADAPTERS=flashtalk): one speaker
    python examples/client.py --endpoint ... --image face.png --audio long_talk.wav --out talk.mp4 \
        --parallel 4            # one long video made by 4 workers at once: the audio cut at pauses (fanout.py)
    python examples/client.py --endpoint ... --image two.png --text "(s1) Hi! (s2) Hello." --voice af_heart \
        --voice-2 am_adam --out talk.mp4       # text instead of audio (Kokoro-82M); the speech saved as talk.wav

As a library:

    from client import MultiTalkClient, media
    client = MultiTalkClient("https://api.runpod.ai/v2/ENDPOINT_ID", api_key="...")
    output = client.generate({"image": media("face.png"), "audio": [media("voice.wav")], "prompt": "..."},
                             on_progress=print)
    client.save_video(output, "talk.mp4")

    saver = SegmentSaver("live")                    # or stream: the segments of a long video as they are made
    output = client.stream(client.submit({...}), on_item=saver)

Only ``requests`` is needed (``--parallel`` / ``--segment-seconds`` also need numpy and PyAV: ``fanout.py``).
Jobs go through ``/run`` and are polled on ``/status`` (progress is printed), or through
``/runsync`` with ``--sync``, or through ``/stream`` with ``--stream``: then every finished segment (a few seconds of
video, an MPEG-TS file) is reported as it is made, and ``--segments DIR`` saves them with an HLS playlist that a player
can open before the job ends. The video comes back as a presigned URL, a path on the network volume, or inline base64,
and ``save_video`` handles each.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
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


FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def job_result(output: dict | list, job_id: str = "") -> dict:
    """The result in a job's final ``output``: the dict itself, or, from a streaming worker
    (``return_aggregate_stream``), the list of all it streamed, whose last ``"type": "result"`` item is the result."""
    if isinstance(output, list):
        for item in output:
            if isinstance(item, dict) and item.get("error"):
                raise JobFailed("FAILED", str(item["error"]), job_id)
        results = [i for i in output if isinstance(i, dict) and i.get("type", "result") == "result"]
        if not results:
            raise JobFailed("COMPLETED", "E_NO_RESULT: the job ended without a result", job_id)
        output = results[-1]
    if not isinstance(output, dict):
        raise JobFailed("COMPLETED", f"E_NO_RESULT: the job's output is not a result: {output!r:.200}", job_id)
    return {k: v for k, v in output.items() if k != "type"}


class MultiTalkClient:
    def __init__(self, endpoint: str, api_key: str | None = None, timeout: float = 60.0):
        self.endpoint = endpoint.rstrip("/")
        # the local API server (--rp_serve_api) serves /run at its root; RunPod's API (or one like it) under /v2/<id>
        self.local = "api.runpod.ai" not in self.endpoint and "/v2/" not in self.endpoint
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.downloads = requests.Session()  # presigned URLs: never send them the API key
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
            if status in FINAL:
                return self._result(reply)
            progress = reply.get("output")
            if isinstance(progress, list):  # a streaming worker's items so far: the last progress item
                progress = next((i for i in reversed(progress) if isinstance(i, dict) and "stage" in i), None)
            if on_progress and isinstance(progress, dict) and progress != last:
                on_progress(progress)
                last = progress
            time.sleep(poll_s)
        raise TimeoutError(f"job {job_id} still running after {timeout_s:.0f} s")

    def generate(self, job_input: dict, s3_config: dict | None = None,
                 on_progress: Callable[[dict], None] | None = None) -> dict:  # fmt: skip
        """Submit and wait: the job's output."""
        return self.wait(self.submit(job_input, s3_config), on_progress)

    def stream(self, job_id: str, on_item: Callable[[dict], None] | None = None, poll_s: float = 2.0,
               timeout_s: float = 6 * 3600) -> dict:  # fmt: skip
        """Poll ``/stream/{id}`` until the job ends; ``on_item`` gets each streamed item (``"type"``: ``"progress"``,
        ``"segment"`` or ``"result"``) once; returns the result (``"type"`` removed), like ``wait``.

        RunPod answers ``GET /stream`` with the items made since the last call; the local API server wants POST, runs
        the whole job during that call and answers with every item at once."""
        deadline = time.monotonic() + timeout_s
        seen: set[str] = set()  # items already passed on: a poll may repeat some
        result = None
        while time.monotonic() < deadline:
            if self.local:
                reply = self._post(f"/stream/{job_id}", None, timeout=None)
            else:
                response = self.session.get(f"{self.endpoint}/stream/{job_id}", timeout=self.timeout)
                response.raise_for_status()
                reply = response.json()
            chunks = reply.get("stream") or []
            for chunk in chunks:
                item = chunk.get("output") if isinstance(chunk, dict) and "output" in chunk else chunk
                key = hashlib.sha1(json.dumps(item, sort_keys=True).encode()).hexdigest()
                if key in seen:
                    continue
                seen.add(key)
                if isinstance(item, dict) and item.get("error"):
                    raise JobFailed("FAILED", str(item["error"]), job_id)
                if isinstance(item, dict) and item.get("type") == "result":
                    result = item
                if on_item and isinstance(item, dict):
                    on_item(item)
            if result is not None:
                return job_result(result, job_id)
            status = reply.get("status")
            if status in FINAL and status != "COMPLETED":
                raise JobFailed(status, str(reply.get("error", "")), job_id)
            if status == "COMPLETED" and (self.local or not chunks):
                if self.local:  # the local server forgets the job after /stream
                    raise JobFailed(status, "E_NO_RESULT: the job streamed no result", job_id)
                return self._result(self.status(job_id))  # the stream is drained: the final output has it
            time.sleep(poll_s)
        raise TimeoutError(f"job {job_id} still running after {timeout_s:.0f} s")

    # --- results ------------------------------------------------------------------------------------------------
    def save_video(self, output: dict | list, path: str | Path) -> Path:
        """Write the video of a job output to ``path`` (download, decode, or copy from a mounted volume)."""
        output = job_result(output)
        path = Path(path)
        if output.get("video_url"):
            self.download(output["video_url"], path)
        elif output.get("video_base64"):
            path.write_bytes(base64.b64decode(output["video_base64"]))
        elif output.get("video_path") and Path(output["video_path"]).exists():
            shutil.copyfile(output["video_path"], path)
        elif output.get("video_path"):
            raise FileNotFoundError(f"the video is on the worker's network volume: {output['video_path']}")
        else:
            raise ValueError("the output holds no video")
        return path

    def download(self, url: str, path: Path) -> None:
        with self.downloads.get(url, stream=True, timeout=self.timeout) as response:
            response.raise_for_status()
            with path.open("wb") as f:
                shutil.copyfileobj(response.raw, f)

    def save_speech(self, output: dict | list, path: str | Path) -> Path | None:
        """Write the speech of a text job (a WAV) to ``path``; None when the output holds none (an audio job, or
        the speech could not be returned apart: the warnings say why)."""
        output = job_result(output)
        path = Path(path)
        if output.get("speech_url"):
            self.download(output["speech_url"], path)
        elif output.get("speech_base64"):
            path.write_bytes(base64.b64decode(output["speech_base64"]))
        elif output.get("speech_path") and Path(output["speech_path"]).exists():
            shutil.copyfile(output["speech_path"], path)
        else:
            return None
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
        return job_result(reply.get("output"), reply.get("id", ""))


class SegmentSaver:
    """Saves the segments a streaming job reports to ``folder/seg_00000.ts``, ``seg_00001.ts``, ... and keeps
    ``folder/index.m3u8`` (an HLS event playlist) up to date, so ``ffplay folder/index.m3u8`` (or mpv, VLC) can start
    as soon as the first segment is there. Use it as ``on_item`` of ``MultiTalkClient.stream``.

    A segment comes as a URL (downloaded), a path (copied when this machine mounts the same volume) or base64. One that
    cannot be fetched is reported and left out (the final video has it anyway). Segments are kept by index: a resumed
    job announces its earlier segments again, and a late or repeated one is not listed twice."""

    def __init__(self, folder: str | Path, session: requests.Session | None = None, timeout: float = 60.0,
                 log: Callable[[str], None] | None = None):  # fmt: skip
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.playlist = self.folder / "index.m3u8"
        self.session = session or requests.Session()
        self.timeout = timeout
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.saved: dict[int, float] = {}  # index -> duration (s) of the segments on disk
        self.missing: set[int] = set()  # indices that could not be fetched
        self.listed: list[int] = []  # indices in the playlist, in its order
        self.finished = False

    def __call__(self, item: dict) -> None:
        if item.get("type") == "segment":
            self.add(item)
        elif item.get("type") == "result":
            self.finish()

    def file(self, index: int) -> Path:
        return self.folder / f"seg_{index:05d}.ts"

    def add(self, item: dict) -> Path | None:
        """Fetch one segment item; its file, or None when it could not be fetched."""
        try:
            index, duration = int(item["index"]), float(item["duration_s"])
        except (KeyError, TypeError, ValueError):
            self.log(f"a segment without index or duration_s: {item!r:.200}")
            return None
        path = self.file(index)
        if index in self.saved:
            return path  # announced again (a resumed job, a resend): already here
        name = f"segment {index + 1}/{item.get('total', '?')}"
        partial = path.with_suffix(".part")
        try:
            if item.get("url"):
                with self.session.get(item["url"], stream=True, timeout=self.timeout) as response:
                    response.raise_for_status()
                    with partial.open("wb") as f:
                        shutil.copyfileobj(response.raw, f)
            elif item.get("base64"):
                partial.write_bytes(base64.b64decode(item["base64"], validate=True))
            elif item.get("path") and Path(item["path"]).is_file():
                shutil.copyfile(item["path"], partial)
            elif item.get("path"):
                raise FileNotFoundError(f"it is on the worker's volume, not readable here: {item['path']}")
            else:
                raise ValueError(item.get("note") or "the worker sent no url, path or base64")
            partial.replace(path)  # complete before a player can see it
        except (OSError, ValueError, requests.RequestException) as exc:
            partial.unlink(missing_ok=True)
            self.log(f"{name} not saved ({exc}); the final video has it")
            self.missing.add(index)
            self._update()
            return None
        self.missing.discard(index)
        self.saved[index] = duration
        self._update()
        return path

    def finish(self) -> None:
        """The job ended: list what is left and end the playlist."""
        self.finished = True
        self._update()

    def _update(self) -> None:
        # An event playlist only grows: a segment is listed once every earlier one is here or known to be missing
        # (at the end: everything saved). Timestamps continue from segment to segment; a gap is a discontinuity.
        start = self.listed[-1] + 1 if self.listed else 0
        for index in range(start, max([*self.saved, *self.missing], default=-1) + 1):
            if index not in self.saved and index not in self.missing and not self.finished:
                break
            if index in self.saved:
                self.listed.append(index)
        if not self.listed:
            return
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-PLAYLIST-TYPE:EVENT",
                 f"#EXT-X-TARGETDURATION:{math.ceil(max(self.saved[i] for i in self.listed))}",
                 "#EXT-X-MEDIA-SEQUENCE:0"]  # fmt: skip
        for previous, index in zip([self.listed[0] - 1, *self.listed], self.listed, strict=False):
            if index != previous + 1:
                lines.append("#EXT-X-DISCONTINUITY")
            lines += [f"#EXTINF:{self.saved[index]:.3f},", self.file(index).name]
        if self.finished:
            lines.append("#EXT-X-ENDLIST")
        partial = self.playlist.with_suffix(".part")
        partial.write_text("\n".join(lines) + "\n")
        partial.replace(self.playlist)


def _print_progress(p: dict) -> None:
    if p.get("stage") == "sampling":
        eta = f", ~{p['eta_s']:.0f} s left" if "eta_s" in p else ""
        print(f"  {p['pct']:5.1f}%  clip {p['clip']}/{p['total_clips']} step {p['step']}/{p['total_steps']}{eta}",
              file=sys.stderr)  # fmt: skip
    else:
        print(f"  {p.get('pct', 0):5.1f}%  {p.get('stage')}", file=sys.stderr)


class _StreamPrinter:
    """``--stream``: prints progress and one line per segment; with ``--segments DIR`` saves them (``SegmentSaver``)."""

    def __init__(self, folder: str | None, session: requests.Session):
        self.saver = SegmentSaver(folder, session) if folder else None
        self.announced = False

    def __call__(self, item: dict) -> None:
        if item.get("type") == "progress":
            _print_progress(item)
        elif item.get("type") == "segment":
            saved = self.saver.add(item) if self.saver else None
            end = item.get("start_s", 0) + item.get("duration_s", 0)
            where = saved or item.get("url", "").split("?")[0] or item.get("path") or (
                "inline" if item.get("base64") else f"not delivered: {item.get('note', '')}")  # fmt: skip
            again = " (made by an earlier run)" if item.get("resumed") else ""
            print(f"segment {item['index'] + 1}/{item.get('total', '?')}: {item.get('start_s', 0):.2f}-{end:.2f} s, "
                  f"{where}{again}")  # fmt: skip
            if self.saver and self.saver.listed and not self.announced:
                print(f"playback can start: ffplay {self.saver.playlist}")
                self.announced = True
        elif item.get("type") == "result" and self.saver:
            self.saver.finish()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Make a talking video with a MultiTalk / InfiniteTalk worker.")
    parser.add_argument("--endpoint", required=True, help="https://api.runpod.ai/v2/<endpoint-id> or http://host:8000")
    parser.add_argument("--api-key", default=os.environ.get("RUNPOD_API_KEY"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="a file, a URL, or a path on the worker's volume")
    source.add_argument("--video", help="instead of --image: a video to dub (InfiniteTalk); a file, URL or path")
    speech = parser.add_mutually_exclusive_group(required=True)
    speech.add_argument("--audio", action="append", help="one per speaker (twice for two)")
    speech.add_argument("--text", help="instead of --audio: the speech as text (Kokoro-82M on the worker); a "
                                       "dialogue '(s1) ... (s2) ...' for two speakers")  # fmt: skip
    parser.add_argument("--voice", help="--text: speaker 1's voice, a name (af_heart, am_adam, ...) or a local .pt "
                                        "voice file (sent inline)")  # fmt: skip
    parser.add_argument("--voice-2", help="--text: speaker 2's voice (a dialogue)")
    parser.add_argument("--speech-speed", type=float, help="--text: speaking rate, 0.5 to 2")
    parser.add_argument("--language", help="--text: Kokoro's language (a, b, e, f, h, i, p; default: the voice's)")
    parser.add_argument("--prompt", default="A person is talking.")
    parser.add_argument("--model", choices=("multitalk", "infinitetalk", "infinitetalk-single", "infinitetalk-multi",
                                            "flashtalk"),
                        help="default: the worker's (MULTITALK_MODEL; with --video: infinitetalk; with --preset "
                             "realtime: flashtalk, on a FlashTalk worker)")  # fmt: skip
    parser.add_argument("--keep-background", action="store_true",
                        help="regenerate only the speaker regions; the rest stays the source's")  # fmt: skip
    parser.add_argument("--mask-image", help="white = the region regenerated (implies --keep-background)")
    parser.add_argument("--source-end", choices=("hold", "pingpong"), help="a video shorter than the audio")
    parser.add_argument("--feather", type=float, help="--keep-background's edge width in pixels")
    parser.add_argument("--audio-type", choices=("add", "para"), default="add")
    parser.add_argument("--resolution", choices=("480p", "720p"), default="480p")
    parser.add_argument("--preset", choices=("quality", "balanced", "fast", "realtime"),
                        help="default: the worker's (realtime: FlashTalk, one speaker, an image)")  # fmt: skip
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--extra", type=json.loads, default={}, help="more input fields as JSON")
    parser.add_argument("--out", required=True)
    parser.add_argument("--job-key", help="resume: sending a job again with the same key continues where it stopped")
    delivery = parser.add_mutually_exclusive_group()
    delivery.add_argument("--sync", action="store_true", help="use /runsync instead of /run + /status")
    delivery.add_argument("--stream", action="store_true", help="use /stream: report each segment as it is made")
    delivery.add_argument("--segments", metavar="DIR", help="--stream, and save the segments + DIR/index.m3u8 to DIR")
    fan = parser.add_mutually_exclusive_group()
    fan.add_argument("--parallel", type=int, metavar="N",
                     help="one long video made by N workers at once: the audio (local files) cut at pauses into about "
                          "N equal parts, each a job, joined into --out (needs numpy and PyAV)")  # fmt: skip
    fan.add_argument("--segment-seconds", type=float, metavar="S",
                     help="like --parallel, with parts of about S seconds (as many jobs as that makes)")  # fmt: skip
    parser.add_argument("--retries", type=int, default=2, help="--parallel: times a failed or lost part is sent again")
    parser.add_argument("--lost-after", type=float, default=600.0, metavar="S",
                        help="--parallel: a part running with no news on /status for S seconds is lost (its worker "
                             "died) and sent again")  # fmt: skip
    return parser


def job_input(args: argparse.Namespace) -> dict:
    """The job's ``input`` from the command line: local files are sent inline, anything else as given."""

    def source(value: str) -> str:
        return media(value) if Path(value).is_file() else value

    job: dict = {"prompt": args.prompt, "audio_type": args.audio_type, "resolution": args.resolution}
    if args.text is not None:
        job["text"] = args.text
        voices = [v for v in (args.voice, args.voice_2) if v is not None]
        if voices:  # a local voice file goes inline; a name as it is
            job["voice"] = [{"base64": media(v).split(",", 1)[1]} if Path(v).is_file() else v for v in voices]
        for key, value in (("speech_speed", args.speech_speed), ("language", args.language)):
            if value is not None:
                job[key] = value
    else:
        job["audio"] = [source(a) for a in args.audio]
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
                       ("source_end", args.source_end), ("feather", args.feather),
                       ("job_key", args.job_key)):  # fmt: skip
        if value is not None:
            job[key] = value
    return {**job, **args.extra}


def fan_out_main(args: argparse.Namespace, client: MultiTalkClient) -> int:
    """``--parallel N`` / ``--segment-seconds S``: the parts made at once by the endpoint's workers, joined."""
    import fanout  # numpy + PyAV: only for a fan-out

    if args.stream or args.segments or args.sync:
        print("--parallel / --segment-seconds poll /status: not with --stream, --segments or --sync", file=sys.stderr)
        return 2
    if args.text is not None:
        print("--parallel / --segment-seconds cut audio files: send --text as one job", file=sys.stderr)
        return 2
    job = job_input(args)
    del job["audio"]
    if args.video is not None:
        job["video"] = args.video  # a local file: cut into the parts' pieces by fan_out
    job.pop("job_key", None)
    started = time.monotonic()
    try:
        summary = fanout.fan_out(
            client, job, args.audio, args.out, parts=args.parallel, segment_seconds=args.segment_seconds,
            audio_type=args.audio_type, key=args.job_key, retries=args.retries, lost_after_s=args.lost_after,
            on_progress=fanout.print_bar,
        )  # fmt: skip
    except (fanout.FanOutError, JobFailed, ValueError) as exc:
        print(f"fan-out failed: {exc}", file=sys.stderr)
        return 1
    how = "video packets copied" if summary["copied"] else "video encoded again"
    print(f"saved {args.out}: {summary['seconds']:.2f} s, {summary['frames']} frames, {summary['parts']} parts "
          f"({how}, the input audio as its soundtrack), {summary['retries']} retried, "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.text is None and (args.voice or args.voice_2 or args.speech_speed or args.language):
        parser.error("--voice, --voice-2, --speech-speed and --language go with --text")
    client = MultiTalkClient(args.endpoint, args.api_key)
    if args.parallel is not None or args.segment_seconds is not None:
        return fan_out_main(args, client)
    job = job_input(args)
    started = time.monotonic()
    try:
        if args.stream or args.segments:
            output = client.stream(client.submit(job), _StreamPrinter(args.segments, client.downloads))
        elif args.sync:
            output = client.run_sync(job)
        else:
            output = client.generate(job, on_progress=_print_progress)
    except JobFailed as exc:
        print(f"job failed: {exc}", file=sys.stderr)
        return 1
    path = client.save_video(output, args.out)
    video = output["video"]
    model = output.get("params", {}).get("model", "?")
    print(f"saved {path}: {video['duration_s']:.2f} s, {video['frames']} frames, {video['width']}x{video['height']}, "
          f"{video['bytes'] / 1e6:.2f} MB, seed {output['seed']}, model {model}, "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    if output.get("first_segment_s") is not None:
        print(f"first segment after {output['first_segment_s']:.1f} s")
    if output.get("speech_seconds") is not None:
        speech = client.save_speech(output, Path(args.out).with_suffix(".wav"))
        where = f"saved {speech}" if speech else "not returned apart (see the warnings)"
        print(f"speech: {output['speech_seconds']:.2f} s, {where}")
    for warning in output.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
