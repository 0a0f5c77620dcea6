"""People followed across video frames: ids (ByteTrack-style association with box IoU and pose
OKS, a Kalman box motion model) and keypoint smoothing (One-Euro filters).

    tracker = ByteTracker(config.sigmas, track_buffer=30)
    smoother = OneEuroSmoother()
    for index, frame in enumerate(frames):
        people = smoother(tracker.update(model(frame), index), index / fps)
        people.track_ids  # (n,) int64

`RTMO.track(source)` does this over any source.
"""

from __future__ import annotations

from rtmo.track.bytetrack import ByteTracker, Track
from rtmo.track.smoothing import OneEuroSmoother

TRACKERS = {"bytetrack": ByteTracker}
SMOOTHERS = {"one-euro": OneEuroSmoother}

__all__ = ["SMOOTHERS", "TRACKERS", "ByteTracker", "OneEuroSmoother", "Track"]
