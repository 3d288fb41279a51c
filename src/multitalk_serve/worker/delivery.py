"""Delivering a long job while it is made: each finished segment (a standalone MPEG-TS file from the engine) goes to
the job's output destination as soon as it exists, with an HLS playlist (``index.m3u8``) that lists every segment so
far, and becomes one streamed ``{"type": "segment", ...}`` item (docs/api.md, "Segments delivered while the job runs").

- Destination: the first of the job's output order (``storage.destinations``: s3, volume or inline, as the final
  video's). S3: ``OUTPUT_PREFIX/prefix/job/segments/seg_00000.ts``, announced as a presigned URL; the playlist holds
  presigned segment URLs (it plays without a public bucket) and is re-uploaded after each segment. Volume: the same
  path under ``VOLUME_PATH/outputs/``, the playlist names segments relatively. Inline: the segment's bytes in base64
  when one streamed item can carry them (RunPod: 1 MB per item), else a note.
- A stream must not hold the GPU: one segment's upload gets ``SEGMENT_TRIES`` short tries within
  ``SEGMENT_DEADLINE_S``, and after ``MAX_FAILURES_IN_A_ROW`` failures in a row segments are not tried for
  ``PAUSE_AFTER_FAILURES_S`` (then one is tried again).
- A failure never fails the job: the item says why in ``note`` (the segment is kept on the worker and is in the final
  video), ``summary()`` counts it and ``warnings()`` gives one line for the result.
- Resume: ``already`` (what ``published_events()`` returned in an earlier run of the job) lets a resumed segment be
  announced again without uploading or copying it again.

Presigned URLs and credentials never reach the log: lines name the destination kind and the object key only.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .config import S3Settings, WorkerConfig
from .errors import WorkerError
from .schema import OutputOptions
from .storage import destinations, output_key, presign, s3_client, upload_with_retries

log = logging.getLogger(__name__)

# RunPod carries at most 1 MB per streamed item: base64 makes 4 bytes of 3, and the item has its other fields.
SEGMENT_INLINE_MAX_BYTES = 700_000
SEGMENT_TRIES = 2  # tries of one segment's upload (the final video gets UPLOAD_RETRIES)
SEGMENT_DEADLINE_S = 15.0  # no new try starts past this many seconds into one segment's upload
SEGMENT_CONNECT_TIMEOUT_S = 3.0
SEGMENT_READ_TIMEOUT_S = 10.0
MAX_FAILURES_IN_A_ROW = 3  # then segments are not tried for PAUSE_AFTER_FAILURES_S (a bucket that is down)
PAUSE_AFTER_FAILURES_S = 60.0  # after it, one segment is tried again: a success resumes delivery
PLAYLIST_NAME = "index.m3u8"
SEGMENT_CONTENT_TYPE = "video/mp2t"
PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
KEPT = "it is kept on the worker and is in the final video"


class SegmentLike(Protocol):
    """What the engine's ``Segment`` gives (engine/pipeline/segments.py)."""

    index: int
    total: int
    path: Path
    start_frame: int
    frames: int
    resumed: bool

    @property
    def start_s(self) -> float: ...

    @property
    def duration_s(self) -> float: ...


def segment_name(index: int) -> str:
    return f"seg_{index:05d}.ts"


@dataclass
class _Entry:
    """One playlist line: a delivered segment's duration and where a player finds it."""

    duration_s: float
    uri: str


def playlist_text(entries: Mapping[int, _Entry], ended: bool) -> str:
    """An HLS v3 EVENT playlist of ``entries`` in index order; a missing index (a segment not delivered) becomes a
    discontinuity, as the timestamps jump there."""
    target = max([1, *(math.ceil(e.duration_s - 1e-6) for e in entries.values())])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    previous = None
    for index in sorted(entries):
        entry = entries[index]
        if previous is not None and index != previous + 1:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{entry.duration_s:.3f},", entry.uri]
        previous = index
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


