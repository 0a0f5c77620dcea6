"""Triton backend of rtmo::nms_padded: sort per image, then the shared mask + scan kernels."""

from __future__ import annotations

import torch

from rtmo_kernels.triton.nms_kernels import nms_sorted_triton


def nms_padded_triton(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    score_threshold: float,
    max_det: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """boxes (Tensor[B, N, 4]), scores (Tensor[B, N]) -> keep (Tensor[B, max_det]), num_kept (B,).

    Arguments are validated by `rtmo_kernels.nms_padded`. No host synchronisation.
    """
    batch, n = scores.shape
    if n == 0 or max_det == 0:
        keep = torch.full((batch, max_det), -1, dtype=torch.int64, device=boxes.device)
        return keep, torch.zeros(batch, dtype=torch.int64, device=boxes.device)
    scores32 = scores.float()
    candidate = scores32 > score_threshold  # fp32 comparison; NaN is never a candidate
    ranked = torch.where(candidate, scores32, float("-inf"))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    sorted_boxes = boxes.float().gather(1, order[..., None].expand(batch, n, 4)).contiguous()
    counts = candidate.sum(dim=1)
    positions, num_kept = nms_sorted_triton(sorted_boxes, None, counts, iou_threshold, max_det)
    keep = torch.where(positions >= 0, order.gather(1, positions.clamp(min=0)), -1)
    return keep, num_kept
