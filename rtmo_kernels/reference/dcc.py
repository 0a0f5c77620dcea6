"""Readable Dynamic Coordinate Classifier decode, written the way mmpose computes it (RTMO.md §3).

Everything runs in the dtype of the queries/features, so the same code is the float64 test oracle,
the fallback backend and the `use_kernels=False` model path.

Per instance and axis (B bins, box extent [lo, hi], prior g, D even, F = D / 2):
  u_i = -0.5 + i / (B - 1)                      fixed normalised bins
  b_i = u_i * padding * (hi - lo) + (lo + hi) / 2   absolute bin positions (pixels)
  r_i = b_i - g                                 relative to the prior
  phi(r) = [cos(r / t_0..F-1), sin(r / t_0..F-1)],  t_j = temperature^(j / F)   (cos block first)
  logits l_{k,i} = <q_k, phi(r_i)>, p = softmax_i(l), x_k = sum_i p_i b_i, confidence = max_i p_i
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("expectation", "argmax")
# mmpose's `_apply_softmax` clamps the logits to this range before the exponential.
LOGIT_CLAMP = 5e4
# ... and adds this to the denominator.
SOFTMAX_EPS = 1e-8


def bin_positions(
    lo: torch.Tensor, hi: torch.Tensor, num_bins: int, padding: float
) -> torch.Tensor:
    """Absolute bin positions (Tensor[N, B]) of one axis's padded extent [lo, hi] (Tensor[N])."""
    index = torch.arange(num_bins, dtype=lo.dtype, device=lo.device)
    unit = -0.5 + index / (num_bins - 1)
    center = (lo + hi) / 2
    size = (hi - lo) * padding
    return unit[None, :] * size[:, None] + center[:, None]


def sinusoidal_encoding(relative: torch.Tensor, dim: int, temperature: float) -> torch.Tensor:
    """phi(r) (Tensor[..., dim]) of positions r (Tensor[...]): cos block first, then sin."""
    half = dim // 2
    exponent = torch.arange(half, dtype=relative.dtype, device=relative.device) / half
    dim_t = temperature**exponent
    angles = relative[..., None] / dim_t
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def axis_bins(
    boxes: torch.Tensor, priors: torch.Tensor, axis: int, num_bins: int, padding: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(bins (N, B), bins relative to the prior (N, B)) of axis 0 (x) or 1 (y)."""
    bins = bin_positions(boxes[:, axis], boxes[:, axis + 2], num_bins, padding)
    return bins, bins - priors[:, axis : axis + 1]


def _decode_axis(
    probs: torch.Tensor, bins: torch.Tensor, logits: torch.Tensor, mode: str
) -> torch.Tensor:
    """Coordinates (N, K) from probabilities/logits (N, K, B) over bins (N, B)."""
    if mode == "expectation":
        return (probs * bins[:, None, :]).sum(-1)
    # torch.argmax returns the first index among equal maxima, which is the contract on ties.
    index = logits.argmax(-1)
    return bins.gather(1, index)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"dcc_decode: mode must be one of {MODES}, got {mode!r}")


def dcc_decode(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    num_bins: tuple[int, int] = (192, 256),
    padding: float = 1.25,
    temperature: float = 300.0,
    mode: str = "expectation",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op's contract with folded queries, computed in the queries' dtype.

    Args:
        query_x, query_y (Tensor[N, K, D]): keypoint features already multiplied by the weight of
            the axis's Linear (see `fold_queries`); D even.
        boxes (Tensor[N, 4]): xyxy boxes in pixels. priors (Tensor[N, 2]): prior points (x, y).
    Returns:
        keypoints (Tensor[N, K, 2]) and confidence (Tensor[N, K, 2]): the peak softmax probability
        per axis, both in the queries' dtype. Both are NaN where the softmax is undefined (a NaN
        or +inf logit, or all logits -inf) or the coordinate is not finite, in either mode: the
        op's NaN policy.
    """
    _check_mode(mode)
    dtype = query_x.dtype
    boxes, priors = boxes.to(dtype), priors.to(dtype)
    coords, confidences = [], []
    for axis, query in enumerate((query_x, query_y.to(dtype))):
        bins, relative = axis_bins(boxes, priors, axis, num_bins[axis], padding)
        encodings = sinusoidal_encoding(relative, query.shape[-1], temperature)  # (N, B, D)
        logits = query @ encodings.transpose(1, 2)  # (N, K, B)
        probs = torch.softmax(logits, dim=-1)  # subtracts the max internally
        coord = _decode_axis(probs, bins, logits, mode)
        undefined = torch.isnan(probs).any(-1) | ~torch.isfinite(coord)
        coords.append(coord.masked_fill(undefined, torch.nan))
        confidences.append(probs.amax(-1).masked_fill(undefined, torch.nan))
    return torch.stack(coords, -1), torch.stack(confidences, -1)


def mmpose_softmax(logits: torch.Tensor) -> torch.Tensor:
    """mmpose's `_apply_softmax`: clamp, subtract the detached max, divide by (sum + 1e-8)."""
    logits = logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
    exp = (logits - logits.amax(-1, keepdim=True).detach()).exp()
    return exp / (exp.sum(-1, keepdim=True) + SOFTMAX_EPS)


def dcc_decode_unfolded(
    feats: torch.Tensor,
    x_fc: nn.Linear,
    y_fc: nn.Linear,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    num_bins: tuple[int, int] = (192, 256),
    padding: float = 1.25,
    temperature: float = 300.0,
    mode: str = "expectation",
) -> tuple[torch.Tensor, torch.Tensor]:
    """mmpose's own decode: every bin encoding goes through the axis's Linear, then the logits.

    Args:
        feats (Tensor[N, K, C]): keypoint features after the GAU.
        x_fc, y_fc: Linear(D -> C) of each axis. boxes (Tensor[N, 4]) xyxy; priors (Tensor[N, 2]).
    Returns:
        keypoints (Tensor[N, K, 2]) and confidence (Tensor[N, K, 2]) in the features' dtype.
    """
    _check_mode(mode)
    dtype = feats.dtype
    boxes, priors = boxes.to(dtype), priors.to(dtype)
    coords, confidences = [], []
    for axis, linear in enumerate((x_fc, y_fc)):
        bins, relative = axis_bins(boxes, priors, axis, num_bins[axis], padding)
        encodings = linear(sinusoidal_encoding(relative, linear.in_features, temperature))
        logits = feats @ encodings.transpose(1, 2)  # (N, K, B)
        probs = mmpose_softmax(logits)
        coords.append(_decode_axis(probs, bins, logits, mode))
        confidences.append(probs.amax(-1))
    return torch.stack(coords, -1), torch.stack(confidences, -1)


def fold_queries(feats: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """Moves an axis's Linear into the queries: <f, W phi + c> = <W^T f, phi> + <f, c>.

    The bias term <f, c> is the same for every bin of a keypoint, so the softmax removes it.
    feats (Tensor[N, K, C]) -> queries (Tensor[N, K, D]) with D = linear.in_features.
    """
    return feats @ linear.weight.to(feats.dtype)
