"""SimOTA: which priors learn which person (RTMO.md §5; mmpose 1.3.2's SimOTAAssigner with
`dynamic_k_indicator="oks"`), one image at a time, vectorised over priors x people.

1. Candidates: priors whose point lies strictly inside a person's box or inside the square of
   half-side 2.5 strides around the person's centre (the box centre, or with
   `use_keypoints_for_center` the mean of the visible keypoints).
2. Cost of (prior, person): `3 (-log(IoU + 1e-7)) + 3 (-log(OKS + 1e-7)) + BCE(sqrt(score), 1)`,
   plus 1e5 unless the prior is both in the box and in the centre square. IoU of the predicted
   box, OKS of the proxy keypoints (PoseOKS: visibility-weighted).
3. Each person takes its k lowest-cost candidates, k = max(1, int(sum of its 10 best OKS)); a
   prior taken by several people keeps the one it costs least (over all people).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rtmo.train.losses import box_iou, pose_oks
from rtmo.train.targets import GroundTruth

# mmpose's INF: the cost added to pairs outside "in the box and in the centre square".
OUTSIDE_COST = 1e5
# Added inside the logs of the IoU and OKS costs.
LOG_EPS = 1e-7
# Person logits are clipped to this range before the sigmoid (mmpose avoids NaN this way).
LOGIT_CLIP = 1e4


class Assignment(NamedTuple):
    """Per prior (N,): `gt_index` int64, the person it learns (-1: background); `overlaps`
    float32, the OKS of its proxy keypoints with that person (0 for background)."""

    gt_index: Tensor
    overlaps: Tensor


@dataclass(frozen=True)
class SimOTAAssigner:
    """SimOTA with mmpose's defaults; `sigmas` (K,) are the dataset's OKS sigmas."""

    sigmas: Tensor
    use_keypoints_for_center: bool = False
    center_radius: float = 2.5
    candidate_topk: int = 10
    iou_weight: float = 3.0
    oks_weight: float = 3.0
    cls_weight: float = 1.0

    @torch.no_grad()
    def assign(
        self,
        priors: Tensor,
        strides: Tensor,
        boxes: Tensor,
        scores: Tensor,
        keypoints: Tensor,
        truth: GroundTruth,
    ) -> Assignment:
        """One image: priors (N, 2), strides (N,), predicted boxes (N, 4) xyxy, person scores
        (N,) in [0, 1] (see `person_scores`), proxy keypoints (N, K, 2), in input pixels,
        against its ground truth."""
        num_priors = priors.shape[0]
        gt_index = torch.full((num_priors,), -1, dtype=torch.long, device=priors.device)
        overlaps = torch.zeros(num_priors, dtype=torch.float32, device=priors.device)
        if len(truth) == 0 or num_priors == 0:
            return Assignment(gt_index, overlaps)
        candidate, in_box_and_centre = self.candidates(priors, strides, truth)
        candidates = torch.nonzero(candidate).squeeze(1)
        if len(candidates) == 0:
            return Assignment(gt_index, overlaps)
        cost, oks = self.cost(
            boxes[candidates],
            scores[candidates],
            keypoints[candidates],
            in_box_and_centre,
            truth,
        )
        matched_gt, chosen = self.dynamic_k_matching(cost, oks)
        positives = candidates[chosen]
        gt_index[positives] = matched_gt
        overlaps[positives] = oks[chosen].gather(1, matched_gt[:, None]).squeeze(1).float()
        return Assignment(gt_index, overlaps)

    def centres(self, truth: GroundTruth) -> Tensor:
        """(G, 2): box centres, or the mean visible keypoint of people with any visible one."""
        centres = (truth.boxes[:, :2] + truth.boxes[:, 2:]) / 2.0
        if not self.use_keypoints_for_center:
            return centres
        visible = truth.keypoints_visible
        total = visible.sum(dim=-1, keepdim=True)
        keypoint_mean = (truth.keypoints * visible[..., None]).sum(dim=-2) / total.clamp(min=0)
        return torch.where(total > 0, keypoint_mean, centres)

    def candidates(
        self, priors: Tensor, strides: Tensor, truth: GroundTruth
    ) -> tuple[Tensor, Tensor]:
        """(N,) candidate priors, and (C, G) whether candidate c is in both person g's box and
        its centre square."""
        x, y = priors[:, 0:1], priors[:, 1:2]  # (N, 1)
        x1, y1, x2, y2 = truth.boxes.unbind(-1)  # (G,)
        in_box = torch.stack([x - x1, y - y1, x2 - x, y2 - y]).amin(dim=0) > 0
        cx, cy = self.centres(truth).unbind(-1)
        radius = self.center_radius * strides[:, None]  # (N, 1)
        sides = [x - (cx - radius), y - (cy - radius), (cx + radius) - x, (cy + radius) - y]
        in_centre = torch.stack(sides).amin(dim=0) > 0
        candidate = in_box.any(dim=1) | in_centre.any(dim=1)
        return candidate, (in_box & in_centre)[candidate]

    def cost(
        self,
        boxes: Tensor,
        scores: Tensor,
        keypoints: Tensor,
        in_box_and_centre: Tensor,
        truth: GroundTruth,
    ) -> tuple[Tensor, Tensor]:
        """(C, G) matching cost and OKS of the candidates' predictions against every person."""
        cost = (~in_box_and_centre) * OUTSIDE_COST
        iou = box_iou(boxes[:, None], truth.boxes[None])
        cost = cost + -torch.log(iou + LOG_EPS) * self.iou_weight
        oks = pose_oks(
            keypoints[:, None],
            truth.keypoints[None],
            truth.keypoints_visible[None],
            truth.areas[None],
            self.sigmas.to(keypoints),
        )
        cost = cost + -torch.log(oks + LOG_EPS) * self.oks_weight
        # BCE against 1 is -log(score), which F.binary_cross_entropy clamps at 100.
        cls_cost = F.binary_cross_entropy(scores, torch.ones_like(scores), reduction="none")
        return cost + cls_cost[:, None] * self.cls_weight, oks

    def dynamic_k_matching(self, cost: Tensor, oks: Tensor) -> tuple[Tensor, Tensor]:
        """From the (C, G) cost and OKS: the matched person of each chosen candidate and the
        (C,) mask of chosen candidates."""
        num_candidates, num_gt = cost.shape
        top_oks = oks.topk(min(self.candidate_topk, num_candidates), dim=0).values
        dynamic_k = top_oks.sum(dim=0).int().clamp(min=1)  # (G,), int() truncates like mmpose
        # Each person takes its k cheapest candidates. Equal costs are common (in float32 the
        # 1e5 penalty swallows the rest of the cost), and which of them torch.topk returns
        # depends on k: one topk per distinct k (at most `candidate_topk` of them) over all the
        # people with that k breaks ties exactly as mmpose's topk per person does.
        matching = torch.zeros_like(cost, dtype=torch.bool)
        for k in dynamic_k.unique().tolist():
            people = torch.nonzero(dynamic_k == k).squeeze(1)
            cheapest = cost[:, people].topk(k, dim=0, largest=False).indices  # (k, people)
            matching[cheapest, people.expand_as(cheapest)] = True
        # A candidate taken by several people keeps its cheapest person among all of them.
        cheapest_person = F.one_hot(cost.argmin(dim=1), num_gt).bool()
        matching = torch.where(matching.sum(dim=1, keepdim=True) > 1, cheapest_person, matching)
        chosen = matching.any(dim=1)
        return matching[chosen].int().argmax(dim=1), chosen


def person_scores(cls_logits: Tensor) -> Tensor:
    """The score SimOTA costs: sqrt(sigmoid(logit)) (YOLOX-Pose's sqrt(cls * objectness) with
    RTMO's objectness fixed at 1), NaN counted 0."""
    scores = cls_logits.clamp(min=-LOGIT_CLIP, max=LOGIT_CLIP).sigmoid()
    return torch.where(torch.isnan(scores), torch.zeros_like(scores), scores).sqrt()
