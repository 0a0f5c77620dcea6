"""rtmo::dcc_mle_loss: the DCC training path (bins -> encodings -> logits -> softmax -> MLE loss
against the Laplace target), forward and backward."""

from __future__ import annotations

import torch

from rtmo_kernels import _backend
from rtmo_kernels._validation import (
    FLOAT_DTYPES,
    check_leading_dims,
    check_same_device,
    check_tensor,
)
from rtmo_kernels.reference import dcc_mle_loss as reference

_OP = "dcc_mle_loss"
# float64 runs in float64 on the reference and the CPU kernel (gradcheck); the rest in float32.
_DTYPES = (*FLOAT_DTYPES, torch.float64)


def _validate(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
    num_bins: tuple[int, int],
    padding: float,
    temperature: float,
) -> None:
    check_tensor(_OP, "query_x", query_x, 3, _DTYPES)
    check_tensor(_OP, "query_y", query_y, 3, _DTYPES)
    check_tensor(_OP, "boxes", boxes, 2, _DTYPES, last_dim=4)
    check_tensor(_OP, "priors", priors, 2, _DTYPES, last_dim=2)
    check_tensor(_OP, "sigmas", sigmas, 2, _DTYPES)
    check_tensor(_OP, "target_keypoints", target_keypoints, 3, _DTYPES, last_dim=2)
    check_tensor(_OP, "areas", areas, 1, _DTYPES)
    check_same_device(
        _OP,
        query_x=query_x,
        query_y=query_y,
        boxes=boxes,
        priors=priors,
        sigmas=sigmas,
        target_keypoints=target_keypoints,
        areas=areas,
    )
    if query_y.shape != query_x.shape:
        raise ValueError(
            f"{_OP}: query_y must have the shape of query_x {tuple(query_x.shape)}, "
            f"got {tuple(query_y.shape)}"
        )
    n, k, d = query_x.shape
    check_leading_dims(
        _OP,
        n,
        "N",
        boxes=boxes,
        priors=priors,
        sigmas=sigmas,
        target_keypoints=target_keypoints,
        areas=areas,
    )
    for name, tensor in (("sigmas", sigmas), ("target_keypoints", target_keypoints)):
        if tensor.shape[1] != k:
            raise ValueError(
                f"{_OP}: {name} must have K={k} keypoints like query_x in dimension 1, "
                f"got shape {tuple(tensor.shape)}"
            )
    if d % 2:
        raise ValueError(
            f"{_OP}: the query dimension D must be even (cos and sin halves), "
            f"got shape {tuple(query_x.shape)}"
        )
    if len(num_bins) != 2 or any(not isinstance(b, int) or b < 2 for b in num_bins):
        raise ValueError(f"{_OP}: num_bins must be two integers >= 2 (x, y), got {num_bins!r}")
    if not padding > 0:
        raise ValueError(f"{_OP}: padding must be > 0, got {padding!r}")
    if not temperature > 0:
        raise ValueError(f"{_OP}: temperature must be > 0, got {temperature!r}")


@torch._dynamo.assume_constant_result
def _resolve(backend: str, device: torch.device) -> str:
    # A trace-time constant under torch.compile (see dcc_decode).
    return _backend.resolve_backend(backend, device, _OP)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute and return in: float64 for float64 queries, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """RTMO's MLE loss on the DCC heatmaps per instance and keypoint (RTMO.md §3, §5), fused.

    Per axis the padded predicted box is cut into `num_bins` bins, encoded sinusoidally relative
    to the prior; the softmax of <query, encoding> over the bins (mmpose's `_apply_softmax`) is
    integrated against the Laplace target t_i = exp(-|x* - b_i| / (2 s a)) / s, with
    s = max(sigma, 1e-3), a = max(sqrt(area), 1). The loss is -log(P_x P_y + 1e-4). The caller
    applies the visibility weights and the reduction (mmpose's MLECCLoss: times visibility, mean
    over K, mean over instances).

    Args:
        query_x, query_y (Tensor[N, K, D]): folded queries (`rtmo_kernels.reference.dcc.
            fold_queries`, as for `dcc_decode`); D even.
        boxes (Tensor[N, 4]): predicted xyxy boxes in pixels (the bins' extent; differentiable).
        priors (Tensor[N, 2]): prior points (x, y) in pixels.
        sigmas (Tensor[N, K]): raw sigma_fc output (clipped at 1e-3 inside; differentiable).
        target_keypoints (Tensor[N, K, 2]): GT keypoints in pixels.
        areas (Tensor[N]): GT areas (square root clipped at 1 inside).
        num_bins: bins along (x, y), each >= 2. padding: box expansion about its center.
        temperature: sinusoidal encoding temperature.
        backend: "auto", "reference", "cpu", "cuda" or "triton".
        All tensors fp32/fp16/bf16 (computed in fp32) or float64 (computed in float64).
    Returns:
        nll (Tensor[N, K]): differentiable w.r.t. query_x, query_y, boxes and sigmas; and
        keypoints (Tensor[N, K, 2]): the decoded expectation (x, y), not differentiable. Both
        float32 (float64 for float64 queries).
    """
    _validate(
        query_x,
        query_y,
        boxes,
        priors,
        sigmas,
        target_keypoints,
        areas,
        num_bins,
        padding,
        temperature,
    )
    _resolve(backend, query_x.device)
    dtype = compute_dtype(query_x.dtype)
    return reference.dcc_mle_loss(
        query_x.to(dtype),
        query_y,
        boxes,
        priors,
        sigmas,
        target_keypoints,
        areas,
        num_bins,
        padding,
        temperature,
    )
