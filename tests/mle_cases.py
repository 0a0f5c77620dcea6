"""Inputs and the float64-oracle comparison shared by the dcc_mle_loss tests."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class MleInputs:
    query_x: torch.Tensor
    query_y: torch.Tensor
    boxes: torch.Tensor
    priors: torch.Tensor
    sigmas: torch.Tensor
    target_keypoints: torch.Tensor
    areas: torch.Tensor

    def args(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def to(self, dtype: torch.dtype) -> MleInputs:
        return MleInputs(*(t.to(dtype) for t in self.args()))


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
) -> MleInputs:
    """Random queries (N(0, scale^2): logits of std ~8 at D = 128, as sharp as a trained head's),
    boxes of random size at `origin + [0, extent)` with priors inside them, GT keypoints around
    the boxes (some outside), sigmas in (0, 0.1) like sigma_fc's with a few below the 1e-3 clip,
    and areas around half the box area with a few below 1."""
    g = torch.Generator().manual_seed(seed)
    query_x = torch.randn(n, k, d, generator=g) * query_scale
    query_y = torch.randn(n, k, d, generator=g) * query_scale
    low, high = box_size
    top_left = origin + torch.rand(n, 2, generator=g) * extent
    size = low + torch.rand(n, 2, generator=g) * (high - low)
    boxes = torch.cat([top_left, top_left + size], 1)
    priors = top_left + size * torch.rand(n, 2, generator=g)
    sigmas = 0.1 * torch.rand(n, k, generator=g)
    sigmas = torch.where(torch.rand(n, k, generator=g) < 0.1, sigmas * 0.01, sigmas)
    # GT keypoints in the box padded by 1.3 (the bins cover 1.25): some fall outside the bins.
    unit = -0.15 + 1.3 * torch.rand(n, k, 2, generator=g)
    target_keypoints = top_left[:, None, :] + size[:, None, :] * unit
    areas = 0.53 * size.prod(1) * (0.5 + torch.rand(n, generator=g))
    areas = torch.where(torch.rand(n, generator=g) < 0.1, torch.rand(n, generator=g), areas)
    inputs = MleInputs(query_x, query_y, boxes, priors, sigmas, target_keypoints, areas)
    return inputs.to(dtype)
