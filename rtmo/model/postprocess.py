"""Post-processing in static shapes: threshold + NMS into `max_det` padded slots, then the DCC on
the survivors only, then one host sync at the final per-image split (RTMO.md §4.1)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor

import rtmo_kernels
from rtmo.model.dcc import DCC
from rtmo.model.head import DenseOutputs, decode_boxes
from rtmo_kernels.reference.nms_padded import nms_padded as reference_nms_padded


class PaddedPredictions(NamedTuple):
    """Detections of a batch in M slots per image (M = max_det, at most the number of priors),
    sorted by descending score.

    boxes (B, M, 4) xyxy, scores (B, M), keypoints (B, M, K, 2), keypoint_scores (B, M, K), all in
    model-input pixels; num_detections (B,) int64 says how many leading slots are real. Slots
    past it hold zeros.
    """

    boxes: Tensor
    scores: Tensor
    keypoints: Tensor
    keypoint_scores: Tensor
    num_detections: Tensor


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """Rows of x (B, N, ...) at index (B, M) -> (B, M, ...)."""
    batch = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[batch, index]


def _clamp_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """xyxy boxes clamped to [0, w] x [0, h] (scalar bounds: no host-to-device copy)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    w, h = size
    return torch.stack([x1.clamp(0, w), y1.clamp(0, h), x2.clamp(0, w), y2.clamp(0, h)], dim=-1)


