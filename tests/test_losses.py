"""RTMOModel.loss against mmpose 1.3.2's RTMOHead.loss (tests/fixtures/*_losses.npz, made by mmpose
itself: tests/fixtures/make_loss_fixtures.py), the losses one by one, and bad targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loss_fixtures import GRADIENT_PARAMS, LOSS_FIXTURES, load_fixture, weights_checksum
from torch import nn

from rtmo.config import from_name
from rtmo.model import RTMOModel
from rtmo.train import losses

# Loss values: the bound. mmpose's own float32 run is within 5e-5 of its float64 values
# (largest: loss_mle, whose softmax over 192/256 bins sums in float32).
LOSS_RTOL = 1e-4
# Gradients (relative L2): the bound, except where mmpose's own float32 gradient is
# further than half of it from mmpose's float64 one; there at most 2x mmpose's own float32 error
# (the tolerance policy). Those are the gradients reaching the boxes through the MLE loss's bins:
# out_bbox of the stride-32 level and everything below the head (measured 1e-3 .. 5e-3).
GRAD_RTOL = 1e-3
# float64 against mmpose's float64: what is left is the fixtures' gradients stored in float32
# (6e-8) and the float32 constants both sides share.
FLOAT64_RTOL = 1e-6


def _frozen_bn_train_mode(model: nn.Module) -> nn.Module:
    """Train mode with every BatchNorm on its running statistics, as the fixtures were made."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


@pytest.fixture(scope="module", params=list(LOSS_FIXTURES))
def fixture(request):
    return request.param, *load_fixture(request.param)


def _run(model, images, targets, stage, backend="auto"):
    model.zero_grad()
    result = model.loss(images, targets, stage, backend=backend)
    sum(result.values()).backward()
    params = dict(model.named_parameters())
    return result, {name: params[name].grad.double() for name in GRADIENT_PARAMS}


def _rel_l2(ours: torch.Tensor, ref: np.ndarray) -> float:
    ref = torch.from_numpy(ref).double()
    return float((ours.double() - ref).norm() / ref.norm())


def test_seeded_weights_are_the_fixtures(fixture):
    variant, model, _, _, ref = fixture
    if "weights_checksum" not in ref:
        pytest.skip("RTMO-t uses the shared fixture's checkpoint")
    assert weights_checksum(model) == float(ref["weights_checksum"])


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_float32_losses_and_gradients_match_mmpose(fixture, stage):
    variant, model, images, targets, ref = fixture
    result, grads = _run(_frozen_bn_train_mode(model), images, targets, stage)
    expected = sorted(k.split("/")[1] for k in ref if k.startswith(f"stage{stage}/loss_"))
    assert sorted(result) == expected
    for name, value in result.items():
        reference = float(ref[f"stage{stage}/{name}"])
        assert abs(value.item() - reference) <= LOSS_RTOL * abs(reference), (variant, name)
    for name, grad in grads.items():
        own_error = float(ref[f"stage{stage}/f32_error/{name}"])
        tolerance = max(GRAD_RTOL, 2 * own_error)
        error = _rel_l2(grad, ref[f"stage{stage}/grad/{name}"])
        assert error <= tolerance, (variant, name, error, tolerance)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_float64_losses_and_gradients_equal_mmpose(fixture, stage):
    variant, model, images, targets, ref = fixture
    model = _frozen_bn_train_mode(model).double()
    try:
        result, grads = _run(model, images.double(), targets, stage, backend="reference")
    finally:
        model.float()
    for name, value in result.items():
        reference = float(ref[f"stage{stage}/{name}"])
        assert abs(value.item() - reference) <= FLOAT64_RTOL * abs(reference), (variant, name)
    for name, grad in grads.items():
        error = _rel_l2(grad, ref[f"stage{stage}/grad/{name}"])
        assert error <= FLOAT64_RTOL, (variant, name, error)
