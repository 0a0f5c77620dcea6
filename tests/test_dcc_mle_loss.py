"""rtmo_kernels.dcc_mle_loss: the reference against mmpose's unfused form, gradients by gradcheck,
every backend against the float64 reference, edge cases, errors, torch.library integration."""

from __future__ import annotations

import pytest
import torch
from mle_cases import MleInputs, make_inputs
from torch import nn

import rtmo_kernels
from rtmo_kernels.reference import dcc_mle_loss as reference
from rtmo_kernels.reference.dcc import fold_queries

# Small shapes for gradcheck (its cost is one forward per input element).
GRAD_BINS = (7, 10)


def _loss(inputs: MleInputs, backend: str, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return rtmo_kernels.dcc_mle_loss(*inputs.args(), backend=backend, **kwargs)


def _differentiable(inputs: MleInputs) -> MleInputs:
    """Leaves requiring grad for the four differentiable inputs."""
    out = MleInputs(*(t.detach().clone() for t in inputs.args()))
    for t in (out.query_x, out.query_y, out.boxes, out.sigmas):
        t.requires_grad_()
    return out


def test_reference_gradcheck():
    inputs = _differentiable(make_inputs(3, 4, 6, seed=1, dtype=torch.float64))

    def nll(query_x, query_y, boxes, sigmas):
        return reference.dcc_mle_loss(
            query_x,
            query_y,
            boxes,
            inputs.priors,
            sigmas,
            inputs.target_keypoints,
            inputs.areas,
            GRAD_BINS,
        )[0]

    assert torch.autograd.gradcheck(
        nll, (inputs.query_x, inputs.query_y, inputs.boxes, inputs.sigmas)
    )


def test_unfolded_reference_equals_folded():
    # mmpose's way (encodings through the Linear, bias included) against folded queries in
    # float64: the bias is a per-keypoint constant the softmax removes; values and gradients agree
    # to float64 rounding.
    n, k, c, d = 5, 17, 32, 64
    torch.manual_seed(0)
    feats = torch.randn(n, k, c, dtype=torch.float64, requires_grad=True)
    x_fc = nn.Linear(d, c).double()
    y_fc = nn.Linear(d, c).double()
    inputs = _differentiable(make_inputs(n, k, d, seed=2, dtype=torch.float64))
    rest = (inputs.boxes, inputs.priors, inputs.sigmas, inputs.target_keypoints, inputs.areas)
    unfolded = reference.dcc_mle_loss_unfolded(feats, x_fc, y_fc, *rest)
    folded = reference.dcc_mle_loss(fold_queries(feats, x_fc), fold_queries(feats, y_fc), *rest)
    torch.testing.assert_close(unfolded[0], folded[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(unfolded[1], folded[1], rtol=1e-12, atol=1e-9)
    differentiable = (feats, inputs.boxes, inputs.sigmas)
    grads_unfolded = torch.autograd.grad(unfolded[0].sum(), differentiable)
    grads_folded = torch.autograd.grad(folded[0].sum(), differentiable)
    # Except one term: the bias adds c * dP/dl summed over the bins, c P (1 - sum_i p_i), which
    # mmpose's 1e-8 in the softmax denominator makes c P 1e-8 / sum instead of 0.
    for got, want in zip(grads_folded, grads_unfolded, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-8 * want.abs().max().item())


@pytest.mark.parametrize("backend", ["reference"])
def test_public_op_gradcheck(backend):
    inputs = _differentiable(make_inputs(2, 3, 4, seed=3, dtype=torch.float64))

    def nll(query_x, query_y, boxes, sigmas):
        return rtmo_kernels.dcc_mle_loss(
            query_x,
            query_y,
            boxes,
            inputs.priors,
            sigmas,
            inputs.target_keypoints,
            inputs.areas,
            GRAD_BINS,
            backend=backend,
        )[0]

    assert torch.autograd.gradcheck(
        nll, (inputs.query_x, inputs.query_y, inputs.boxes, inputs.sigmas)
    )


def test_reference_backend_returns_float32():
    inputs = make_inputs(3, 17, 128, seed=4, dtype=torch.float16)
    nll, keypoints = _loss(inputs, "reference")
    assert nll.shape == (3, 17)
    assert keypoints.shape == (3, 17, 2)
    assert nll.dtype == keypoints.dtype == torch.float32
    want = reference.dcc_mle_loss(*inputs.to(torch.float32).args())
    torch.testing.assert_close(nll, want[0], rtol=0, atol=0)
    torch.testing.assert_close(keypoints, want[1], rtol=0, atol=0)
