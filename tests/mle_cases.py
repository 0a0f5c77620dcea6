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


# The tolerance policy (ARCHITECTURE.md): a kernel's error against the float64 reference may be at
# most this multiple of the error of the reference itself run in float32 (the kernels' compute
# dtype) on the same inputs, plus a floor.
ERROR_FACTOR = 2.0
# Floors, relative to the largest magnitude of each output. The kernels sum the 128-term logits
# and the bins in another order than the float32 reference; where the reference happens to be
# exact on a case, that reordering alone costs a few float32 ulps: 16 ulps (1e-6) of the largest
# value. Keypoints: as dcc_decode's (8 ulps of the coordinate plus 1e-4 px).
FLOOR_ULPS = 16
KEYPOINT_FLOOR_PX = 1e-4
# The names of the differentiable inputs, in MleInputs order.
DIFFERENTIABLE = ("query_x", "query_y", "boxes", "sigmas")


def upstream_gradient(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """A fixed random d loss / d nll (N, K) in float64: every row weighted differently."""
    return torch.rand(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def loss_and_grads(
    run, inputs: MleInputs, grad_nll: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """nll, keypoints and the gradients of sum(grad_nll * nll) w.r.t. the differentiable inputs,
    for run(*args) -> (nll, keypoints)."""
    leaves = MleInputs(*(t.detach().clone() for t in inputs.args()))
    wrt = [getattr(leaves, name).requires_grad_() for name in DIFFERENTIABLE]
    nll, keypoints = run(*leaves.args())
    grads = torch.autograd.grad((nll * grad_nll.to(nll.dtype)).sum(), wrt, allow_unused=True)
    return nll.detach(), keypoints, grads


def assert_matches_oracle(run, inputs: MleInputs, **kwargs) -> None:
    """Checks nll, keypoints and the four gradients of run(*args) -> (nll, keypoints): shapes,
    dtypes (outputs float32, gradients in their input's dtype) and the tolerance policy against
    the float64 reference on the same (already rounded) inputs."""
    from rtmo_kernels.reference import dcc_mle_loss as reference

    n, k = inputs.query_x.shape[:2]
    grad_nll = upstream_gradient(n, k)

    def run_reference(*args):
        return reference.dcc_mle_loss(*args, **kwargs)

    got = loss_and_grads(run, inputs, grad_nll)
    oracle = loss_and_grads(run_reference, inputs.to(torch.float64), grad_nll)
    same_dtype = loss_and_grads(run_reference, inputs.to(torch.float32), grad_nll)
    assert got[0].shape == (n, k), f"nll: shape {tuple(got[0].shape)}"
    assert got[1].shape == (n, k, 2), f"keypoints: shape {tuple(got[1].shape)}"
    assert got[0].dtype == got[1].dtype == torch.float32
    names = ("nll", "keypoints", *(f"grad {name}" for name in DIFFERENTIABLE))
    flatten = [(got[0], oracle[0], same_dtype[0]), (got[1], oracle[1], same_dtype[1])]
    flatten += list(zip(got[2], oracle[2], same_dtype[2], strict=True))
    for index, (name, (value, want, ref32)) in enumerate(zip(names, flatten, strict=True)):
        if index >= 2:
            source = getattr(inputs, DIFFERENTIABLE[index - 2])
            assert value.shape == source.shape, f"{name}: shape {tuple(value.shape)}"
            assert value.dtype == source.dtype, f"{name}: dtype {value.dtype}"
        if want.numel() == 0:
            continue
        magnitude = want.abs().max().clamp(min=1e-30).item()
        # Gradients come back in their input's dtype: its rounding (half an ulp) is part of the
        # floor for fp16/bf16 inputs.
        out_eps = torch.finfo(value.dtype).eps
        floor = FLOOR_ULPS * torch.finfo(torch.float32).eps * magnitude + out_eps / 2 * magnitude
        if name == "keypoints":
            floor += KEYPOINT_FLOOR_PX
        ref_error = (ref32.double() - want).abs().max().item()
        error = (value.double() - want).abs().max().item()
        assert error <= ERROR_FACTOR * ref_error + floor, (
            f"{name}: error {error:.3g} vs float32 reference error {ref_error:.3g} "
            f"(floor {floor:.3g}, magnitude {magnitude:.3g})"
        )
