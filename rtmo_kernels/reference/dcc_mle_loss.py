"""Readable MLE loss of the Dynamic Coordinate Classifier, unfused, the way mmpose computes it
(RTMO.md §3 "Training-only part" and §5 `loss_mle`).

Everything runs in the dtype of the queries/features and is differentiable by autograd, so the same
code is the float64 test oracle (values and gradients), the fallback backend and what the fused
kernels are checked against.

Per instance n, keypoint k and axis (B bins b_i of the padded box, as `dcc.axis_bins`):
  l_i = clamp(<q_k, phi(b_i - g)>, -5e4, 5e4)                    logits (folded queries)
  p_i = e^(l_i - max l) / (sum_j e^(l_j - max l) + 1e-8)          mmpose's `_apply_softmax`
  t_i = (1 / s) exp(-|x*_k - b_i| / (2 s a))                     Laplace target, unnormalised
        s = max(sigma_k, 1e-3), a = max(sqrt(area), 1)
  P = sum_i p_i t_i
  nll_k = -log(P_x P_y + 1e-4)                                   MLECCLoss, mode "log"
The decoded keypoint is the expectation sum_i p_i b_i, returned detached (mmpose only uses it
under no_grad, for `proxy_target_cc`). The bins come from the predicted boxes, so the loss is
differentiable w.r.t. the boxes too (through the encodings and the targets).
"""

from __future__ import annotations

import torch
from torch import nn

from rtmo_kernels.reference.dcc import axis_bins, mmpose_softmax, sinusoidal_encoding

# mmpose's `generate_target_heatmap` clips the learned sigmas to this minimum ...
SIGMA_MIN = 1e-3
# ... and the square root of the GT area to this minimum.
SQRT_AREA_MIN = 1.0
# MLECCLoss (mode "log") adds this to the likelihood before the log.
LIKELIHOOD_EPS = 1e-4


def laplace_target(
    target: torch.Tensor, bins: torch.Tensor, sigmas: torch.Tensor, areas: torch.Tensor
) -> torch.Tensor:
    """The unnormalised Laplace likelihood t (Tensor[N, K, B]) of one axis, as mmpose's
    `DCC.generate_target_heatmap` computes it.

    Args:
        target (Tensor[N, K]): GT coordinate along the axis. bins (Tensor[N, B]): bin positions.
        sigmas (Tensor[N, K]): the raw sigma_fc output. areas (Tensor[N]): GT areas.
    """
    scale = areas.pow(0.5).clip(min=SQRT_AREA_MIN)[:, None, None]
    sigma = sigmas.clip(min=SIGMA_MIN)[:, :, None]
    distance = (target[:, :, None] - bins[:, None, :]).abs() / scale / sigma
    return torch.exp(-distance / 2) / sigma


def _loss_from_logits(
    logits: tuple[torch.Tensor, torch.Tensor],
    bins: tuple[torch.Tensor, torch.Tensor],
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """nll (N, K) and detached keypoints (N, K, 2) from the logits (N, K, B) and bins (N, B) of
    both axes."""
    likelihood = 1.0
    coords = []
    for axis in range(2):
        probs = mmpose_softmax(logits[axis])
        target = laplace_target(target_keypoints[..., axis], bins[axis], sigmas, areas)
        likelihood = likelihood * (probs * target).sum(-1)
        coords.append((probs * bins[axis][:, None, :]).sum(-1).detach())
    return -torch.log(likelihood + LIKELIHOOD_EPS), torch.stack(coords, -1)


def _same_dtype(dtype: torch.dtype, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(dtype) for t in tensors]


def dcc_mle_loss(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
    num_bins: tuple[int, int] = (192, 256),
    padding: float = 1.25,
    temperature: float = 300.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op's contract with folded queries, computed in the queries' dtype (autograd).

    Args:
        query_x, query_y (Tensor[N, K, D]): keypoint features multiplied by the weight of the
            axis's Linear (`dcc.fold_queries`); D even.
        boxes (Tensor[N, 4]): predicted xyxy boxes. priors (Tensor[N, 2]): prior points (x, y).
        sigmas (Tensor[N, K]): raw sigma_fc output. target_keypoints (Tensor[N, K, 2]): GT (x, y).
        areas (Tensor[N]): GT areas.
    Returns:
        nll (Tensor[N, K]) and keypoints (Tensor[N, K, 2], detached), in the queries' dtype.
    """
    dtype = query_x.dtype
    query_y, boxes, priors, sigmas, target_keypoints, areas = _same_dtype(
        dtype, query_y, boxes, priors, sigmas, target_keypoints, areas
    )
    logits, bins = [], []
    for axis, query in enumerate((query_x, query_y)):
        axis_positions, relative = axis_bins(boxes, priors, axis, num_bins[axis], padding)
        encodings = sinusoidal_encoding(relative, query.shape[-1], temperature)  # (N, B, D)
        logits.append(query @ encodings.transpose(1, 2))  # (N, K, B)
        bins.append(axis_positions)
    return _loss_from_logits(tuple(logits), tuple(bins), sigmas, target_keypoints, areas)


def dcc_mle_loss_unfolded(
    feats: torch.Tensor,
    x_fc: nn.Linear,
    y_fc: nn.Linear,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
    num_bins: tuple[int, int] = (192, 256),
    padding: float = 1.25,
    temperature: float = 300.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """mmpose's own training path: every bin encoding goes through the axis's Linear (bias
    included), then the logits against the keypoint features.

    Args:
        feats (Tensor[N, K, C]): keypoint features after the GAU.
        x_fc, y_fc: Linear(D -> C) of each axis. Other arguments as `dcc_mle_loss`.
    Returns:
        nll (Tensor[N, K]) and keypoints (Tensor[N, K, 2], detached), in the features' dtype.
    """
    dtype = feats.dtype
    boxes, priors, sigmas, target_keypoints, areas = _same_dtype(
        dtype, boxes, priors, sigmas, target_keypoints, areas
    )
    logits, bins = [], []
    for axis, linear in enumerate((x_fc, y_fc)):
        axis_positions, relative = axis_bins(boxes, priors, axis, num_bins[axis], padding)
        encodings = linear(sinusoidal_encoding(relative, linear.in_features, temperature))
        logits.append(feats @ encodings.transpose(1, 2))  # (N, K, B)
        bins.append(axis_positions)
    return _loss_from_logits(tuple(logits), tuple(bins), sigmas, target_keypoints, areas)
