"""Frames from any source, lazily, and the people in them: what `RTMO.stream` and `RTMO.track`
run on.

Sources are resolved up front (a missing file or a pattern matching nothing fails before any work),
then read, decoded and letterboxed in batches by a background thread a couple of batches ahead of
the network; at any moment only the batch being run and those prepared ahead are in memory,
however long the video.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from rtmo.results import Poses
from rtmo.sources import Source, SourceError, read_image, resolve_sources
from rtmo.video import DEFAULT_FPS, VideoReader, prefetch

ON_ERROR = ("warn", "raise", "yield")
# Batches read and letterboxed ahead of the network: one keeps the network busy while the next is
# prepared; a second absorbs a slow read (a large image, a keyframe) without stalling it.
PREFETCH_BATCHES = 2
# What `prepare` makes of a batch's images for `run` (the predictor's letterboxed batch).
Prepared = TypeVar("Prepared")


@dataclass(frozen=True)
class FrameInfo:
    """Where a frame comes from.

    source: the input as given ("clip.mp4", "photos/", "b/*.png", "0", "array").
    source_index: the position of that input among those given (a pattern's videos share one).
    kind: "image" (a file), "video", "webcam" or "array" (an image passed in memory).
    index: the frame's position in its video (the container's, so frames after an unreadable
        one keep theirs) or webcam stream; the image's position among its input's images.
    path: the image file or the video file; None for webcams and arrays.
    image: the BGR uint8 frame (H, W, 3) (for "array", what was passed); None when it could not
        be read.
    fps: the frame rate of a video or webcam; None for images.
    error: why the frame could not be read; None when it was.
    total: the number of frames (the container's count) or images of its source; None for a
        webcam.
    """

    source: str
    source_index: int
    kind: str
    index: int
    path: Path | None
    image: np.ndarray | None = field(repr=False)
    fps: float | None = None
    error: str | None = None
    total: int | None = None

    @property
    def time(self) -> float:
        """Seconds since the start of the frame's video (images: as if at DEFAULT_FPS)."""
        return self.index / (self.fps or DEFAULT_FPS)


StreamInput = str | os.PathLike | int | np.ndarray | torch.Tensor | Source
_Input = tuple[int, str, Source | np.ndarray | torch.Tensor]


def resolve_inputs(source: StreamInput | Sequence[StreamInput]) -> list[_Input]:
    """(source_index, text, Source or in-memory image) for each input of `source`: a path, glob,
    webcam index, image array, (3, H, W) tensor or resolved `Source`, or a list of these."""
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise SourceError("no source given")
    inputs: list[_Input] = []
    for n, item in enumerate(items):
        if isinstance(item, Source):  # already resolved
            text = item.name if item.path is None and item.camera is None else item.path
            inputs.append((n, str(item.camera if item.camera is not None else text), item))
            continue
        if isinstance(item, torch.Tensor) and item.dim() != 3:
            raise ValueError(f"source[{n}]: an image tensor must be (3, H, W), got {item.shape}")
        if isinstance(item, (np.ndarray, torch.Tensor)):
            inputs.append((n, "array", item))
            continue
        for resolved in resolve_sources(item):
            inputs.append((n, str(item), resolved))
    return inputs


def iter_frames(inputs: Sequence[_Input]) -> Iterator[FrameInfo]:
    """Every frame of `inputs` in order, decoded one at a time; frames that cannot be read come
    with their `error` set (in their place: a damaged video frame between its neighbours)."""
    for source_index, text, item in inputs:
        if not isinstance(item, Source):
            yield FrameInfo(text, source_index, "array", 0, None, item, total=1)
        elif item.kind in ("video", "webcam"):
            yield from video_frames(source_index, text, item)
        else:
            for i, path in enumerate(item.images):
                try:
                    image, error = read_image(path), None
                except SourceError as err:
                    image, error = None, str(err)
                total = len(item.images)
                yield FrameInfo(text, source_index, "image", i, path, image, None, error, total)


def video_frames(
    source_index: int, text: str, source: Source, start: int = 0, stop: int | None = None
) -> Iterator[FrameInfo]:
    """The frames of a video or webcam source in order, unreadable ones in their place; of a
    video file, only those at positions [start, stop) when given (`VideoReader.read_range`)."""
    webcam = source.kind == "webcam"
    reader = VideoReader(source.camera if webcam else source.path)
    kind, path = ("webcam", None) if webcam else ("video", source.path)

    total = reader.frame_count

    def unreadable(index: int) -> FrameInfo:
        message = f"{source.path or text}: frame {index} cannot be decoded"
        return FrameInfo(text, source_index, kind, index, path, None, reader.fps, message, total)

    whole = start == 0 and stop is None
    expected = start
    try:
        for index, frame in reader if whole else reader.read_range(start, stop):
            for missing in range(expected, index):
                yield unreadable(missing)
            yield FrameInfo(text, source_index, kind, index, path, frame, reader.fps, None, total)
            expected = index + 1
    finally:
        reader.close()
    for missing in reader.unreadable:
        if missing >= expected:
            yield unreadable(missing)


def predict_stream(
    prepare: Callable[[list[Any]], Prepared],
    run: Callable[[Prepared], list[Poses]],
    inputs: Sequence[_Input],
    batch_size: int,
    on_error: str = "warn",
) -> Iterator[tuple[FrameInfo, Poses | None]]:
    """(frame, people) for every frame of `inputs`, in order, `batch_size` frames per forward.

    A background thread reads the frames and `prepare`s each batch (decode and letterbox: its
    readable images in, what `run` takes out) up to PREFETCH_BATCHES batches ahead, while `run`
    (the network and the post-process) works on the current batch here. Webcam frames go one at
    a time (a live stream must not wait for a batch to fill). An unreadable frame: warned about and
    skipped ("warn"), raised as SourceError ("raise"), or yielded with no people and its `error`
    set ("yield"), in its place; an exception of `prepare` is raised after the batches before it.
    Closing the generator stops and joins the thread.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return predict_frames(prepare, run, iter_frames(inputs), batch_size, on_error)


def predict_frames(
    prepare: Callable[[list[Any]], Prepared],
    run: Callable[[Prepared], list[Poses]],
    frames: Iterator[FrameInfo],
    batch_size: int,
    on_error: str,
) -> Iterator[tuple[FrameInfo, Poses | None]]:
    """`predict_stream` on frames already made (arguments checked by the caller)."""
    batches = _prepared_batches(prepare, _frame_batches(frames, batch_size))
    with contextlib.closing(prefetch(batches, depth=PREFETCH_BATCHES)) as ready:
        for batch, prepared in ready:
            yield from _run_batch(run, batch, prepared, on_error)


def _frame_batches(frames: Iterator[FrameInfo], batch_size: int) -> Iterator[list[FrameInfo]]:
    """`frames` in batches of `batch_size`, a webcam frame closing its batch at once."""
    batch: list[FrameInfo] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= batch_size or frame.kind == "webcam":
            yield batch
            batch = []
    if batch:
        yield batch


def _prepared_batches(
    prepare: Callable[[list[Any]], Prepared], batches: Iterator[list[FrameInfo]]
) -> Iterator[tuple[list[FrameInfo], Prepared | None]]:
    """Each batch with its readable images prepared (None when it has none)."""
    for batch in batches:
        readable = [frame.image for frame in batch if frame.error is None]
        yield batch, prepare(readable) if readable else None


def _run_batch(
    run: Callable[[Prepared], list[Poses]],
    batch: list[FrameInfo],
    prepared: Prepared | None,
    on_error: str,
) -> Iterator[tuple[FrameInfo, Poses | None]]:
    results = iter(run(prepared) if prepared is not None else [])
    for frame in batch:
        if frame.error is None:
            yield frame, next(results)
        elif on_error == "raise":
            raise SourceError(frame.error)
        elif on_error == "warn":
            warnings.warn(f"{frame.error}; skipped", UserWarning, stacklevel=4)
        else:
            yield frame, None
