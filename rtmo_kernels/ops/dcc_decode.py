"""rtmo::dcc_decode: the fused Dynamic Coordinate Classifier decode (one name, four backends)."""

from __future__ import annotations

import torch

from rtmo_kernels import _backend
from rtmo_kernels._validation import check_leading_dims, check_same_device, check_tensor
from rtmo_kernels.reference import dcc as reference

_OP = "dcc_decode"
MODES = reference.MODES


def _validate(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    num_bins: tuple[int, int],
    mode: str,
) -> None:
    check_tensor(_OP, "query_x", query_x, 3)
    check_tensor(_OP, "query_y", query_y, 3)
    check_tensor(_OP, "boxes", boxes, 2, last_dim=4)
    check_tensor(_OP, "priors", priors, 2, last_dim=2)
    check_same_device(_OP, query_x=query_x, query_y=query_y, boxes=boxes, priors=priors)
    if query_y.shape != query_x.shape:
        raise ValueError(
            f"{_OP}: query_y must have the shape of query_x {tuple(query_x.shape)}, "
            f"got {tuple(query_y.shape)}"
        )
    check_leading_dims(_OP, query_x.shape[0], "N", boxes=boxes, priors=priors)
    if query_x.shape[2] % 2:
        raise ValueError(
            f"{_OP}: the query dimension D must be even (cos and sin halves), "
            f"got shape {tuple(query_x.shape)}"
        )
    if len(num_bins) != 2 or any(not isinstance(b, int) or b < 2 for b in num_bins):
        raise ValueError(f"{_OP}: num_bins must be two integers >= 2 (x, y), got {num_bins!r}")
    if mode not in MODES:
        raise ValueError(f"{_OP}: mode must be one of {MODES}, got {mode!r}")


@torch._dynamo.assume_constant_result
def _resolve(backend: str, device: torch.device) -> str:
    # A trace-time constant under torch.compile: the choice reads the environment and probes for
    # packages, which a compiled graph cannot contain.
    return _backend.resolve_backend(backend, device, _OP)


def dcc_decode(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    num_bins: tuple[int, int] = (192, 256),
    padding: float = 1.25,
    temperature: float = 300.0,
    mode: str = "expectation",
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decodes keypoint coordinates with the Dynamic Coordinate Classifier (RTMO.md §3).

    For each instance and axis the padded box is cut into `num_bins` bins, each bin is encoded
    sinusoidally relative to the prior, the logits are <query, encoding>, and the coordinate is the
    expectation (or the first argmax) of the bins under the softmax.

    Args:
        query_x, query_y (Tensor[N, K, D]): per-keypoint queries with the axis's `x_fc` / `y_fc`
            Linear folded in (`rtmo_kernels.reference.dcc.fold_queries`); D even. fp32/fp16/bf16.
        boxes (Tensor[N, 4]): xyxy boxes in pixels.
        priors (Tensor[N, 2]): prior points (x, y) in pixels.
        num_bins: bins along (x, y), each >= 2.
        padding: box expansion about its center.
        temperature: sinusoidal encoding temperature (frequencies temperature^(-j / (D/2))).
        mode: "expectation" (what RTMO uses) or "argmax" (first index on ties).
        backend: "auto", "reference", "cpu", "cuda" or "triton".
    Returns:
        keypoints (Tensor[N, K, 2]) float32 (x, y) in pixels, and confidence (Tensor[N, K, 2])
        float32: the peak softmax probability along x and along y.

    NaN policy, the same on every backend: the coordinate and the confidence of a keypoint along
    an axis are both NaN when its softmax is undefined (a NaN or +inf logit, or only -inf ones),
    which a NaN or infinite value in its query row or in the box or prior coordinates of that
    axis always causes, and when the coordinate lies beyond the float32 range. Outputs are never
    infinite. Finite inputs with boxes and priors within +-1e30 px and |query|_1 <= 1e30 (logits
    that cannot overflow float32) give finite outputs: confidence in (0, 1], the coordinate
    between the first and the last bin. Past +-1e15 px the bins' phases are float64 rounding
    noise and the backends' finite results differ (tests/test_fuzz_kernels.py).
    """
    _validate(query_x, query_y, boxes, priors, num_bins, mode)
    chosen = _resolve(backend, query_x.device)
    args = (query_x, query_y, boxes, priors, num_bins[0], num_bins[1], padding, temperature, mode)
    if chosen in ("cpu", "cuda"):
        return torch.ops.rtmo.dcc_decode(*args)
    if chosen == "triton":
        from rtmo_kernels.triton.dcc_decode import dcc_decode_triton

        return dcc_decode_triton(*args)
    keypoints, confidence = reference.dcc_decode(
        query_x.float(), query_y.float(), boxes, priors, num_bins, padding, temperature, mode
    )
    return keypoints, confidence


def fake_dcc_decode(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    num_bins_x: int,
    num_bins_y: int,
    padding: float,
    temperature: float,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output shapes of rtmo::dcc_decode (and rtmo::dcc_decode_triton) for fake tensors."""
    n, k = query_x.shape[0], query_x.shape[1]
    out = query_x.new_empty((n, k, 2), dtype=torch.float32)
    return out, torch.empty_like(out)


if _backend.extension() is not None:
    # The schema comes from rtmo_kernels._C; without it there is no op to give a fake kernel to.
    torch.library.register_fake("rtmo::dcc_decode")(fake_dcc_decode)
