"""People followed across video frames: ids (ByteTrack-style association with box IoU and pose
OKS, a Kalman box motion model) and keypoint smoothing (One-Euro filters).

    tracker = ByteTracker(config.sigmas, track_buffer=30)
    smoother = OneEuroSmoother()
    for index, frame in enumerate(frames):
        people = smoother(tracker.update(model(frame), index), index / fps)
        people.track_ids  # (n,) int64

`RTMO.track(source)` does this over any source. The classes are imported on first use, so the
command line can list the names below without importing NumPy or SciPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

TRACKERS = ("bytetrack",)
SMOOTHERS = ("one-euro",)

__all__ = ["SMOOTHERS", "TRACKERS", "ByteTracker", "OneEuroSmoother", "TrackingPipeline"]

if TYPE_CHECKING:
    from rtmo.track.bytetrack import ByteTracker
    from rtmo.track.pipeline import TrackingPipeline
    from rtmo.track.smoothing import OneEuroSmoother

_LAZY = {
    "ByteTracker": "rtmo.track.bytetrack",
    "OneEuroSmoother": "rtmo.track.smoothing",
    "TrackingPipeline": "rtmo.track.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rtmo.track' has no attribute {name!r}")
