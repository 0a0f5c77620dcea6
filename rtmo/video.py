"""Video in and out: frames in order with unreadable ones reported, and an output file that is
complete or absent.

FFmpeg (inside OpenCV) prints its own errors ("moov atom not found") unless told otherwise before
its first use in the process; importing this module sets OPENCV_FFMPEG_LOGLEVEL to quiet unless
the environment already sets it, since every failure to open or decode is reported here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from rtmo.sources import SourceError, atomic_output, opencv_quiet

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

# A failed read inside a file is retried on the next frame this many times in a row before the
# stream is taken to have ended: a damaged stretch of a file is skipped, a dead camera stops.
MAX_CONSECUTIVE_FAILURES = 25
DEFAULT_FPS = 30.0  # for streams that do not report theirs (most webcams report 0)
FOURCCS = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}
# H.264 is what browsers play; OpenCV writes it only where its FFmpeg has an encoder for it (the
# opencv-python wheels on PyPI have none): used for these containers when present.
H264_CONTAINERS = frozenset({".mp4", ".m4v", ".mov", ".mkv"})
CODEC_NAMES = {"avc1": "H.264", "mp4v": "MPEG-4 Part 2", "MJPG": "Motion JPEG"}

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """The items of `items`, produced by a background thread at most `depth` ahead, so that
    decoding the next frames (cv2 releases the GIL) overlaps inference on the current ones.

    An exception in the producer is raised here. Closing this generator (use
    `contextlib.closing`) stops and joins the thread.
    """
    slots: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((True, item)):
                    return
            put((True, end))
        except BaseException as err:  # handed to the consumer, which re-raises it
            put((False, err))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="rtmo-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                raise item  # type: ignore[misc]
            if item is end:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


class VideoReader:
    """Frames of a video file or a camera, as (index, BGR uint8 frame), in order.

    A file's frame index is its position in the container, found from the frame's timestamp:
    OpenCV silently skips some damaged frames (an AVI's empty frame chunks, for one), so counting
    the frames read would give every later frame the index of the one before it. Frames that
    cannot be decoded, or that OpenCV skipped, are left out; their indices are in `unreadable`.
    """

    def __init__(self, source: str | Path | int) -> None:
        self.name = str(source)
        with opencv_quiet():
            self._capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
        if not self._capture.isOpened():
            kind = "camera" if isinstance(source, int) else "video"
            raise SourceError(f"{self.name}: cannot open {kind}")
        self.is_camera = isinstance(source, int)
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else DEFAULT_FPS
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not self.is_camera else None
        # Timestamps give positions only for a file whose container states its frame rate.
        self._timed = not self.is_camera and fps > 0
        self.unreadable: list[int] = []

    @property
    def seekable(self) -> bool:
        """Whether `read_range` can start inside the file: its container states a frame rate and
        a length, so that frames have positions."""
        return self._timed and self.frame_count is not None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self._frames(0, None)

    def read_range(self, start: int, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """The frames whose container positions lie in [start, stop) (stop None: to the end, as
        iterating the whole file goes), with the same positions and `unreadable` entries that
        iterating the whole file gives them: how a video is split into independent tasks.

        The capture seeks to `start` first; where the seek lands late (a codec whose seek
        overshoots, or a damaged frame at `start`), it reads from the beginning instead, so a
        range never loses a frame that the whole-file reading would have given. A file whose
        container states no frame rate or length has no positions to seek to: ValueError.
        """
        if start > 0:
            if not self.seekable:
                raise ValueError(f"{self.name}: no frame rate or length, cannot seek to {start}")
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        return self._frames(start, stop)

    def _frames(self, start: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
        limit = self.frame_count if stop is None else stop
        expected, failures = start, 0  # the position the next frame should have
        past_stop, rewound = False, False
        try:
            while limit is None or expected < limit:
                ok, frame = self._capture.read()
                if ok and frame is not None:
                    failures = 0
                    if expected == start > 0:  # the first frame after the seek
                        landed = self._timestamp_position()
                        if landed is not None and landed < start:
                            continue  # the seek went to an earlier keyframe: read on to start
                        if landed is not None and landed > start and not rewound:
                            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                            rewound = True
                            continue
                    index = self._position(expected)
                    if stop is not None and index >= stop:
                        past_stop = True  # the frame belongs to the next range
                        break
                    self.unreadable.extend(range(expected, index))
                    yield index, frame
                    expected = index + 1
                    continue
                failures += 1
                # Past the reported length (or with none) a failed read is the end of stream.
                if self.frame_count is None or failures >= MAX_CONSECUTIVE_FAILURES:
                    break
                if not self._timed:
                    self.unreadable.append(expected)
                    expected += 1
                # else the next frame's timestamp tells how many positions the failure took
            if limit is not None and (failures or past_stop):
                self.unreadable.extend(range(expected, limit))
        finally:
            self.close()

    def _position(self, expected: int) -> int:
        """The container position of the frame just read (at least `expected`)."""
        landed = self._timestamp_position()
        return expected if landed is None else max(expected, landed)

    def _timestamp_position(self) -> int | None:
        """The position the timestamp of the frame just read gives, or None where there is none."""
        if not self._timed:
            return None
        milliseconds = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        if not np.isfinite(milliseconds) or milliseconds < 0:
            return None
        return round(milliseconds * self.fps / 1000.0)

    def close(self) -> None:
        self._capture.release()


@functools.cache
def h264_available() -> bool:
    """Whether this OpenCV can write H.264 ("avc1") video: a one-frame file is tried."""
    with tempfile.TemporaryDirectory() as tmp, opencv_quiet():
        path = Path(tmp) / "probe.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"avc1"), 25.0, (64, 64))
        opened = writer.isOpened()
        if opened:
            writer.write(np.zeros((64, 64, 3), np.uint8))
        writer.release()
        return opened and path.exists() and path.stat().st_size > 0


def video_codec(suffix: str) -> str:
    """The fourcc written for a file suffix: avc1 (H.264) where OpenCV has it and the container
    takes it, else FOURCCS' choice (mp4v for .mp4)."""
    suffix = suffix.lower()
    if suffix in H264_CONTAINERS and h264_available():
        return "avc1"
    return FOURCCS.get(suffix, "mp4v")


def describe_codec(fourcc: str) -> str:
    """E.g. "avc1 (H.264)", or for mp4v a note that browsers may not play it."""
    text = f"{fourcc} ({CODEC_NAMES.get(fourcc, fourcc)})"
    if fourcc == "mp4v":
        text += "; this OpenCV has no H.264 encoder, so web browsers may not play the file"
    return text


@contextlib.contextmanager
def video_writer(path: Path, fps: float, keep_on_interrupt: bool = False) -> Iterator[FrameWriter]:
    """A writer whose file appears at `path` only when the block completes; on an error the partial
    file is deleted. On an interrupt (KeyboardInterrupt) it is deleted too, unless
    `keep_on_interrupt`: then the frames written so far (each one whole) are kept as the video."""
    keep_on = (KeyboardInterrupt,) if keep_on_interrupt else ()
    with atomic_output(path, keep_on) as tmp:
        writer = FrameWriter(tmp, fps)
        try:
            yield writer
        finally:
            writer.close()  # finishes the container (an mp4's index), so the frames are playable
            if writer.frames_written == 0:
                tmp.unlink(missing_ok=True)
        if writer.frames_written == 0:
            raise SourceError(f"{path}: no frame to write")


class FrameWriter:
    """cv2.VideoWriter opened on the first frame (its size is that frame's), in the codec of
    `video_codec` (`codec`)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.codec = video_codec(path.suffix)
        self.frames_written = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*self.codec)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, size)
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: cannot open a video writer for {self.path.suffix}")
            self._size = size
        elif size != self._size:
            raise ValueError(f"frame size {size} differs from the video's {self._size}")
        self._writer.write(frame)
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
