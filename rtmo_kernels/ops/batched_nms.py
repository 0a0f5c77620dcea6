"""rtmo::batched_nms: greedy NMS with torchvision's `batched_nms` contract, on every backend."""

from __future__ import annotations

import math

import torch

from rtmo_kernels._backend import extension, resolve_backend
from rtmo_kernels._validation import check_leading_dims, check_same_device, check_tensor
from rtmo_kernels.reference.batched_nms import batched_nms as batched_nms_reference

OP = "batched_nms"
INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_iou_threshold(op: str, iou_threshold: object) -> float:
    """A real number >= 0 (>= 1 suppresses nothing)."""
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
        raise TypeError(f"{op}: iou_threshold must be a float, got {type(iou_threshold).__name__}")
    if math.isnan(iou_threshold) or iou_threshold < 0:
        raise ValueError(f"{op}: iou_threshold must be a number >= 0, got {iou_threshold}")
    return float(iou_threshold)


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    backend: str = "auto",
) -> torch.Tensor:
    """Greedy non-maximum suppression, independently for each value of `idxs`.

    Args:
        boxes (Tensor[M, 4]): xyxy boxes, fp32/fp16/bf16 (IoU is computed in fp32, without +1).
        scores (Tensor[M]): fp32/fp16/bf16.
        idxs (Tensor[M]): integer category of each box; boxes of different idxs never suppress
            each other.
        iou_threshold: a box is dropped when its IoU with a kept, higher-ranked box of its idx is
            > iou_threshold (compared in fp32); an IoU exactly at the threshold is kept, and
            iou_threshold >= 1 suppresses nothing.
        backend: "auto", "reference", "cpu", "cuda" or "triton".

    Returns:
        keep (Tensor[L] int64): indices into the inputs, by decreasing score; equal scores are
        ranked by lower index first, on every backend.

    NaN policy: a NaN score is not a score: the box is never kept (and so never suppresses). A box
    with a NaN coordinate has a NaN area, so its IoU test is false with every box: it never
    suppresses and is never suppressed. Zero-area boxes have IoU 0 with everything.
    """
    check_tensor(OP, "boxes", boxes, 2, last_dim=4)
    check_tensor(OP, "scores", scores, 1)
    check_tensor(OP, "idxs", idxs, 1, dtypes=INDEX_DTYPES)
    check_leading_dims(OP, boxes.shape[0], "M", scores=scores, idxs=idxs)
    device = check_same_device(OP, boxes=boxes, scores=scores, idxs=idxs)
    threshold = check_iou_threshold(OP, iou_threshold)
    name = resolve_backend(backend, device, OP)
    if name == "reference":
        return batched_nms_reference(boxes, scores, idxs, threshold)
    if name == "triton":
        from rtmo_kernels.triton.batched_nms import batched_nms_triton

        return batched_nms_triton(boxes, scores, idxs, threshold)
    return torch.ops.rtmo.batched_nms(boxes, scores, idxs, threshold)


if extension() is not None:

    @torch.library.register_fake("rtmo::batched_nms")
    def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
        # The number of kept boxes depends on the data.
        kept = torch.library.get_ctx().new_dynamic_size()
        return boxes.new_empty((kept,), dtype=torch.int64)