class SegmentsSummary(BaseModel):
    """What the result says about the segments delivered while the job ran (``SegmentPublisher.summary()``)."""

    model_config = ConfigDict(extra="forbid")

    storage: Literal["s3", "volume", "inline"] = Field(description="where the segments went")
    published: int = Field(description="segments delivered (re-announced ones of a resumed job included)")
    resumed: int = Field(description="of those, delivered by an earlier run of the job and announced again")
    failed: int = Field(description="segments not delivered (upload or write failed); they are in the final video")
    too_large: int = Field(description="inline segments over what one streamed item carries (sent without data)")
    playlist_failed: int = Field(description="playlist updates that failed")
    bytes: int = Field(description="bytes of the segments delivered")
    seconds: float = Field(description="seconds spent delivering (the GPU waits for it)")
    playlist_url: str | None = Field(None, description="presigned GET URL of the HLS playlist (S3)")
    playlist_path: str | None = Field(None, description="the HLS playlist on the network volume")


class SegmentPublisher:
    """Publishes one job's segments; construct one per job (before generating: an impossible ``output.format`` is
    ``E_INPUT`` here, before anything expensive)."""

    def __init__(
        self,
        config: WorkerConfig,
        request_s3: S3Settings | None,
        job_id: str,
        options: OutputOptions,
        already: Mapping[int | str, Mapping[str, Any]] | None = None,
        *,
        tries: int = SEGMENT_TRIES,
        deadline_s: float = SEGMENT_DEADLINE_S,
        backoff_s: float = 0.5,
        inline_max_bytes: int = SEGMENT_INLINE_MAX_BYTES,
    ):
        self.config = config
        self.s3 = request_s3 or config.s3
        self.job_id = job_id
        self.options = options
        self.target = destinations(config, self.s3, options.format)[0]  # "s3" | "volume" | "inline"
        self.tries = tries
        self.deadline_s = deadline_s
        self.backoff_s = backoff_s
        self.inline_max_bytes = min(inline_max_bytes, config.inline_max_bytes)
        self.prefix = output_key(config, job_id, "segments", options)  # OUTPUT_PREFIX/prefix/job/segments
        self.already = {int(k): dict(v) for k, v in (already or {}).items()}
        self._client = None
        self._entries: dict[int, _Entry] = {}
        self._events: dict[int, dict[str, Any]] = {}
        self._playlist_url: str | None = None
        self._playlist_dirty = False
        self._reasons: list[str] = []  # why segments (or the playlist) were not delivered, in order
        self._in_a_row = 0
        self._last_failure = 0.0  # time.monotonic() of the last failed delivery
        self._published = self._reannounced = self._failed = self._too_large = self._playlist_failed = 0
        self._total = 0
        self._bytes = 0
        self._seconds = 0.0
        self._finished = False

    # --- where things go -------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(
                self.s3, attempts=1, connect_timeout=SEGMENT_CONNECT_TIMEOUT_S, read_timeout=SEGMENT_READ_TIMEOUT_S
            )
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    @property
    def folder(self) -> Path:
        """The job's segment folder on the volume."""
        return self.config.volume_path / "outputs" / self.prefix

    def playlist_where(self) -> dict[str, str]:
        """``playlist_url`` (S3) or ``playlist_path`` (volume) once a playlist exists; empty otherwise."""
        if self.target == "s3" and self._playlist_url is not None:
            return {"playlist_url": self._playlist_url}
        if self.target == "volume" and (self.folder / PLAYLIST_NAME).is_file():
            return {"playlist_path": str(self.folder / PLAYLIST_NAME)}
        return {}

    # --- publishing ------------------------------------------------------------------------------------------
    def publish(self, segment: SegmentLike) -> dict[str, Any]:
        """Deliver one segment and return its streamed item. Never raises: whatever goes wrong becomes the item's
        ``note`` (the engine calls this between windows; the job goes on)."""
        started = time.perf_counter()
        self._total = max(self._total, int(segment.total))
        event: dict[str, Any] = {
            "type": "segment",
            "index": int(segment.index),
            "total": int(segment.total),
            "start_s": round(float(segment.start_s), 3),
            "duration_s": round(float(segment.duration_s), 3),
            "frames": int(segment.frames),
            "format": "mpegts",
        }
        try:
            self._publish(segment, event)
        except Exception as exc:  # a bug or an unreadable file must not end a job whose video is being made
            if {"url", "path", "base64"} & event.keys():  # delivered; what came after failed
                event["note"] = f"segment {segment.index} delivered, then {type(exc).__name__}"
            else:
                self._failed += 1
                reason = f"segment {segment.index} not delivered: {type(exc).__name__}"
                self._reasons.append(reason)
                event["note"] = f"{reason}; {KEPT}"
            log.warning("job %s: %s", self.job_id, event["note"], exc_info=True)
        seconds = time.perf_counter() - started
        event["publish_s"] = round(seconds, 3)
        self._seconds += seconds
        if event["index"] in self._events:
            self._events[event["index"]] = dict(event)  # kept apart from what the caller may add (eta_s)
        return event

    def _publish(self, segment: SegmentLike, event: dict[str, Any]) -> None:
        started = time.perf_counter()
        size = Path(segment.path).stat().st_size
        event["bytes"] = size
        earlier = self.already.get(segment.index) if getattr(segment, "resumed", False) else None
        where: dict[str, Any] | None = None
        note = None
        if earlier is not None:
            where = self._reannounce(segment, earlier)
        if where is not None:
            event["resumed"] = True
            self._reannounced += 1
        elif self.target == "inline":
            if size <= self.inline_max_bytes:
                where = {"base64": base64.b64encode(Path(segment.path).read_bytes()).decode("ascii")}
            else:
                self._too_large += 1
                reason = (
                    f"segment {segment.index} is {size / 1e3:.0f} KB, over the {self.inline_max_bytes / 1e3:.0f} KB "
                    "a streamed item carries inline (configure s3Config / BUCKET_* or a network volume)"
                )
                self._reasons.append(reason)
                note = f"{reason}; {KEPT}"
        elif self._in_a_row >= MAX_FAILURES_IN_A_ROW and time.monotonic() - self._last_failure < PAUSE_AFTER_FAILURES_S:
            self._failed += 1
            note = f"segment {segment.index} not delivered: the last {self._in_a_row} deliveries failed; {KEPT}"
        else:
            try:
                where = self._to_s3(segment) if self.target == "s3" else self._to_volume(segment)
                self._in_a_row = 0
            except WorkerError as exc:
                self._in_a_row += 1
                self._last_failure = time.monotonic()
                self._failed += 1
                self._reasons.append(exc.message)
                note = f"segment {segment.index} not delivered: {exc.message}; {KEPT}"
        if where is not None:
            event.update(where)
            self._published += 1
            self._bytes += size
            if "url" in where:
                self._entries[segment.index] = _Entry(float(segment.duration_s), where["url"])
            elif "path" in where:
                self._entries[segment.index] = _Entry(float(segment.duration_s), segment_name(segment.index))
            self._events[segment.index] = event
            if event.get("resumed") and self.target == "s3":
                self._playlist_dirty = True  # the earlier run's playlist stands until the next new segment
            elif self.target != "inline":
                note = self._write_playlist(ended=False) or note
        event.update(self.playlist_where())
        if note:
            event["note"] = note
            log.warning("job %s: %s", self.job_id, note)
        else:
            log.info(
                "job %s: segment %d of %d %s (%s, %.0f KB) in %.2f s",
                self.job_id,
                segment.index,
                segment.total,
                "announced again" if event.get("resumed") else "delivered",
                self.target,
                size / 1e3,
                time.perf_counter() - started,
            )

    def _reannounce(self, segment: SegmentLike, earlier: Mapping[str, Any]) -> dict[str, Any] | None:
        """Where an earlier run of this job already delivered ``segment`` (the same name and size), or None when it
        did not (or it is gone)."""
        name = segment_name(segment.index)
        if earlier.get("bytes") != Path(segment.path).stat().st_size:
            return None
        if self.target == "s3" and earlier.get("key") == self.key(name):
            if self._playlist_url is None:  # the earlier run's playlist, until this run writes it again
                self._playlist_url = self._presign(self.key(PLAYLIST_NAME))
            return {"url": self._presign(self.key(name))}
        if self.target == "volume" and earlier.get("path") == str(self.folder / name):
            target = self.folder / name
            if target.is_file() and target.stat().st_size == earlier["bytes"]:
                return {"path": str(target)}
        return None  # inline: nothing was kept; sending it again costs no upload

    def _to_s3(self, segment: SegmentLike) -> dict[str, Any]:
        key = self.key(segment_name(segment.index))
        try:
            data = Path(segment.path).read_bytes()
        except OSError as exc:
            raise WorkerError("E_UPLOAD", f"cannot read {segment.path} ({exc.strerror or exc})") from None
        upload_with_retries(
            lambda: self.client.put_object(Bucket=self.s3.bucket, Key=key, Body=data, ContentType=SEGMENT_CONTENT_TYPE),
            self.s3.bucket,
            key,
            self.tries,
            deadline_s=self.deadline_s,
            backoff_s=self.backoff_s,
        )
        return {"url": self._presign(key)}

    def _presign(self, key: str) -> str:
        return presign(self.client, self.s3.bucket, key, self.config.presign_expiry_s)

    def _to_volume(self, segment: SegmentLike) -> dict[str, Any]:
        target = self.folder / segment_name(segment.index)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(segment.path, partial)
            os.replace(partial, target)  # a reader never sees half a segment
        except OSError as exc:
            raise WorkerError("E_UPLOAD", f"cannot write {target} ({exc.strerror or exc})") from None
        return {"path": str(target)}

    def _write_playlist(self, ended: bool) -> str | None:
        """Write or upload the playlist; a note when that failed (the segments themselves are delivered)."""
        text = playlist_text(self._entries, ended)
        if self.target == "s3":
            key = self.key(PLAYLIST_NAME)
            try:
                upload_with_retries(
                    lambda: self.client.put_object(
                        Bucket=self.s3.bucket,
                        Key=key,
                        Body=text.encode(),
                        ContentType=PLAYLIST_CONTENT_TYPE,
                        CacheControl="no-cache",
                    ),
                    self.s3.bucket,
                    key,
                    self.tries,
                    deadline_s=self.deadline_s,
                    backoff_s=self.backoff_s,
                )
            except WorkerError as exc:
                return self._playlist_failure(exc.message)
            if self._playlist_url is None:
                self._playlist_url = self._presign(key)
        elif self.target == "volume":
            target = self.folder / PLAYLIST_NAME
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".part")
                partial.write_text(text)
                os.replace(partial, target)
            except OSError as exc:
                return self._playlist_failure(f"cannot write {target} ({exc.strerror or exc})")
        self._playlist_dirty = False
        return None

    def _playlist_failure(self, message: str) -> str:
        self._playlist_dirty = True
        self._playlist_failed += 1
        if not any(r.startswith("the playlist") for r in self._reasons):
            self._reasons.append(f"the playlist was not updated: {message}")
        return f"the playlist was not updated: {message}"

    def finish(self) -> dict[str, Any]:
        """End the playlist (``#EXT-X-ENDLIST``) once every segment is published; returns ``summary()``."""
        if self.target != "inline" and self._entries and not self._finished:
            started = time.perf_counter()
            note = self._write_playlist(ended=True)
            self._seconds += time.perf_counter() - started
            if note:
                log.warning("job %s: %s", self.job_id, note)
            self._finished = True
        return self.summary()

    # --- for the result and the job's state ------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """For the result (``SegmentsSummary``, JSON-ready): counts, bytes, seconds spent publishing, playlist."""
        return SegmentsSummary(
            storage=self.target,
            published=self._published,
            resumed=self._reannounced,
            failed=self._failed,
            too_large=self._too_large,
            playlist_failed=self._playlist_failed,
            bytes=self._bytes,
            seconds=round(self._seconds, 3),
            **self.playlist_where(),
        ).model_dump(exclude_none=True)

    def warnings(self) -> list[str]:
        """At most one line for the result's ``warnings``: how many segments were not delivered while the job ran
        and the first reason."""
        if not self._reasons:
            return []
        missing = self._failed + self._too_large
        if not missing:
            return [f"streaming: {self._reasons[0]}"]
        return [
            f"streaming: {missing} of {self._total} segments were not delivered while the job ran "
            f"({self._reasons[0]}); the final video has every segment"
        ]

    def published_events(self) -> dict[int, dict[str, Any]]:
        """The delivered segments' items, to keep in the job's state (JSON-safe): no inline data and no presigned
        URLs (an S3 item keeps its ``key`` instead: a resumed run presigns it again)."""
        kept = {}
        for index, event in self._events.items():
            record = {k: v for k, v in event.items() if k not in ("base64", "url", "playlist_url", "note", "resumed")}
            if "url" in event:
                record["key"] = self.key(segment_name(index))
            if "base64" in event:
                continue
            kept[index] = record
        return kept