def _select(
    boxes: Tensor,
    scores: Tensor,
    score_thr: float,
    nms_thr: float,
    max_det: int,
    use_kernels: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    """keep (B, max_det) int64 padded with -1 and num_kept (B,): score > thr, greedy IoU NMS."""
    if use_kernels:
        return rtmo_kernels.nms_padded(boxes, scores, nms_thr, score_thr, max_det, backend=backend)
    return reference_nms_padded(boxes, scores, nms_thr, score_thr, max_det)


class DecodedDense(NamedTuple):
    """Dense predictions of every prior, the post-process's input: what a raw-head export
    outputs (`rtmo.export`, head="raw").

    scores (B, N) person scores (sigmoid), boxes (B, N, 4) xyxy in model-input pixels,
    keypoint_scores (B, N, K) keypoint visibility (sigmoid), pose_vecs (B, N, C).
    """

    scores: Tensor
    boxes: Tensor
    keypoint_scores: Tensor
    pose_vecs: Tensor


def widened(x: Tensor) -> Tensor:
    """x in float32, or float64 when it is (a float64 run stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def decode_dense(dense: DenseOutputs) -> DecodedDense:
    """Raw head outputs -> scores, xyxy boxes and keypoint scores of every prior, in float32 (or
    float64) whatever the network's dtype: a bf16 sigmoid would round scores to 3 digits, tying
    people, and a bf16 exp() box sizes to 0.4% (0.2 px on 100 px boxes). The pose vectors keep
    the network's dtype; the DCC casts the kept ones."""
    return DecodedDense(
        widened(dense.cls_logits).sigmoid(),
        decode_boxes(widened(dense.bbox_preds), dense.priors, dense.strides),
        widened(dense.kpt_vis_logits).sigmoid(),
        dense.pose_vecs,
    )


def postprocess_padded(
    dense: DenseOutputs,
    dcc: DCC,
    input_size: tuple[int, int],
    score_thr: float,
    nms_thr: float,
    max_det: int,
    use_kernels: bool,
    backend: str,
) -> PaddedPredictions:
    """Dense head outputs -> padded detections; no host sync, no data-dependent shape.

    input_size is (w, h) of the model input: boxes are clamped to it after the keypoint decode.
    """
    return postprocess_decoded(
        decode_dense(dense),
        dense.priors,
        dcc,
        input_size,
        score_thr,
        nms_thr,
        max_det,
        use_kernels,
        backend,
    )


def postprocess_decoded(
    decoded: DecodedDense,
    priors: Tensor,
    dcc: DCC,
    input_size: tuple[int, int],
    score_thr: float,
    nms_thr: float,
    max_det: int,
    use_kernels: bool,
    backend: str,
) -> PaddedPredictions:
    """Decoded dense predictions -> padded detections: score threshold and NMS into max_det
    slots, the DCC on the kept pose vectors at their priors (N, 2), boxes clamped to
    input_size (w, h) after the keypoint decode. Outputs are float32 (float64 in a float64
    run) whatever the network's dtype: the kept rows are gathered, then widened.

    On CUDA, and while compiling or exporting, there is no host sync and no data-dependent shape:
    the DCC decodes every slot, padding included. In eager CPU runs, where a sync costs nothing,
    it decodes the kept people only (`_decode_kept`): the same numbers, without the ~7.5 ms that
    max_det 100 slots cost whatever the crowd.

    Each prior is at most one person: a max_det above N gives N slots, not slots that could
    only stay empty (yet be decoded).
    """
    max_det = min(max_det, priors.shape[0])
    keep, num = _select(
        decoded.boxes, decoded.scores, score_thr, nms_thr, max_det, use_kernels, backend
    )
    valid = keep >= 0
    index = keep.clamp(min=0)
    boxes = widened(_gather(decoded.boxes, index))
    scores = widened(_gather(decoded.scores, index))
    decode = _decode_kept if _sync_is_free(keep) else _decode_slots
    keypoints = decode(decoded.pose_vecs, boxes, priors, index, valid, dcc, use_kernels, backend)
    boxes = _clamp_boxes(boxes, input_size)
    kpt_scores = widened(_gather(decoded.keypoint_scores, index))
    # where(), not a product: padding rows must be zeros even if a padded slot's decode overflowed.
    return PaddedPredictions(
        torch.where(valid[..., None], boxes, 0.0),
        torch.where(valid, scores, 0.0),
        torch.where(valid[..., None, None], keypoints, 0.0),
        torch.where(valid[..., None], kpt_scores, 0.0),
        num,
    )


def _sync_is_free(keep: Tensor) -> bool:
    """Whether reading the kept count on the host costs nothing: eager CPU tensors (not under
    torch.compile / torch.export, not traced by the ONNX exporter, not fake tensors)."""
    return (
        keep.device.type == "cpu"
        and not isinstance(keep, FakeTensor)
        and not (torch.compiler.is_compiling() or torch.jit.is_tracing())
    )


def _decode_slots(
    pose_vecs: Tensor,
    boxes: Tensor,
    priors: Tensor,
    index: Tensor,
    valid: Tensor,
    dcc: DCC,
    use_kernels: bool,
    backend: str,
) -> Tensor:
    """Keypoints (B, M, K, 2) of every slot, padding included (static shapes)."""
    b, m = index.shape
    return dcc(
        _gather(pose_vecs, index).flatten(0, 1),
        boxes.flatten(0, 1),
        priors[index].flatten(0, 1),
        use_kernels=use_kernels,
        backend=backend,
    ).reshape(b, m, -1, 2)


def _decode_kept(
    pose_vecs: Tensor,
    boxes: Tensor,
    priors: Tensor,
    index: Tensor,
    valid: Tensor,
    dcc: DCC,
    use_kernels: bool,
    backend: str,
) -> Tensor:
    """Keypoints (B, M, K, 2) of the kept slots, zeros in the padding: the DCC runs on the kept
    rows only (a data-dependent shape)."""
    image, slot = valid.nonzero(as_tuple=True)
    rows = index[image, slot]
    keypoints = boxes.new_zeros((*index.shape, dcc.num_keypoints, 2))
    if rows.numel():
        keypoints[image, slot] = dcc(
            pose_vecs[image, rows],
            boxes[image, slot],
            priors[rows],
            use_kernels=use_kernels,
            backend=backend,
        )
    return keypoints


def split_predictions(padded: PaddedPredictions) -> list[dict[str, Tensor]]:
    """One dict per image with the first num_detections rows of each field (the one host sync)."""
    counts = padded.num_detections.tolist()
    fields = ("boxes", "scores", "keypoints", "keypoint_scores")
    return [{name: getattr(padded, name)[i, :n] for name in fields} for i, n in enumerate(counts)]
