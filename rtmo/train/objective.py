"""RTMO's training objective: assign priors to people, build the targets, weigh the losses
(RTMO.md §5; mmpose 1.3.2's RTMOHead.loss with the parts of YOLOXPoseHead it inherits).

Losses (weights from the variant's `TrainStage`), with P the positives over the batch and
`num_pos` their count averaged over processes and clamped at 1:

- `loss_cls`: VariFocal on every prior, target OKS^overlaps_power on positives and 0 elsewhere,
  summed / num_pos;
- `loss_bbox`: 1 - IoU^2 of the decoded boxes, summed / num_pos;
- `loss_oks`: 1 - OKS of the proxy keypoints, mean over P;
- `loss_vis`: BCE of the keypoint visibility logits, mean over P x K;
- `loss_mle`: DCC negative log-likelihood of the ground truth, visible keypoints, mean over P x K;

(under torch.distributed the three means are over the positives of all processes: see `share`);
- `loss_bbox_aux` (stage 3): L1 of the raw box outputs against the encoded boxes, summed / num_pos.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from rtmo.config import RTMOConfig, TrainStage
from rtmo.model.dcc import DCC
from rtmo.model.head import TrainOutputs, decode_boxes, decode_keypoint_offsets
from rtmo.train import losses
from rtmo.train.assigner import LOGIT_CLIP, SimOTAAssigner, person_scores
from rtmo.train.targets import GroundTruth
from rtmo_kernels.reference.dcc import fold_queries

# A prior is counted "visible" for the invalid-region weight when sigmoid(vis logit) > this.
_MASK_VISIBILITY_THR = 0.3
# Added to box sizes before the log of the auxiliary targets.
_AUX_LOG_EPS = 1e-8


class PositiveTargets(NamedTuple):
    """The batch's positives (P of them; image-major, by prior index) and per-prior weights."""

    index: Tensor  # (P,) into the flattened (B * N) priors
    boxes: Tensor  # (P, 4) matched people's boxes
    keypoints: Tensor  # (P, K, 2)
    visible: Tensor  # (P, K)
    visible_weights: Tensor  # (P, K)
    areas: Tensor  # (P,)
    overlaps: Tensor  # (P,) OKS of the proxy keypoints with the matched person
    cls_weights: Tensor  # (B * N,) 1 - invalid-region mask at each prior's mean keypoint


