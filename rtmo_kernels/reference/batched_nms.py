"""Readable greedy NMS in PyTorch: the specification of `rtmo::batched_nms` and the test oracle.

Every backend takes the same decisions because they compute the same fp32 operations in the same
order: `area = (x2 - x1) * (y2 - y1)`, `inter = clamp(min(x2) - max(x1), 0) * clamp(..., 0)`,
`union = (area_a + area_b) - inter`, suppress when `union > 0 and inter / union > iou_threshold`
(threshold rounded to fp32). Pairs whose union is not > 0 (zero-area or NaN boxes) never suppress.
"""

from __future__ import annotations

import torch


def pairwise_iou_exceeds(boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """(n, n) bool: [a, b] is True when box a would suppress box b; boxes (Tensor[n, 4]) fp32."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, None], x2[None, :]) - torch.maximum(x1[:, None], x1[None, :])).clamp(0)
    h = (torch.minimum(y2[:, None], y2[None, :]) - torch.maximum(y1[:, None], y1[None, :])).clamp(0)
    inter = w * h
    union = (area[:, None] + area[None, :]) - inter
    threshold = torch.tensor(iou_threshold, dtype=torch.float32)
    # NaN coordinates: min/max may drop the NaN, but the area (and so the union) stays NaN.
    return (union > 0) & (inter / union > threshold)


def score_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices of the non-NaN scores, by decreasing score, equal scores by increasing index."""
    finite = torch.nonzero(~torch.isnan(scores)).flatten()
    # -0.0 and +0.0 are equal to the comparison sort; the stable sort keeps index order for ties.
    order = torch.sort(scores[finite], descending=True, stable=True).indices
    return finite[order]


def greedy_keep(suppresses: torch.Tensor, limit: int | None = None) -> list[int]:
    """Positions kept by the greedy scan over rank-sorted rows; suppresses (Tensor[n, n] bool).

    The best remaining candidate is kept and removes every candidate it suppresses, until none
    remain or `limit` are kept.
    """
    remaining = torch.ones(suppresses.shape[0], dtype=torch.bool)
    kept: list[int] = []
    while limit is None or len(kept) < limit:
        candidates = torch.nonzero(remaining)
        if len(candidates) == 0:
            break
        best = int(candidates[0])
        kept.append(best)
        remaining &= ~suppresses[best]
        remaining[best] = False
    return kept


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy NMS per idx; see `rtmo_kernels.batched_nms` for the contract.

    boxes (Tensor[M, 4]) xyxy, scores (Tensor[M]), idxs (Tensor[M]) integers -> keep (Tensor[L])
    int64, indices into the inputs by decreasing score. NaN scores are never kept.
    """
    order = score_order(scores.float())
    ranked_boxes = boxes.float()[order].cpu()
    ranked_idxs = idxs[order].cpu()
    kept = torch.zeros(len(order), dtype=torch.bool)
    for idx in torch.unique(ranked_idxs):
        # Positions (in rank order) of this idx's boxes; other idxs never interact with them.
        members = torch.nonzero(ranked_idxs == idx).flatten()
        suppresses = pairwise_iou_exceeds(ranked_boxes[members], iou_threshold)
        kept[members[greedy_keep(suppresses)]] = True
    return order[kept.to(order.device)]
