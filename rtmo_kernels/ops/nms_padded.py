"""rtmo::nms_padded: static-shape greedy NMS per image (what the model and the ONNX export use)."""

from __future__ import annotations

import math

import torch

from rtmo_kernels._backend import extension, resolve_backend
from rtmo_kernels._validation import check_same_device, check_tensor
from rtmo_kernels.ops.batched_nms import check_iou_threshold
from rtmo_kernels.reference.nms_padded import nms_padded as nms_padded_reference

OP = "nms_padded"


@torch.compiler.assume_constant_result
def _resolve(backend: str, device: torch.device) -> str:
    # The choice depends only on the argument, the environment and the device: a constant for
    # torch.compile, which then traces straight into the chosen kernel (fullgraph=True works).
    return resolve_backend(backend, device, OP)


def _check_arguments(
    boxes: torch.Tensor, scores: torch.Tensor, score_threshold: object, max_det: object
) -> torch.device:
    check_tensor(OP, "boxes", boxes, 3, last_dim=4)
    check_tensor(OP, "scores", scores, 2)
    if tuple(scores.shape) != tuple(boxes.shape[:2]):
        raise ValueError(
            f"{OP}: scores must have shape (B, N)={tuple(boxes.shape[:2])} to match boxes "
            f"{tuple(boxes.shape)}, got {tuple(scores.shape)}"
        )
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)):
        raise TypeError(
            f"{OP}: score_threshold must be a float, got {type(score_threshold).__name__}"
        )
    if math.isnan(score_threshold):
        raise ValueError(f"{OP}: score_threshold must be a number, got nan")
    if isinstance(max_det, bool) or not isinstance(max_det, int):
        raise TypeError(f"{OP}: max_det must be an int, got {type(max_det).__name__}")
    if max_det < 0:
        raise ValueError(f"{OP}: max_det must be >= 0, got {max_det}")
    return check_same_device(OP, boxes=boxes, scores=scores)


def nms_padded(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    score_threshold: float,
    max_det: int,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-agnostic greedy NMS per image with static output shapes and no host synchronisation.

    Args:
        boxes (Tensor[B, N, 4]): xyxy boxes, fp32/fp16/bf16 (IoU in fp32, without +1).
        scores (Tensor[B, N]): fp32/fp16/bf16; candidates are the boxes with
            score > score_threshold (compared in fp32).
        iou_threshold: a candidate is dropped when its IoU with a kept, higher-ranked candidate is
            > iou_threshold; an IoU exactly at the threshold is kept; >= 1 suppresses nothing.
        score_threshold: candidates have scores strictly above it.
        max_det: the number of output slots per image; the scan stops once they are full.
        backend: "auto", "reference", "cpu", "cuda" or "triton".

    Returns:
        keep (Tensor[B, max_det] int64): indices into N by decreasing score (equal scores: lower
        index first), padded with -1; num_kept (Tensor[B] int64): the valid slots of each row.

    NaN policy: a NaN score is never a candidate. A box with a NaN coordinate never suppresses
    and is never suppressed (its IoU test is false). Zero-area boxes have IoU 0 with everything.
    """
    device = _check_arguments(boxes, scores, score_threshold, max_det)
    iou_threshold = check_iou_threshold(OP, iou_threshold)
    name = _resolve(backend, device)
    if name == "reference":
        return nms_padded_reference(boxes, scores, iou_threshold, float(score_threshold), max_det)
    if name == "triton":
        from rtmo_kernels.triton.nms_padded import nms_padded_triton

        return nms_padded_triton(boxes, scores, iou_threshold, float(score_threshold), max_det)
    return torch.ops.rtmo.nms_padded(boxes, scores, iou_threshold, float(score_threshold), max_det)


if extension() is not None:

    @torch.library.register_fake("rtmo::nms_padded")
    def _nms_padded_fake(boxes, scores, iou_threshold, score_threshold, max_det):
        batch = boxes.shape[0]
        keep = boxes.new_empty((batch, max_det), dtype=torch.int64)
        return keep, boxes.new_empty((batch,), dtype=torch.int64)