def rtmo_losses(
    outputs: TrainOutputs,
    truth: list[GroundTruth],
    dcc: DCC,
    stage: TrainStage,
    config: RTMOConfig,
    backend: str = "auto",
) -> dict[str, Tensor]:
    """The weighted losses of a batch (see the module doc); their sum is the objective.
    `backend` is the MLE kernel's.

    With no positive in the batch (no people, or none near any prior) every loss but `loss_cls`
    is a zero constant: mmpose leaves them out.
    """
    sigmas = torch.tensor(config.sigmas, dtype=torch.float32, device=outputs.priors.device)
    boxes = decode_boxes(outputs.bbox_preds, outputs.priors, outputs.strides)
    keypoints = decode_keypoint_offsets(outputs.kpt_offsets, outputs.priors, outputs.strides)
    assigner = SimOTAAssigner(sigmas, config.use_keypoints_for_center)
    pos = assign_batch(assigner, outputs, boxes.detach(), keypoints.detach(), truth)
    num_pos = _mean_over_processes(torch.tensor(float(len(pos.index)), device=boxes.device)).clamp(
        min=1.0
    )

    cls_logits = outputs.cls_logits.flatten()
    zero = cls_logits.new_zeros(())
    result = {"loss_cls": zero, "loss_bbox": zero, "loss_oks": zero, "loss_vis": zero}
    result["loss_mle"] = zero
    if stage.use_aux_loss:
        result["loss_bbox_aux"] = zero
    cls_targets = torch.zeros_like(cls_logits)
    # The per-positive means below are scaled by this process's share of the positives (1 in a
    # single process): under data parallelism, averaging the processes' gradients then gives
    # the mean over the global batch's positives, as one process with that batch would.
    share = len(pos.index) / num_pos
    if len(pos.index):
        pos_boxes = boxes.flatten(0, 1)[pos.index]
        result["loss_bbox"] = losses.iou_square_loss(pos_boxes, pos.boxes) * stage.loss_bbox
        result["loss_bbox"] = result["loss_bbox"] / num_pos
        if stage.use_aux_loss:
            result["loss_bbox_aux"] = _aux_box_loss(outputs, pos) * stage.loss_bbox_aux / num_pos
        vis_logits = outputs.kpt_vis_logits.flatten(0, 1)[pos.index]
        result["loss_vis"] = (
            losses.visibility_loss(vis_logits, pos.visible, pos.visible_weights)
            * stage.loss_vis
            * share
        )
        mle, dcc_keypoints = _mle(outputs, pos, pos_boxes, dcc, backend)
        result["loss_mle"] = (mle * stage.loss_mle).mean() * share
        proxy = keypoints.flatten(0, 1)[pos.index]
        oks_targets, oks_weights, overlaps = pos.keypoints, pos.visible, pos.overlaps
        if stage.proxy_target_cc:
            oks_targets, oks_weights, overlaps = _dcc_targets(proxy, dcc_keypoints, pos, sigmas)
        per_instance = losses.oks_loss(proxy, oks_targets, oks_weights, pos.areas, sigmas)
        result["loss_oks"] = (per_instance * stage.loss_oks).mean() * share
        # The assigner's overlaps are float32 (as mmpose's), also in a float64 run.
        cls_targets[pos.index] = overlaps.pow(stage.overlaps_power).to(cls_targets).detach()
    elif _distributed():
        # No positive here, but the DCC's BatchNorm sums its statistics over all processes in
        # the forward and the backward: this process must take part, with an empty batch.
        empty_mle, _ = _mle(outputs, pos, boxes.flatten(0, 1)[pos.index], dcc, backend)
        result["loss_mle"] = empty_mle.sum()
    loss_cls = losses.varifocal_loss(cls_logits, cls_targets, pos.cls_weights) * stage.loss_cls
    result["loss_cls"] = loss_cls / num_pos
    return result


def assign_batch(
    assigner: SimOTAAssigner,
    outputs: TrainOutputs,
    boxes: Tensor,
    keypoints: Tensor,
    truth: list[GroundTruth],
) -> PositiveTargets:
    """Runs the assigner image by image and gathers the positives' targets."""
    num_priors = outputs.priors.shape[0]
    parts: dict[str, list[Tensor]] = {field: [] for field in PositiveTargets._fields}
    scores = person_scores(outputs.cls_logits.detach())
    for b, gt in enumerate(truth):
        assignment = assigner.assign(
            outputs.priors, outputs.strides, boxes[b], scores[b], keypoints[b], gt
        )
        positives = torch.nonzero(assignment.gt_index >= 0).squeeze(1)
        matched = assignment.gt_index[positives]
        parts["index"].append(positives + b * num_priors)
        parts["boxes"].append(gt.boxes[matched])
        parts["keypoints"].append(gt.keypoints[matched])
        parts["visible"].append(gt.keypoints_visible[matched])
        parts["visible_weights"].append(gt.keypoints_visible_weights[matched])
        parts["areas"].append(gt.areas[matched])
        parts["overlaps"].append(assignment.overlaps[positives])
        parts["cls_weights"].append(
            _invalid_region_weights(gt, keypoints[b], outputs.kpt_vis_logits[b].detach())
        )
    return PositiveTargets(*(torch.cat(parts[field]) for field in PositiveTargets._fields))


