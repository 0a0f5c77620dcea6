"""Constant-velocity Kalman filter of person boxes, batched over tracks.

State (8,): centre x, centre y, width, height and their velocities per frame. Width and height are
filtered separately (not as an aspect ratio): a person's aspect ratio changes with every stride and
raised arm, and a separate width follows that without disturbing the height. The noise of each
coordinate is proportional to the box size along its axis, so one setting fits a 40-pixel person
and a 1000-pixel one.
"""

from __future__ import annotations

import numpy as np

# Standard deviations as fractions of the box size: measurement and position noise 1/20, velocity
# noise 1/160 per frame (the values of ByteTrack and BoT-SORT, tuned there on MOT17 pedestrians).
POSITION_STD = 1.0 / 20.0
VELOCITY_STD = 1.0 / 160.0
# A new track knows its position from one box and nothing of its velocity: wider initial spreads.
INITIAL_POSITION_FACTOR = 2.0
INITIAL_VELOCITY_FACTOR = 10.0

_STATE = 8
_MOTION = np.eye(_STATE) + np.eye(_STATE, k=4)  # x' = x + v (one frame)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) x1, y1, x2, y2 -> (n, 4) centre x, centre y, width, height."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + size / 2, size], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) centre x, centre y, width, height -> (n, 4) x1, y1, x2, y2."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def _size_scale(sizes: np.ndarray) -> np.ndarray:
    """(n, 2) width, height -> (n, 4) the scale of x, y, w, h: w, h, w, h (at least 1 pixel)."""
    sizes = np.maximum(sizes, 1.0)
    return np.concatenate([sizes, sizes], axis=1)


def initiate(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from their first boxes (n, 4) xyxy -> mean (n, 8), covariance (n, 8, 8)."""
    measured = xyxy_to_cxcywh(boxes)
    mean = np.concatenate([measured, np.zeros_like(measured)], axis=1)
    scale = _size_scale(measured[:, 2:])
    std = np.concatenate(
        [
            INITIAL_POSITION_FACTOR * POSITION_STD * scale,
            INITIAL_VELOCITY_FACTOR * VELOCITY_STD * scale,
        ],
        axis=1,
    )
    return mean, _diagonal(std**2)


def predict(mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead: mean (n, 8), covariance (n, 8, 8) -> the same, predicted."""
    scale = _size_scale(mean[:, 2:4])
    noise = _diagonal(np.concatenate([POSITION_STD * scale, VELOCITY_STD * scale], axis=1) ** 2)
    mean = mean @ _MOTION.T
    covariance = _MOTION @ covariance @ _MOTION.T + noise
    return mean, covariance


def update(
    mean: np.ndarray, covariance: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Corrects predicted states (n, 8), (n, 8, 8) with their matched boxes (n, 4) xyxy."""
    measured = xyxy_to_cxcywh(boxes)
    noise = _diagonal((POSITION_STD * _size_scale(mean[:, 2:4])) ** 2)
    projected = covariance[:, :4, :4] + noise  # H P H^T + R
    cross = covariance[:, :, :4]  # P H^T, (n, 8, 4)
    # Kalman gain K = P H^T S^-1, solved as S K^T = H P (S is symmetric).
    gain = np.linalg.solve(projected, np.swapaxes(cross, 1, 2)).swapaxes(1, 2)
    innovation = measured - mean[:, :4]
    mean = mean + np.einsum("nij,nj->ni", gain, innovation)
    covariance = covariance - gain @ projected @ np.swapaxes(gain, 1, 2)
    return mean, covariance


def boxes_of(mean: np.ndarray) -> np.ndarray:
    """The boxes (n, 4) xyxy of states (n, 8)."""
    return cxcywh_to_xyxy(mean[:, :4])


def _diagonal(values: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d, d) diagonal matrices."""
    out = np.zeros((*values.shape, values.shape[-1]))
    index = np.arange(values.shape[-1])
    out[:, index, index] = values
    return out
