"""Temporal smoothing of tracked keypoints: a One-Euro filter per keypoint per track.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a low-pass filter whose cutoff rises
with speed: a still keypoint is smoothed hard (its jitter is removed), a fast one barely (it does
not lag). Here the speed is measured in person sizes per second (the box's longer side), so one
`beta` suits a person 50 pixels tall and one 1000 pixels tall.

A track's first frame, and its first frame after frames without it, are returned unchanged and
restart its filter: smoothing never drags a new or re-found person towards an old position.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from rtmo.results import Poses

# Defaults chosen on the tracking benchmark's walking people (benchmarks/tracking.py, tuning seeds):
# jitter (frame-to-frame acceleration) / error against the true keypoints, in % of person height,
# raw -> smoothed: 10.1 / 4.0 -> 4.0 / 3.4 at 25 fps, 3.6 / 3.3 at 30 fps, 2.4 / 2.8 at 60 fps.
# beta 1 removed more jitter (2.5 at 30 fps) but lagged: error 4.2, above the raw 4.0.
DEFAULT_MIN_CUTOFF = 1.0  # Hz: the cutoff of a still keypoint
DEFAULT_BETA = 3.0  # Hz per (person size per second): how fast the cutoff rises with speed
DEFAULT_D_CUTOFF = 1.0  # Hz: the cutoff of the speed estimate itself (the paper's value)


def _smoothing_factor(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """The exponential smoothing factor of a first-order low-pass at `cutoff` Hz, step `dt` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


@dataclass
class _TrackState:
    position: np.ndarray  # (K, 2) filtered keypoints
    velocity: np.ndarray  # (K, 2) filtered velocity, pixels per second
    time: float  # seconds


class OneEuroSmoother:
    """Smooths the keypoints of tracked people, one One-Euro filter per keypoint per track id.

    min_cutoff (Hz): cutoff frequency of a still keypoint; lower removes more jitter.
    beta: how fast the cutoff rises with speed (Hz per person size per second); higher follows
        fast motion more closely.
    d_cutoff (Hz): cutoff of the speed estimate.

    Call it once per frame, in order, with the frame's tracked `Poses` (with `track_ids`) and the
    frame's time in seconds; it returns a copy with smoothed keypoints.
    """

    def __init__(
        self,
        min_cutoff: float = DEFAULT_MIN_CUTOFF,
        beta: float = DEFAULT_BETA,
        d_cutoff: float = DEFAULT_D_CUTOFF,
    ) -> None:
        for name, value in {"min_cutoff": min_cutoff, "d_cutoff": d_cutoff}.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive frequency (Hz), got {value}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forgets every track (a new video)."""
        self._states: dict[int, _TrackState] = {}
        self._last_time: float | None = None

    def __call__(self, poses: Poses, time: float) -> Poses:
        if poses.track_ids is None:
            raise ValueError("poses have no track_ids: smoothing needs tracked people (RTMO.track)")
        if self._last_time is not None and not time > self._last_time:
            raise ValueError(
                f"time {time} s does not come after the last frame ({self._last_time} s)"
            )
        keypoints = poses.keypoints.astype(np.float64)
        sizes = np.maximum(poses.boxes[:, 2:] - poses.boxes[:, :2], 1.0).max(axis=1)
        states: dict[int, _TrackState] = {}
        for i, track_id in enumerate(poses.track_ids.tolist()):
            state = self._states.get(track_id)
            if state is None or state.time != self._last_time:
                # New, or back after frames without it: start from where it is now.
                state = _TrackState(keypoints[i], np.zeros_like(keypoints[i]), time)
            else:
                state = self._step(state, keypoints[i], float(sizes[i]), time)
            states[track_id] = state
            keypoints[i] = state.position
        self._states, self._last_time = states, time
        return dataclasses.replace(poses, keypoints=keypoints.astype(np.float32))

    def _step(self, state: _TrackState, position: np.ndarray, size: float, time: float):
        dt = time - state.time
        raw_velocity = (position - state.position) / dt
        velocity = state.velocity + _smoothing_factor(self.d_cutoff, dt) * (
            raw_velocity - state.velocity
        )
        speed = np.linalg.norm(velocity, axis=-1, keepdims=True) / size  # sizes per second
        factor = _smoothing_factor(self.min_cutoff + self.beta * speed, dt)
        smoothed = state.position + factor * (position - state.position)
        return _TrackState(smoothed, velocity, time)