def _invalid_region_weights(gt: GroundTruth, keypoints: Tensor, vis_logits: Tensor) -> Tensor:
    """(N,) classification weight of each prior: 1 - the invalid mask at its predicted pose.

    The pose's position is the mean of its proxy keypoints (N, K, 2) whose visibility score
    exceeds 0.3, sampled bilinearly (zero outside) as mmpose does: the point (x, y) maps to
    (x / (W - 1), y / (H - 1)) * 2 - 1 of `grid_sample` without aligned corners. mmpose divides
    both axes by W - 1; the inputs it trains on are square, where the two agree.
    """
    num_priors = keypoints.shape[0]
    mask = gt.invalid_mask
    if mask is None or not (mask != 0).any():
        return keypoints.new_ones(num_priors)
    scores = vis_logits.clamp(min=-LOGIT_CLIP, max=LOGIT_CLIP).sigmoid()
    visible = (scores > _MASK_VISIBILITY_THR).float()[..., None]
    centres = (keypoints * visible).sum(dim=1) / visible.sum(dim=1).clamp(min=1e-8)
    height, width = mask.shape
    scale = centres.new_tensor([width - 1, height - 1])
    grid = (centres / scale * 2 - 1).reshape(1, -1, 1, 2)
    sampled = F.grid_sample(
        mask[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return 1.0 - sampled.reshape(num_priors)


def _mle(
    outputs: TrainOutputs, pos: PositiveTargets, pos_boxes: Tensor, dcc: DCC, backend: str
) -> tuple[Tensor, Tensor]:
    """Per-positive MLE loss (P,) and the DCC keypoints (P, K, 2) on the positives' predicted
    boxes (not detached: the bins move with the box)."""
    pose_vecs = outputs.pose_vecs.flatten(0, 1)[pos.index]
    feats = dcc.keypoint_features(pose_vecs)
    priors = outputs.priors.repeat(outputs.pose_vecs.shape[0], 1)[pos.index]
    return losses.mle_loss(
        fold_queries(feats, dcc.x_fc),
        fold_queries(feats, dcc.y_fc),
        pos_boxes,
        priors,
        dcc.sigma_fc(pose_vecs),
        pos.keypoints,
        pos.visible,
        pos.areas,
        dcc.num_bins,
        dcc.padding,
        dcc.temperature,
        backend,
    )


@torch.no_grad()
def _dcc_targets(
    proxy: Tensor, dcc_keypoints: Tensor, pos: PositiveTargets, sigmas: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """proxy_target_cc: the regression branch learns the DCC keypoints where they are closer to
    the ground truth than its own; the classification target becomes the DCC keypoints' OKS.
    Returns (loss_oks targets, loss_oks weights, classification overlaps)."""
    closer = torch.norm(proxy - pos.keypoints, dim=-1) > torch.norm(
        dcc_keypoints - pos.keypoints, dim=-1
    )
    weights = pos.visible * closer.float()
    overlaps = losses.pose_oks(dcc_keypoints, pos.keypoints, pos.visible, pos.areas, sigmas)
    return dcc_keypoints, weights, overlaps


def _aux_box_loss(outputs: TrainOutputs, pos: PositiveTargets) -> Tensor:
    """Summed L1 of the positives' raw (dx, dy, log w, log h) against the matched boxes encoded
    the same way."""
    num_images = outputs.bbox_preds.shape[0]
    priors = outputs.priors.repeat(num_images, 1)[pos.index]
    strides = outputs.strides.repeat(num_images)[pos.index][:, None]
    centre = (pos.boxes[:, :2] + pos.boxes[:, 2:]) / 2.0
    size = pos.boxes[:, 2:] - pos.boxes[:, :2]
    encoded = torch.cat(
        [(centre - priors) / strides, torch.log(size / strides + _AUX_LOG_EPS)], dim=-1
    )
    raw = outputs.bbox_preds.flatten(0, 1)[pos.index]
    return losses.l1_loss(raw, encoded)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _mean_over_processes(value: Tensor) -> Tensor:
    """The mean of `value` over the processes of torch.distributed (itself when not running)."""
    if not _distributed():
        return value
    value = value.clone()
    dist.all_reduce(value.div_(dist.get_world_size()))
    return value
