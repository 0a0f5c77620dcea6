"""Triton backend of rtmo::batched_nms: one global score sort, groups tested inside the mask."""

from __future__ import annotations

import torch

from rtmo_kernels.reference.batched_nms import score_order
from rtmo_kernels.triton.nms_kernels import nms_sorted_triton


def batched_nms_triton(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """boxes (Tensor[M, 4]), scores (Tensor[M]), idxs (Tensor[M]) -> keep (Tensor[L] int64).

    Arguments are validated by `rtmo_kernels.batched_nms`. The output size is data-dependent, so
    this synchronises with the host once, like torchvision's batched_nms.
    """
    order = score_order(scores.float())
    n = order.numel()
    if n == 0:
        return order
    sorted_boxes = boxes.float()[order][None].contiguous()
    groups = idxs.long()[order][None].contiguous()
    counts = torch.full((1,), n, dtype=torch.int64, device=boxes.device)
    positions, num_kept = nms_sorted_triton(sorted_boxes, groups, counts, iou_threshold, n)
    return order[positions[0, : int(num_kept[0])]]
