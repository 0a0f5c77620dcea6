"""RTMO's losses, unweighted and unreduced over instances where mmpose reduces them later, plus the
box IoU and keypoint similarity they and the assigner share (RTMO.md §5, mmpose 1.3.2's
VariFocalLoss, IoULoss, OKSLoss, BCELoss, MLECCLoss, L1Loss).

Each function computes exactly what the mmpose loss computes, in the same order of float
operations where that order is visible in a float32 result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import rtmo_kernels

# mmpose's bbox_overlaps clamps the union at this value.
IOU_UNION_EPS = 1e-6
# IoULoss clamps the IoU at this value before squaring.
IOU_LOSS_EPS = 1e-16
# OKS: sqrt(area) and the sum of the keypoint weights are clamped at this value.
OKS_EPS = 1e-8
# VariFocal: logits clipped to +-10 in the BCE; targets above this count as positives.
VFL_LOGIT_CLIP = 10.0
VFL_POSITIVE_THR = 1e-4


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of xyxy boxes (..., 4) broadcast against each other -> (...); no +1 convention,
    union clamped at 1e-6. Pairwise: `box_iou(a[:, None], b[None])`."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    top_left = torch.max(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area1 + area2 - overlap).clamp(min=IOU_UNION_EPS)
    return overlap / union


def keypoint_similarity(
    keypoints: Tensor, targets: Tensor, weights: Tensor, areas: Tensor, sigmas: Tensor
) -> Tensor:
    """OKS-style similarity `sum_k w_k exp(-d_k^2 / 2)`, `d_k = |p_k - g_k| / sqrt(A) / (2 s_k)`.

    keypoints, targets (..., K, 2) broadcast; weights (..., K) already normalised by the caller
    (mmpose's PoseOKS divides by their sum, its OKSLoss by K); areas (...); sigmas (K,).
    """
    dist = torch.norm(keypoints - targets, dim=-1)
    dist = dist / areas.pow(0.5).clamp(min=OKS_EPS).unsqueeze(-1)
    dist = dist / (sigmas * 2)
    return (torch.exp(-dist.pow(2) / 2) * weights).sum(dim=-1)


def pose_oks(keypoints: Tensor, targets: Tensor, visible: Tensor, areas: Tensor, sigmas: Tensor):
    """mmpose's PoseOKS: the similarity with the visibilities normalised to sum to 1.

    keypoints, targets (..., K, 2); visible (..., K); areas (...) -> OKS (...) in [0, 1].
    """
    weights = visible / visible.sum(dim=-1, keepdim=True).clamp(min=OKS_EPS)
    return keypoint_similarity(keypoints, targets, weights, areas, sigmas)


def varifocal_loss(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """Summed VariFocal loss (alpha 0.75, gamma 2) of logits (M,) against soft targets (M,).

    Negatives (target <= 1e-4) weigh `0.75 sigmoid(logit)^2` (not detached, as in mmpose),
    positives their target; times `weights` (M,). Infinite or NaN terms count 0.
    """
    negative = (targets <= VFL_POSITIVE_THR).to(targets)
    focal = 0.75 * logits.sigmoid().pow(2) * negative + targets
    clipped = logits.clamp(min=-VFL_LOGIT_CLIP, max=VFL_LOGIT_CLIP)
    loss = F.binary_cross_entropy_with_logits(clipped, targets, reduction="none") * focal
    loss = loss * weights
    return torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss)).sum()


def iou_square_loss(boxes: Tensor, targets: Tensor) -> Tensor:
    """Summed `1 - IoU^2` of aligned xyxy boxes (M, 4) and targets (M, 4)."""
    iou = box_iou(boxes, targets).clamp(min=IOU_LOSS_EPS)
    return (1 - iou.pow(2)).sum()


def oks_loss(
    keypoints: Tensor, targets: Tensor, weights: Tensor, areas: Tensor, sigmas: Tensor
) -> Tensor:
    """Per-instance `1 - OKS` (M,), keypoint weights (M, K) divided by K (not by their sum)."""
    per_keypoint = weights / weights.shape[-1]
    return 1 - keypoint_similarity(keypoints, targets, per_keypoint, areas, sigmas)


def visibility_loss(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """Mean weighted BCE-with-logits of visibility logits (M, K) against targets (M, K)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights
    return loss.mean()


def mle_loss(
    query_x: Tensor,
    query_y: Tensor,
    boxes: Tensor,
    priors: Tensor,
    sigmas: Tensor,
    targets: Tensor,
    visible: Tensor,
    areas: Tensor,
    num_bins: tuple[int, int],
    padding: float,
    temperature: float,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """RTMO's MLE loss per instance (M,) and the DCC keypoints (M, K, 2) (not differentiable).

    The negative log-likelihood of each target keypoint under the DCC's bin distributions and a
    Laplace of learned scale (`rtmo_kernels.dcc_mle_loss`), NaN counted 0 as mmpose does, times
    the visibility (M, K), averaged over the K keypoints.
    """
    nll, keypoints = rtmo_kernels.dcc_mle_loss(
        query_x,
        query_y,
        boxes,
        priors,
        sigmas,
        targets,
        areas,
        num_bins=num_bins,
        padding=padding,
        temperature=temperature,
        backend=backend,
    )
    nll = torch.where(torch.isnan(nll), torch.zeros_like(nll), nll)
    return (nll * visible).mean(dim=1), keypoints


def l1_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Summed absolute difference."""
    return F.l1_loss(outputs, targets, reduction="sum")
