"""How alike a tracked person and a detected person are: box IoU, pose OKS, and the two combined.

Boxes overlap heavily whenever two people cross or stand side by side, so IoU alone cannot tell
them apart there; their poses still differ (limbs, height, gait phase), which OKS measures on the
scale of each person.
"""

from __future__ import annotations

import numpy as np

# COCO's `area` is the person's segmentation area; where only a box is known it is taken as 0.53 of
# the box area, the factor mmpose and RTMO's training use for the same purpose.
BOX_TO_AREA = 0.53
# The OKS scale of a tracked person is taken from the longer side L of their box, as the area of a
# standing person's box (0.4 L x L): a box cut by the picture's edge, or narrowing as the arms come
# down, keeps the scale of the whole person (the width alone shrank a person leaving the picture to
# a third of their scale in the tracking benchmark, and their OKS to nothing).
SIDE_TO_WIDTH = 0.4


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every pair: boxes_a (N, 4), boxes_b (M, 4) x1, y1, x2, y2 -> (N, M) in [0, 1].

    Degenerate boxes (zero or negative area) have IoU 0 with everything.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def pose_oks(
    keypoints_a: np.ndarray,
    visible_a: np.ndarray,
    boxes_a: np.ndarray,
    keypoints_b: np.ndarray,
    visible_b: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """Object keypoint similarity of every pair, on the scale of the people of `a`.

    keypoints_a (N, K, 2), visible_a (N, K) bool, boxes_a (N, 4): the reference people (tracks),
    whose box gives the area A = 0.53 * 0.4 * L^2 (L its longer side); keypoints_b (M, K, 2),
    visible_b (M, K) bool: the detections; sigmas (K,): the keypoint set's OKS sigmas.

    OKS = mean over the keypoints visible in both of exp(-d^2 / (2 * A * (2 * sigma)^2)), as in
    COCO's evaluation. Returns (N, M); NaN where a pair has no keypoint visible in both.
    """
    a = np.asarray(keypoints_a, dtype=np.float64)
    b = np.asarray(keypoints_b, dtype=np.float64)
    boxes = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    longer = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).max(axis=1)
    area = np.maximum(BOX_TO_AREA * SIDE_TO_WIDTH * longer**2, 1.0)  # never divide by zero
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    squared = ((a[:, None] - b[None]) ** 2).sum(-1)  # (N, M, K)
    similarity = np.exp(-squared / (2.0 * area[:, None, None] * variances))
    both = np.asarray(visible_a, bool)[:, None] & np.asarray(visible_b, bool)[None]
    count = both.sum(-1)
    total = np.where(both, similarity, 0.0).sum(-1)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def combined_similarity(
    iou: np.ndarray, oks: np.ndarray, oks_weight: float | np.ndarray
) -> np.ndarray:
    """(1 - w) * IoU + w * OKS per pair, IoU alone where the OKS is NaN (no shared keypoint).

    oks_weight: a number, or an array broadcasting to the pairs (e.g. (N, 1): one per track).
    """
    blend = (1.0 - oks_weight) * iou + oks_weight * np.nan_to_num(oks)
    return np.where(np.isnan(oks), iou, blend)
