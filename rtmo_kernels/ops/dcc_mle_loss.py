"""rtmo::dcc_mle_loss: the DCC training path (bins -> encodings -> logits -> softmax -> MLE loss
against the Laplace target), forward and backward, one name on four backends.

The compiled and Triton backends are two ops each, a forward that keeps only per-row statistics
and a backward that recomputes the encodings and logits from them (flash-attention style), joined
by `torch.library.register_autograd` so autograd, `torch.compile` and `opcheck` see one
differentiable op. The reference backend is plain autograd over the unfused computation.
"""

from __future__ import annotations

from collections.abc import Callable

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
_FLOAT64_BACKENDS = ("reference", "cpu")


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
) -> torch.device:
    check_tensor(_OP, "query_x", query_x, 3, _DTYPES)
    check_tensor(_OP, "query_y", query_y, 3, _DTYPES)
    check_tensor(_OP, "boxes", boxes, 2, _DTYPES, last_dim=4)
    check_tensor(_OP, "priors", priors, 2, _DTYPES, last_dim=2)
    check_tensor(_OP, "sigmas", sigmas, 2, _DTYPES)
    check_tensor(_OP, "target_keypoints", target_keypoints, 3, _DTYPES, last_dim=2)
    check_tensor(_OP, "areas", areas, 1, _DTYPES)
    device = check_same_device(
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
    if d % 2 or d == 0:
        raise ValueError(
            f"{_OP}: the query dimension D must be even and > 0 (cos and sin halves), "
            f"got shape {tuple(query_x.shape)}"
        )
    if len(num_bins) != 2 or any(not isinstance(b, int) or b < 2 for b in num_bins):
        raise ValueError(f"{_OP}: num_bins must be two integers >= 2 (x, y), got {num_bins!r}")
    if not padding > 0:
        raise ValueError(f"{_OP}: padding must be > 0, got {padding!r}")
    if not temperature > 0:
        raise ValueError(f"{_OP}: temperature must be > 0, got {temperature!r}")
    return device


@torch._dynamo.assume_constant_result
def _resolve(backend: str, device: torch.device, float64: bool) -> str:
    # A trace-time constant under torch.compile (see dcc_decode). float64 runs on the reference
    # and the CPU kernel only: "auto" on a GPU then takes the reference.
    chosen = _backend.resolve_backend(backend, device, _OP)
    if float64 and chosen not in _FLOAT64_BACKENDS:
        if backend == "auto":
            return "reference"
        raise TypeError(
            f"{_OP}: float64 inputs run on the backends {_FLOAT64_BACKENDS}, not {chosen!r}"
        )
    return chosen


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
    over K, mean over instances). Neither the (N, K, B) logits nor the (N, B, D) encodings are
    materialised by the kernels; the backward recomputes them.

    Args:
        query_x, query_y (Tensor[N, K, D]): folded queries (`rtmo_kernels.reference.dcc.
            fold_queries`, as for `dcc_decode`); D even.
        boxes (Tensor[N, 4]): predicted xyxy boxes in pixels (the bins' extent; differentiable).
        priors (Tensor[N, 2]): prior points (x, y) in pixels.
        sigmas (Tensor[N, K]): raw sigma_fc output (clipped at 1e-3 inside; differentiable).
        target_keypoints (Tensor[N, K, 2]): GT keypoints in pixels.
        areas (Tensor[N]): GT areas (square root clipped at 1 inside; a negative area gives NaN,
            as in mmpose).
        num_bins: bins along (x, y), each >= 2. padding: box expansion about its center.
        temperature: sinusoidal encoding temperature.
        backend: "auto", "reference", "cpu", "cuda" or "triton".
        All tensors fp32/fp16/bf16 (computed in fp32) or float64 (computed in float64 on the
        reference and CPU backends).
    Returns:
        nll (Tensor[N, K]): differentiable w.r.t. query_x, query_y, boxes and sigmas; and
        keypoints (Tensor[N, K, 2]): the decoded expectation (x, y), not differentiable. Both
        float32 (float64 for float64 queries).
    """
    device = _validate(
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
    chosen = _resolve(backend, device, query_x.dtype == torch.float64)
    args = (query_x, query_y, boxes, priors, sigmas, target_keypoints, areas)
    params = (num_bins[0], num_bins[1], float(padding), float(temperature))
    if chosen in ("cpu", "cuda"):
        nll, keypoints, _ = torch.ops.rtmo.dcc_mle_loss_forward(*args, *params)
        return nll, keypoints
    if chosen == "triton":
        from rtmo_kernels.triton.dcc_mle_loss import dcc_mle_loss_forward_triton

        nll, keypoints, _ = dcc_mle_loss_forward_triton(*args, *params)
        return nll, keypoints
    dtype = compute_dtype(query_x.dtype)
    return reference.dcc_mle_loss(query_x.to(dtype), *args[1:], num_bins, padding, temperature)


def fake_forward(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
    num_bins_x: int,
    num_bins_y: int,
    padding: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output shapes of the forward ops: nll (N, K), keypoints (N, K, 2), stats (N, K, 2, 3)."""
    n, k = query_x.shape[0], query_x.shape[1]
    dtype = compute_dtype(query_x.dtype)
    return (
        query_x.new_empty((n, k), dtype=dtype),
        query_x.new_empty((n, k, 2), dtype=dtype),
        query_x.new_empty((n, k, 2, 3), dtype=dtype),
    )


def fake_backward(
    grad_nll: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
    stats: torch.Tensor,
    num_bins_x: int,
    num_bins_y: int,
    padding: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output shapes of the backward ops: contiguous gradients shaped and typed as their inputs."""
    return tuple(t.new_empty(t.shape) for t in (query_x, query_y, boxes, sigmas))


def register_autograd(forward_op: str, backward: Callable[..., tuple[torch.Tensor, ...]]) -> None:
    """Makes `forward_op` differentiable through `backward` (a backward op with the schema of
    rtmo::dcc_mle_loss_backward): gradients for query_x, query_y, boxes and sigmas."""

    def setup_context(ctx, inputs, output) -> None:
        query_x, query_y, boxes, priors, sigmas, target_keypoints, areas, *params = inputs
        _, keypoints, stats = output
        ctx.mark_non_differentiable(keypoints, stats)
        ctx.save_for_backward(
            query_x, query_y, boxes, priors, sigmas, target_keypoints, areas, stats
        )
        ctx.params = params

    def differentiate(ctx, grad_nll, _grad_keypoints, _grad_stats):
        grad_qx, grad_qy, grad_boxes, grad_sigmas = backward(
            grad_nll, *ctx.saved_tensors, *ctx.params
        )
        # Inputs: query_x, query_y, boxes, priors, sigmas, target_keypoints, areas, 4 scalars.
        return grad_qx, grad_qy, grad_boxes, None, grad_sigmas, None, None, None, None, None, None

    torch.library.register_autograd(forward_op, differentiate, setup_context=setup_context)


if _backend.extension() is not None:
    # The schemas come from rtmo_kernels._C; without it there is no op to register for.
    torch.library.register_fake("rtmo::dcc_mle_loss_forward")(fake_forward)
    torch.library.register_fake("rtmo::dcc_mle_loss_backward")(fake_backward)
    register_autograd(
        "rtmo::dcc_mle_loss_forward",
        lambda *args: torch.ops.rtmo.dcc_mle_loss_backward(*args),
    )
