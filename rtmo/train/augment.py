"""Training augmentation on `Sample`s: arrays in, arrays out, every random choice drawn from the
numpy Generator passed in (so a sample's augmentation depends on its seed only).

RTMO's pipelines (RTMO.md §1.4): stages 1 and 2 take Mosaic -> random affine (shift 0.1,
rotation 10 deg, scale 0.75..1) -> HSV -> flip; the last stage takes the long-side fit only ->
HSV -> flip. After a warp, keypoints that leave the canvas become invisible, boxes are the clipped
hull of their warped corners, areas scale with the warp's determinant, and people with no visible
keypoint or a box under one pixel are dropped (mmpose's FilterAnnotations).
"""

from __future__ import annotations

import cv2
import numpy as np

from rtmo.config import AugmentSettings
from rtmo.preprocess import letterbox_params
from rtmo.train.data import Sample

PAD_VALUE = 114  # the canvas colour of mmpose's letterbox, Mosaic and affine


def warp(sample: Sample, matrix: np.ndarray, size: tuple[int, int]) -> Sample:
    """`sample` warped by the 2x3 `matrix` onto a (w, h) = `size` canvas, people filtered."""
    image = cv2.warpAffine(
        sample.image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3
    )
    n, k = sample.keypoints.shape[:2]
    keypoints = _apply(matrix, sample.keypoints.reshape(-1, 2)).reshape(n, k, 2)
    x1, y1, x2, y2 = sample.boxes.T
    corners = np.stack([x1, y1, x2, y1, x1, y2, x2, y2], axis=1).reshape(-1, 2)
    corners = _apply(matrix, corners).reshape(n, 4, 2)
    w, h = size
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    boxes = np.clip(boxes, 0, [w, h, w, h])
    inside = (
        (keypoints[..., 0] >= 0)
        & (keypoints[..., 0] < w)
        & (keypoints[..., 1] >= 0)
        & (keypoints[..., 1] < h)
    )
    visible = sample.visible * inside
    keypoints = keypoints * (visible > 0)[..., None]
    areas = sample.areas * abs(np.linalg.det(matrix[:, :2]))
    warped = Sample(
        image,
        boxes.astype(np.float32),
        keypoints.astype(np.float32),
        visible.astype(np.float32),
        areas.astype(np.float32),
    )
    sizes = boxes[:, 2:] - boxes[:, :2]
    return warped.select((visible > 0).any(axis=1) & (sizes >= 1).all(axis=1))


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def letterbox(sample: Sample, size: tuple[int, int]) -> Sample:
    """The long-side fit of the last stage: the very warp of prediction (rtmo.preprocess)."""
    height, width = sample.image.shape[:2]
    return warp(sample, letterbox_params((width, height), size).matrix, size)


def mosaic(samples: list[Sample], rng: np.random.Generator, size: tuple[int, int]) -> Sample:
    """Four samples around a random centre of a (2w, 2h) canvas, each fitted into (w, h) and
    touching the centre with its inner corner (YOLOX's Mosaic), cut to the canvas."""
    w, h = size
    canvas = np.full((2 * h, 2 * w, 3), PAD_VALUE, np.uint8)
    cx, cy = rng.uniform(0.5 * w, 1.5 * w), rng.uniform(0.5 * h, 1.5 * h)
    parts = []
    for quadrant, sample in enumerate(samples):
        height, width = sample.image.shape[:2]
        ratio = min(w / width, h / height)
        left = cx - ratio * width if quadrant in (0, 2) else cx
        top = cy - ratio * height if quadrant in (0, 1) else cy
        matrix = np.array([[ratio, 0.0, left], [0.0, ratio, top]])
        placed = warp(sample, matrix, (2 * w, 2 * h))
        mask = cv2.warpAffine(
            np.ones(sample.image.shape[:2], np.uint8),
            matrix,
            (2 * w, 2 * h),
            flags=cv2.INTER_NEAREST,
        ).astype(bool)
        canvas[mask] = placed.image[mask]
        parts.append(placed)
    return Sample(
        canvas,
        *(
            np.concatenate([getattr(p, f) for p in parts])
            for f in ("boxes", "keypoints", "visible", "areas")
        ),
    )


def random_affine(
    sample: Sample, rng: np.random.Generator, size: tuple[int, int], settings: AugmentSettings
) -> Sample:
    """A random shift, rotation and zoom of the long-side fit of `sample` into `size`."""
    height, width = sample.image.shape[:2]
    out_w, out_h = size
    zoom = min(out_w / width, out_h / height) / rng.uniform(*settings.scale)
    angle = rng.uniform(-settings.rotate, settings.rotate)
    shift = rng.uniform(-settings.shift, settings.shift, size=2) * (out_w, out_h)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, zoom)
    matrix[:, 2] += np.array([out_w / 2, out_h / 2]) + shift - (width / 2, height / 2)
    return warp(sample, matrix, size)


def hsv(image: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """Random additive hue, saturation and value offsets (YOLOXHSVRandomAug)."""
    deltas = rng.uniform(-1, 1, 3) * (settings.hue, settings.saturation, settings.value)
    converted = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.int16)
    converted[..., 0] = (converted[..., 0] + int(deltas[0])) % 180
    converted[..., 1:] = np.clip(converted[..., 1:] + deltas[1:].astype(np.int16), 0, 255)
    return cv2.cvtColor(converted.astype(np.uint8), cv2.COLOR_HSV2BGR)


def flip(sample: Sample, flip_indices: tuple[int, ...]) -> Sample:
    """The mirror image: keypoints at w - 1 - x with left and right swapped, boxes at w - x (the
    conventions of mmpose's RandomFlip)."""
    width = sample.image.shape[1]
    keypoints = sample.keypoints[:, list(flip_indices)].copy()
    visible = sample.visible[:, list(flip_indices)].copy()
    keypoints[..., 0] = np.where(visible > 0, width - 1 - keypoints[..., 0], 0.0)
    boxes = sample.boxes.copy()
    boxes[:, [0, 2]] = width - sample.boxes[:, [2, 0]]
    return Sample(
        np.ascontiguousarray(sample.image[:, ::-1]), boxes, keypoints, visible, sample.areas
    )


def augment(
    samples: list[Sample],
    rng: np.random.Generator,
    size: tuple[int, int],
    settings: AugmentSettings,
    flip_indices: tuple[int, ...],
    jitter: bool,
) -> Sample:
    """One training input from `samples` (four when a mosaic may be drawn, the first used
    otherwise). `jitter` False is the last stage: long-side fit, HSV and flip only."""
    if not jitter:
        sample = letterbox(samples[0], size)
    elif len(samples) == 4 and rng.random() < settings.mosaic_prob:
        sample = random_affine(mosaic(samples, rng, size), rng, size, settings)
    else:
        sample = random_affine(samples[0], rng, size, settings)
    sample.image = hsv(sample.image, rng, settings)
    if rng.random() < settings.flip_prob:
        sample = flip(sample, flip_indices)
    return sample
