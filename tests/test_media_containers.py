"""Media bytes cannot make FFmpeg or Pillow reach anything else (issue 11, hole 2).

An SDP description, an HLS playlist naming an http URL, a concat list naming a local file, an image-sequence
pattern, RTSP/RTP URLs inside a container: all refused, and while each is handled a loopback TCP server counts the
connections and bytes it gets (0), a watcher of /proc/net/udp looks for a socket bound to the port an SDP names
(none), and inotify counts the files opened in the folder a concat list points into (0). Images: only the Pillow
formats of ``IMAGE_FORMATS``.
"""

from __future__ import annotations

import base64
import ctypes
import io
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from bad_inputs import face, speech
from media import tone, write_audio, write_video
from multitalk_serve.engine import (
    AUDIO_CONTAINERS,
    IMAGE_FORMATS,
    VIDEO_CONTAINERS,
    AudioError,
    ImageInputError,
    open_container,
)
from multitalk_serve.engine.pipeline.audio import decode_audio
from multitalk_serve.engine.pipeline.generate import load_image

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and /proc/net are Linux's")


class TcpCounter:
    """A loopback TCP server counting connections and bytes received."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(2)
            try:
                while data := conn.recv(65536):
                    self.received += len(data)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.server.close()


class FileOpens:
    """inotify: every open of a file in ``folder`` (by anyone in this process, C code included)."""

    IN_OPEN, IN_NONBLOCK = 0x20, 0o4000

    def __init__(self, folder: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
        assert self.fd >= 0
        assert self.libc.inotify_add_watch(self.fd, str(folder).encode(), self.IN_OPEN) >= 0

    def names(self) -> list[str]:
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            i = 0
            while i < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, i)
                out.append(data[i + 16 : i + 16 + length].rstrip(b"\0").decode())
                i += 16 + length

    def close(self):
        os.close(self.fd)


def udp_ports_bound() -> set[int]:
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
    return ports


class UdpWatch:
    """Polls the UDP socket table while something runs: was ``port`` ever bound?"""

    def __init__(self, port: int):
        self.port, self.seen, self.done = port, False, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.done.is_set():
            if self.port in udp_ports_bound():
                self.seen = True
            time.sleep(0.005)

    def stop(self) -> bool:
        self.done.set()
        self.thread.join()
        return self.seen


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working folder holding files a hostile list could name (relative and absolute), watched by inotify, and
    a TCP server to name in URLs."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    (folder / "secret.wav").write_bytes(speech(0.5))
    Image.new("RGB", (64, 64)).save(folder / "img001.png")
    Image.new("RGB", (64, 64)).save(folder / "img002.png")
    monkeypatch.chdir(folder)
    server, opens = TcpCounter(), FileOpens(folder)
    yield folder, server, opens
    server.close()
    opens.close()


def hostile(folder: Path, port: int, udp: int) -> dict[str, bytes]:
    url = f"http://127.0.0.1:{port}"
    return {
        "sdp": (
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {udp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=control:rtsp://127.0.0.1:{port}/a\r\n"
        ).encode(),
        "hls playlist naming an http URL": (
            f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}/a.ts\n#EXT-X-ENDLIST\n"
        ).encode(),
        "hls playlist naming rtsp": (
            f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nrtsp://127.0.0.1:{port}/a\n#EXT-X-ENDLIST\n"
        ).encode(),
        "concat list naming a local file": b"ffconcat version 1.0\nfile 'secret.wav'\n",
        "concat list naming an absolute path": f"ffconcat version 1.0\nfile '{folder}/secret.wav'\n".encode(),
        "concat list naming an image sequence": b"ffconcat version 1.0\nfile 'img001.png'\n",
        "concat list naming a URL": f"ffconcat version 1.0\nfile '{url}/a.wav'\n".encode(),
        "image-sequence pattern": b"img%03d.png",
        "rtsp URL": f"rtsp://127.0.0.1:{port}/a".encode(),
        "rtp URL": f"rtp://127.0.0.1:{udp}".encode(),
    }


CASES = list(hostile(Path("/x"), 1, 2))


@pytest.mark.parametrize("case", CASES)
def test_hostile_media_opens_no_socket_and_no_file(sandbox, case):
    folder, server, opens = sandbox
    udp = free_udp_port()
    data = hostile(folder, server.port, udp)[case]
    opens.names()  # forget the fixture's own writes
    watch = UdpWatch(udp)
    started = time.monotonic()
    with pytest.raises(AudioError) as exc:
        decode_audio(data, "audio of speaker 1")
    seconds = time.monotonic() - started
    bound = watch.stop()
    time.sleep(0.2)  # a connection in flight would have arrived
    assert str(exc.value).startswith("audio of speaker 1: "), exc.value
    assert (server.connections, server.received) == (0, 0), case
    assert not bound, f"{case}: UDP port {udp} was bound"
    assert opens.names() == [], case
    assert seconds < 1.0, (case, seconds)


def test_an_sdp_through_the_worker_is_refused_at_once(tiny_pipeline, tmp_path, sandbox):
    """The issue's report: base64 of an SDP sent as audio made the worker listen on UDP for 20 s."""
    from multitalk_serve.worker.config import WorkerConfig
    from multitalk_serve.worker.handler import Worker

    folder, server, _ = sandbox
    udp = free_udp_port()
    sdp = hostile(folder, server.port, udp)["sdp"]
    worker = Worker(tiny_pipeline, WorkerConfig(model_path=tmp_path, volume_path=tmp_path, s3=None))
    job = {"image": base64.b64encode(face()).decode(), "audio": base64.b64encode(sdp).decode(), "mode": "clip"}
    watch = UdpWatch(udp)
    started = time.monotonic()
    result = worker.run({"id": "sdp", "input": {**job, "width": 64, "height": 64, "sampling_steps": 1}})
    assert not watch.stop() and time.monotonic() - started < 10
    assert result["error"].startswith("E_AUDIO: audio of speaker 1: not in an accepted audio container (wav, mp3,")


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus"])
def test_every_accepted_audio_container_still_decodes(tmp_path, suffix):
    path = write_audio(tmp_path / f"a{suffix}", 0.3)
    assert decode_audio(path.read_bytes()).size > 4000
    assert decode_audio(path).size > 4000  # a path is opened the same way (by Python, not by FFmpeg)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_the_sound_of_a_video(tmp_path, suffix):
    video = write_video(tmp_path / f"v{suffix}", 0.5, wave=tone(0.5, 48000))
    assert decode_audio(video.read_bytes()).size > 4000


