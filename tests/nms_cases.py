"""Inputs shared by the NMS tests: boxes clustered like real detections (several people, many
overlapping candidates per person)."""

from __future__ import annotations

import torch


def clustered_boxes(
    n: int, people: int = 6, seed: int = 0, tie_levels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """boxes (Tensor[n, 4]) xyxy in a 640 px image, scores (Tensor[n]) in (0, 1).

    tie_levels: when set, scores are rounded to that many distinct values, creating exact ties.
    """
    gen = torch.Generator().manual_seed(seed)
    centers = torch.rand(people, 2, generator=gen) * 560 + 40
    sizes = torch.rand(people, 2, generator=gen) * 160 + 40
    person = torch.randint(0, people, (n,), generator=gen)
    jitter = torch.randn(n, 2, generator=gen) * 0.08 * sizes[person]
    wh = sizes[person] * (1 + 0.15 * torch.randn(n, 2, generator=gen)).clamp(min=0.3)
    xy = centers[person] + jitter
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    scores = torch.rand(n, generator=gen) * 0.98 + 0.01
    if tie_levels is not None:
        scores = (scores * tie_levels).floor() / tie_levels + 0.01
    return boxes, scores


def iou_matrix(boxes: torch.Tensor) -> torch.Tensor:
    """Plain float64 IoU matrix (no +1), for property checks independent of the kernels."""
    b = boxes.double()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))
