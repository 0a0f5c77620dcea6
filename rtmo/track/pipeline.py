"""A tracker and an optional smoother run together over the frames of one or more sources: the
state behind `RTMO.track`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rtmo.results import Poses
from rtmo.stream import FrameInfo
from rtmo.track import SMOOTHERS, TRACKERS
from rtmo.track.bytetrack import ByteTracker
from rtmo.track.smoothing import OneEuroSmoother
from rtmo.video import DEFAULT_FPS


class TrackingPipeline:
    """Ids (and smoothed keypoints) for the people of consecutive frames.

    Each video or webcam starts with no track (its people get new ids; ids never repeat within a
    pipeline); images and in-memory frames continue the tracks of the frames before them, as the
    frames of one sequence. `fps` is the frame rate assumed for smoothing where a source states
    none (images, arrays).
    """

    def __init__(
        self,
        tracker: ByteTracker,
        smoother: OneEuroSmoother | None = None,
        fps: float | None = None,
    ) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.tracker, self.smoother = tracker, smoother
        self.fps = fps or DEFAULT_FPS
        self._source: tuple[int, int] | None = None
        self._calls = 0

    @classmethod
    def create(
        cls,
        sigmas: Sequence[float],
        tracker: str = "bytetrack",
        smooth: str | None = None,
        smooth_min_cutoff: float | None = None,
        smooth_beta: float | None = None,
        fps: float | None = None,
        **tracker_options: Any,
    ) -> TrackingPipeline:
        """A pipeline by names: tracker "bytetrack" (options of `ByteTracker`), smooth None or
        "one-euro" (min_cutoff and beta of `OneEuroSmoother`, its defaults where None)."""
        if tracker not in TRACKERS:
            raise ValueError(f"tracker must be one of {TRACKERS}, got {tracker!r}")
        if smooth is not None and smooth not in SMOOTHERS:
            raise ValueError(f"smooth must be None or one of {SMOOTHERS}, got {smooth!r}")
        smoothing = {"min_cutoff": smooth_min_cutoff, "beta": smooth_beta}
        smoothing = {k: v for k, v in smoothing.items() if v is not None}
        if smoothing and smooth is None:
            raise ValueError("smooth_min_cutoff and smooth_beta need smooth='one-euro'")
        smoother = OneEuroSmoother(**smoothing) if smooth else None
        return cls(ByteTracker(sigmas, **tracker_options), smoother, fps)

    def run(
        self, frames: Iterator[tuple[FrameInfo, Poses | None]]
    ) -> Iterator[tuple[FrameInfo, Poses | None]]:
        """(frame, tracked people) for every (frame, people) of a stream, in order (frames that
        could not be read pass through with None)."""
        self._calls += 1
        call = self._calls
        for frame, poses in frames:
            if poses is None:
                yield frame, None
                continue
            if frame.kind in ("video", "webcam") and self._source != (call, frame.source_index):
                self._source = (call, frame.source_index)
                self.reset()
            timed = frame.kind in ("video", "webcam")
            yield frame, self.update(poses, frame.index if timed else None, frame.fps)

    def update(self, poses: Poses, index: int | None = None, fps: float | None = None) -> Poses:
        """The tracked (and smoothed) people of the next frame; `index` is its frame number in
        its video (None: the frame after the last one)."""
        tracked = self.tracker.update(poses, index)
        if self.smoother is None:
            return tracked
        return self.smoother(tracked, self.tracker.frame / (fps or self.fps))

    def reset(self) -> None:
        """Forgets every track (ids go on counting)."""
        self.tracker.reset()
        if self.smoother is not None:
            self.smoother.reset()
