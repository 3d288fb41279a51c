"""Opening media so that its bytes cannot make FFmpeg or Pillow reach anything else.

Some FFmpeg demuxers open sockets or files named inside the data: an SDP description listens on UDP ports, an HLS
playlist fetches its segments over http, a concat list reads local files, ``image2`` reads numbered file sequences,
the mov demuxer can follow external data references, RTSP/RTP URLs open connections. So media is opened:

- from a Python file object, never by name: FFmpeg's protocols are not used for the input itself;
- with FFmpeg's ``format_whitelist`` set to the containers allowed for that kind of media (probing still picks the
  demuxer, but one not on the list is refused before it runs), and the chosen demuxer checked again by name;
- with ``protocol_whitelist`` naming no protocol and an ``io_open`` that refuses, so no nested open (file, http,
  tcp, udp, rtp, ...) can succeed even from an allowed demuxer; mov/mp4 external references stay off.

Images go through Pillow with only the plugins of ``IMAGE_FORMATS`` (not EPS, which runs Ghostscript, nor the
rarely used readers).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# FFmpeg demuxer names (a demuxer is allowed when one of its names is listed: mov's is "mov,mp4,m4a,3gp,3g2,mj2")
AUDIO_CONTAINERS = ("wav", "mp3", "flac", "ogg", "mov", "mp4", "m4a", "matroska", "webm", "aac", "aiff")
VIDEO_CONTAINERS = ("mov", "mp4", "matroska", "webm")  # for a video input: MP4/MOV, Matroska/WebM
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")  # Pillow format names (JPEG includes MPO)
NO_PROTOCOL = "none"  # a protocol_whitelist naming no real protocol: every nested open is refused


def _refuse_nested_open(url: str, flags: int, options: dict) -> Any:
    raise PermissionError("media may not open other files or URLs")


@contextmanager
def open_container(source: str | Path | bytes | bytearray, allowed: tuple[str, ...], what: str) -> Iterator[Any]:
    """PyAV's container for reading ``source`` (the file's bytes, or a path), restricted to the ``allowed``
    demuxers and to no protocol at all. Raises ``MediaRefused`` when the data is in a container that is not
    allowed, ``av.error.FFmpegError`` / ``OSError`` when it cannot be read."""
    import av

    options = {
        "format_whitelist": ",".join(allowed),
        "protocol_whitelist": NO_PROTOCOL,
        "enable_drefs": "0",  # mov/mp4: no external data references
        "use_absolute_path": "0",
    }
    with io.BytesIO(source) if isinstance(source, bytes | bytearray) else open(source, "rb") as handle:
        try:
            container = av.open(handle, "r", container_options=options, io_open=_refuse_nested_open)
        except av.error.ArgumentError as exc:  # EINVAL: FFmpeg's answer to a demuxer not on the whitelist
            raise MediaRefused(f"not in an accepted {what} container ({', '.join(allowed)})") from exc
        with container:
            if not set(container.format.name.split(",")) & set(allowed):  # FFmpeg enforces it; checked again
                raise MediaRefused(f"a {container.format.name} container is not accepted ({', '.join(allowed)})")
            yield container


class MediaRefused(ValueError):
    """The media is in a container or format that is not on the allow-list."""