def test_video_containers_for_a_video_input(tmp_path, sandbox):
    folder, server, _ = sandbox
    video = write_video(tmp_path / "v.mp4", 0.5)
    with open_container(video.read_bytes(), VIDEO_CONTAINERS, "video") as c:
        assert c.streams.video
    for data in (write_audio(tmp_path / "a.wav", 0.2).read_bytes(), hostile(folder, server.port, 9)["sdp"]):
        with (
            pytest.raises(ValueError, match="not in an accepted video container"),
            open_container(data, VIDEO_CONTAINERS, "video"),
        ):
            pass
    assert set(VIDEO_CONTAINERS) <= set(AUDIO_CONTAINERS)


# --- images -----------------------------------------------------------------------------------------------------
def encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (64, 64), 128).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_accepted_image_formats(fmt):
    assert load_image(encoded(fmt)).size == (64, 64)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("TGA", "RGB"), ("PPM", "RGB"), ("SGI", "RGB"), ("PCX", "RGB"), ("ICO", "RGB"), ("EPS", "RGB"), ("XBM", "1")],
)
def test_other_pillow_formats_are_refused(fmt, mode):
    """Pillow reads these (EPS by running Ghostscript): none is tried."""
    with pytest.raises(ImageInputError, match="not a readable image in an accepted format"):
        load_image(encoded(fmt, mode))
    assert "PNG" in IMAGE_FORMATS and "EPS" not in IMAGE_FORMATS
