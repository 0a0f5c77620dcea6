"""Readable static-shape NMS per image in PyTorch: the specification of `rtmo::nms_padded`."""

from __future__ import annotations

import torch

from rtmo_kernels.reference.batched_nms import greedy_keep, pairwise_iou_exceeds, score_order


def nms_padded(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    score_threshold: float,
    max_det: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-agnostic greedy NMS per image; see `rtmo_kernels.nms_padded` for the contract.

    boxes (Tensor[B, N, 4]) xyxy, scores (Tensor[B, N]) -> keep (Tensor[B, max_det]) int64 indices
    into N by decreasing score, padded with -1, and num_kept (Tensor[B]) int64. Candidates are the
    scores > score_threshold (compared in fp32; NaN is never a candidate).
    """
    batch = boxes.shape[0]
    keep = torch.full((batch, max_det), -1, dtype=torch.int64, device=boxes.device)
    num_kept = torch.zeros(batch, dtype=torch.int64, device=boxes.device)
    threshold = torch.tensor(score_threshold, dtype=torch.float32)
    for image in range(batch):
        image_scores = scores[image].float().cpu()
        image_scores = torch.where(image_scores > threshold, image_scores, torch.nan)
        order = score_order(image_scores)
        suppresses = pairwise_iou_exceeds(boxes[image].float().cpu()[order], iou_threshold)
        kept = order[greedy_keep(suppresses, limit=max_det)]
        keep[image, : len(kept)] = kept.to(boxes.device)
        num_kept[image] = len(kept)
    return keep, num_kept
