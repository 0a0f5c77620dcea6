"""Inputs and the float64-oracle comparison shared by the dcc_decode tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rtmo_kernels.reference import dcc as reference

# The tolerance policy (ARCHITECTURE.md): a kernel's error against the float64 reference may be at
# most this multiple of the error of the reference itself run in float32 (the kernels' compute
# dtype) on the same inputs, plus a floor.
ERROR_FACTOR = 2.0
# Floors. A kernel still rounds its outputs to float32 when the float32 reference happens to be
# exact on a case: 8 float32 ulps of the coordinate magnitude; plus 1e-4 px for coordinates near 0,
# where the summation order of the 128-term logits (1e-6 relative of logits ~10) moves the softmax
# by ~1e-5 of a ~1 px bin spacing. Confidences are probabilities in [0, 1]: 2e-6 covers the
# same logit rounding (a logit error of 1e-6 changes a probability p by p * 1e-6).
KEYPOINT_FLOOR_ULPS = 8
KEYPOINT_FLOOR_PX = 1e-4
CONFIDENCE_FLOOR = 2e-6


@dataclass
class DccInputs:
    query_x: torch.Tensor
    query_y: torch.Tensor
    boxes: torch.Tensor
    priors: torch.Tensor

    def args(self) -> tuple[torch.Tensor, ...]:
        return self.query_x, self.query_y, self.boxes, self.priors

    def to(self, dtype: torch.dtype) -> DccInputs:
        return DccInputs(*(t.to(dtype) for t in self.args()))


def make_inputs(
    n: int,
    k: int,
    d: int,
    seed: int = 0,
    origin: float = 0.0,
    extent: float = 600.0,
    box_size: tuple[float, float] = (5.0, 300.0),
    query_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> DccInputs:
    """Random queries (N(0, scale^2): logits of std ~8 at D = 128, as sharp as a trained head's)
    and boxes of random size at `origin + [0, extent)` with priors inside them."""
    g = torch.Generator().manual_seed(seed)
    query_x = torch.randn(n, k, d, generator=g) * query_scale
    query_y = torch.randn(n, k, d, generator=g) * query_scale
    low, high = box_size
    top_left = origin + torch.rand(n, 2, generator=g) * extent
    size = low + torch.rand(n, 2, generator=g) * (high - low)
    boxes = torch.cat([top_left, top_left + size], 1)
    priors = top_left + size * torch.rand(n, 2, generator=g)
    return DccInputs(query_x, query_y, boxes, priors).to(dtype)


def assert_matches_oracle(
    result: tuple[torch.Tensor, torch.Tensor], inputs: DccInputs, **kwargs
) -> None:
    """Checks both outputs' shape and dtype and the tolerance policy against the float64 oracle."""
    n, k = inputs.query_x.shape[:2]
    oracle = reference.dcc_decode(*inputs.to(torch.float64).args(), **kwargs)
    same_dtype = reference.dcc_decode(*inputs.to(torch.float32).args(), **kwargs)
    for name, got, want, ref32 in zip(
        ("keypoints", "confidence"), result, oracle, same_dtype, strict=True
    ):
        assert got.shape == (n, k, 2), f"{name}: shape {tuple(got.shape)}"
        assert got.dtype == torch.float32, f"{name}: dtype {got.dtype}"
        if want.numel() == 0:
            continue
        ref_error = (ref32.double() - want).abs().max().item()
        error = (got.double() - want).abs().max().item()
        if name == "keypoints":
            ulp = torch.finfo(torch.float32).eps * want.abs().max().clamp(min=1.0).item()
            floor = KEYPOINT_FLOOR_ULPS * ulp + KEYPOINT_FLOOR_PX
        else:
            floor = CONFIDENCE_FLOOR
        assert error <= ERROR_FACTOR * ref_error + floor, (
            f"{name}: error {error:.3g} vs float32 reference error {ref_error:.3g} "
            f"(floor {floor:.3g})"
        )
