"""RTMOModel.loss against mmpose 1.3.2's RTMOHead.loss (tests/fixtures/*_losses.npz, made by mmpose
itself with tests/fixtures/make_loss_fixtures.py), the losses one by one, empty images and bad
targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loss_fixtures import (
    GRADIENT_PARAMS,
    LOSS_FIXTURES,
    load_fixture,
    shared_t_fixture,
    weights_checksum,
)
from torch import nn

import rtmo_kernels.reference.dcc_mle_loss as mle_reference
from rtmo.train import losses, objective
from rtmo.train.objective import assign_batch

# Loss values: the bound. mmpose's own float32 run is within 5e-5 of its float64 values
# (the largest: loss_mle, whose softmax over 192/256 bins sums in float32).
LOSS_RTOL = 1e-4
# Gradients (relative L2) against mmpose's float64 gradients: the bound where mmpose's own
# float32 gradient is within half of it from its float64 one. The gradients reaching the predicted
# boxes through the MLE loss's bins (the stride-32 out_bbox, the neck and the backbone) are
# ill-conditioned in float32: mmpose's own float32 run is 1e-3 .. 5e-3 off its float64 values,
# ours up to 2.1x that (measured; it comes from the float32 forward pass: with the MLE kernel in
# float64 it stays the same). There the policy's bound: 2x mmpose's own error plus a floor (the
# issue's 1e-3).
GRAD_RTOL = 1e-3


def float32_loss_tolerance(mmpose_float32_error: float) -> float:
    """The issue's 1e-4 where mmpose's own float32 loss is within half of it from its float64
    value, else the policy's 2x that error plus 1e-4 (RTMO-m's loss_mle: mmpose's own float32
    error 5.1e-5, ours 1.5e-4)."""
    if mmpose_float32_error <= LOSS_RTOL / 2:
        return LOSS_RTOL
    return 2 * mmpose_float32_error + LOSS_RTOL


def float32_gradient_tolerance(mmpose_float32_error: float) -> float:
    if mmpose_float32_error <= GRAD_RTOL / 2:
        return GRAD_RTOL
    return 2 * mmpose_float32_error + GRAD_RTOL


# float64 against mmpose's float64. mmpose keeps two DCC constants as float32 buffers even in
# float64 (the bin grid linspace(-0.5, 0.5) and the frequencies 300^(j/64)); the MLE op computes
# them in the run's dtype. That moves the gradients through the bins by up to 2e-5 (measured,
# RTMO-t out_bbox of stride 32); everything else agrees to 8e-6.
FLOAT64_RTOL = 1e-4
# ... and with mmpose's float32 constants substituted, what is left is the fixtures' gradients
# stored in float32 (measured 3e-8).
FLOAT64_SAME_CONSTANTS_RTOL = 2e-7


def frozen_bn_train_mode(model: nn.Module) -> nn.Module:
    """Train mode with every BatchNorm on its running statistics, as the fixtures were made."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


@pytest.fixture(scope="module", params=list(LOSS_FIXTURES))
def fixture(request):
    variant = request.param
    model, images, targets, ref = load_fixture(variant)
    return variant, frozen_bn_train_mode(model), images, targets, ref


def _run(model, images, targets, stage, backend="auto"):
    model.zero_grad()
    result = model.loss(images, targets, stage, backend=backend)
    sum(result.values()).backward()
    params = dict(model.named_parameters())
    return result, {name: params[name].grad for name in GRADIENT_PARAMS}


def _rel_l2(ours: torch.Tensor, ref: np.ndarray) -> float:
    ref = torch.from_numpy(ref).double()
    return float((ours.double() - ref).norm() / ref.norm())


def _check_against_mmpose(variant, ref, stage, result, grads, loss_rtol, grad_rtol) -> None:
    expected = sorted(k.split("/")[1] for k in ref if k.startswith(f"stage{stage}/loss_"))
    assert sorted(result) == expected
    for name, value in result.items():
        reference = float(ref[f"stage{stage}/{name}"])
        error = abs(value.item() - reference) / abs(reference)
        tolerance = loss_rtol(float(ref[f"stage{stage}/f32_error/{name}"]))
        assert error <= tolerance, (variant, stage, name, error, tolerance)
    for name, grad in grads.items():
        error = _rel_l2(grad, ref[f"stage{stage}/grad/{name}"])
        tolerance = grad_rtol(float(ref[f"stage{stage}/f32_error/{name}"]))
        assert error <= tolerance, (variant, stage, name, error, tolerance)


def test_seeded_weights_are_the_fixtures(fixture):
    _, model, _, _, ref = fixture
    if "weights_checksum" not in ref:
        pytest.skip("RTMO-t uses the shared fixture's checkpoint")
    assert weights_checksum(model) == float(ref["weights_checksum"])


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_float32_losses_and_gradients_match_mmpose(fixture, stage):
    variant, model, images, targets, ref = fixture
    result, grads = _run(model, images, targets, stage)
    _check_against_mmpose(
        variant, ref, stage, result, grads, float32_loss_tolerance, float32_gradient_tolerance
    )
    if variant == "rtmo-t-body7":  # also the shared fixture's own float32 numbers
        shared = np.load(shared_t_fixture() / "rtmo-t_losses.npz")
        for name, value in result.items():
            reference = float(shared[f"stage{stage}/{name}"])
            assert abs(value.item() - reference) <= LOSS_RTOL * abs(reference), name
        for name, grad in grads.items():
            if f"stage{stage}/grad/{name}" in shared:
                error = _rel_l2(grad, shared[f"stage{stage}/grad/{name}"])
                own = float(ref[f"stage{stage}/f32_error/{name}"])
                assert error <= float32_gradient_tolerance(own), (name, error)


def _float64_stages(variant: str) -> list[int]:
    # Stage 1 (own targets) and 3 (proxy_target_cc + the auxiliary loss) cover every path;
    # the larger models run one float64 stage to keep their test short.
    return [3] if variant in ("rtmo-m-body7", "rtmo-l-body7") else [1, 3]


def test_float64_losses_and_gradients_match_mmpose(fixture):
    variant, model, images, targets, ref = fixture
    model.double()
    try:
        for stage in _float64_stages(variant):
            result, grads = _run(model, images.double(), targets, stage, backend="reference")
            _check_against_mmpose(
                variant,
                ref,
                stage,
                result,
                grads,
                lambda own: FLOAT64_RTOL,
                lambda own: FLOAT64_RTOL,
            )
    finally:
        model.float()


def _float32_constants(monkeypatch) -> None:
    """The MLE reference op with mmpose's float32 bin grid and frequencies."""

    def axis_bins(boxes, priors, axis, num_bins, padding):
        unit = torch.linspace(-0.5, 0.5, num_bins).to(boxes.dtype)
        lo, hi = boxes[:, axis], boxes[:, axis + 2]
        bins = unit * ((hi - lo) * padding)[:, None] + ((lo + hi) / 2)[:, None]
        return bins, bins - priors[:, axis : axis + 1]

    def sinusoidal_encoding(relative, dim, temperature):
        half = dim // 2
        dim_t = temperature ** (torch.arange(half, dtype=torch.float32) / half)
        angles = relative[..., None] / dim_t.to(relative.dtype)
        return torch.cat([angles.cos(), angles.sin()], dim=-1)

    monkeypatch.setattr(mle_reference, "axis_bins", axis_bins)
    monkeypatch.setattr(mle_reference, "sinusoidal_encoding", sinusoidal_encoding)


@pytest.mark.parametrize("variant", ["rtmo-t-body7", "rtmo-s-crowdpose"])
def test_float64_with_mmposes_constants_equals_mmpose(variant, monkeypatch):
    """The objective is mmpose's to the last bits float64 keeps: with mmpose's float32 DCC
    constants in the MLE reference, losses and gradients equal mmpose's float64 ones."""
    _float32_constants(monkeypatch)
    model, images, targets, ref = load_fixture(variant)
    model = frozen_bn_train_mode(model).double()
    result, grads = _run(model, images.double(), targets, 2, backend="reference")
    tolerance = FLOAT64_SAME_CONSTANTS_RTOL
    _check_against_mmpose(
        variant, ref, 2, result, grads, lambda own: tolerance, lambda own: tolerance
    )


# ---------------------------------------------------------------------------------------------
# Empty images, training modes, bad targets: RTMO-t on two 128 x 128 crops of its fixture.


@pytest.fixture(scope="module")
def small():
    model, images, targets, _ = load_fixture("rtmo-t-body7")
    people = {key: value[:1] for key, value in targets[0].items()}
    people["boxes"] = torch.tensor([[20.0, 10.0, 90.0, 120.0]])
    people["keypoints"] = people["keypoints"] * 0.3
    return frozen_bn_train_mode(model), images[:, :, :128, :128].contiguous(), people


def _empty(k: int = 17) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros(0, 4),
        "keypoints": torch.zeros(0, k, 2),
        "keypoints_visible": torch.zeros(0, k),
    }


def test_images_without_people_train_only_the_classifier(small):
    """n = 0 everywhere: no positive, so only loss_cls (every prior a negative, divided by 1);
    the other losses are zero constants, as mmpose leaves them out."""
    model, images, _ = small
    result = model.loss(images, [_empty(), _empty()], stage=3)
    assert list(result) == [
        "loss_cls", "loss_bbox", "loss_oks", "loss_vis", "loss_mle", "loss_bbox_aux"
    ]  # fmt: skip
    logits = model(images).cls_logits.flatten()
    expected = losses.varifocal_loss(logits, torch.zeros_like(logits), torch.ones_like(logits))
    torch.testing.assert_close(result["loss_cls"], expected)
    assert all(result[k].item() == 0 for k in result if k != "loss_cls")
    sum(result.values()).backward()
    assert model.head.head_module.out_cls[0].weight.grad.abs().sum() > 0


def test_an_empty_image_beside_one_with_people(small):
    model, images, person = small
    both = model.loss(images, [person, _empty()], stage=2)
    assert all(math.isfinite(v.item()) for v in both.values())
    assert both["loss_bbox"] > 0
    assert both["loss_mle"] != 0


def test_batchnorm_follows_the_module_mode(small):
    """train(): the BatchNorms learn from the batch; eval(): the training outputs (proxy
    regression, sigma) are still computed and the statistics stay."""
    model, images, person = small
    bn = model.backbone.stem.conv.bn
    before = bn.running_mean.clone()
    try:
        model.eval()
        result = model.loss(images, [person, person], stage=1)
        assert torch.equal(bn.running_mean, before)
        sum(result.values()).backward()
        assert model.head.head_module.out_kpt_reg[0].bias.grad is not None
        assert model.head.dcc.sigma_fc[0].bias.grad is not None
        model.train()
        model.loss(images, [person, person], stage=1)
        assert not torch.equal(bn.running_mean, before)
    finally:
        bn.running_mean.copy_(before)
        frozen_bn_train_mode(model)


def _tiny_person(person: dict) -> dict:
    """The person shrunk to an 8 x 8 box: the assigner gives it a single positive prior."""
    box = torch.tensor([[40.0, 40.0, 48.0, 48.0]])
    keypoints = person["keypoints"]
    keypoints = (keypoints - keypoints.mean(dim=1, keepdim=True)) * 0.05 + 44.0
    return {**person, "boxes": box, "keypoints": keypoints, "areas": torch.tensor([64.0])}


@pytest.mark.parametrize("num_positives", [0, 1, 2])
def test_train_mode_with_few_positives(small, num_positives, monkeypatch):
    """Every BatchNorm on the batch; one tiny person per image, or none. The DCC sees only the
    positives: with two its BatchNorm learns from them; a single one (no batch variance; mmpose
    1.3.2 fails there) is normalised with the running statistics, as in eval mode, and leaves
    them unchanged; with none the DCC is unused."""
    model, images, person = small
    tiny = _tiny_person(person)
    targets = [tiny] * num_positives + [_empty()] * (2 - num_positives)
    counted = []

    def counting_assign_batch(*args):
        positives = assign_batch(*args)
        counted.append(len(positives.index))
        return positives

    monkeypatch.setattr(objective, "assign_batch", counting_assign_batch)
    dcc_bn = model.head.dcc.pose_to_kpts[1]
    saved = {key: value.clone() for key, value in model.state_dict().items()}
    try:
        model.train()
        model.zero_grad()
        result = model.loss(images, targets, stage=2)
        sum(result.values()).backward()
        assert counted == [num_positives]
        assert all(math.isfinite(v.item()) for v in result.values())
        for name, param in model.named_parameters():
            assert param.grad is None or torch.isfinite(param.grad).all(), name
        moved = not torch.equal(dcc_bn.running_mean, saved["head.dcc.pose_to_kpts.1.running_mean"])
        assert moved == (num_positives == 2)
        assert (result["loss_mle"].item() != 0) == (num_positives > 0)
        if num_positives == 1:
            assert dcc_bn.weight.grad.abs().sum() > 0
            dcc_bn.eval()
            with torch.no_grad():
                on_running_stats = model.loss(images, targets, stage=2)
            for name, value in result.items():
                torch.testing.assert_close(value, on_running_stats[name], rtol=0, atol=0)
    finally:
        model.load_state_dict(saved)
        frozen_bn_train_mode(model)


def test_keypoint_outside_the_image_with_visibility_is_valid(small):
    model, images, person = small
    outside = dict(person)
    outside["keypoints"] = person["keypoints"].clone()
    outside["keypoints"][0, 0] = torch.tensor([-40.0, 300.0])
    outside["keypoints_visible"] = torch.ones_like(person["keypoints_visible"])
    result = model.loss(images, [outside, outside], stage=1)
    assert all(math.isfinite(v.item()) for v in result.values())


def _with(person: dict, **changes) -> dict:
    return {**person, **changes}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"boxes": torch.zeros(1, 5)},
            r"targets\[1\]\['boxes'\] has shape \(1, 5\), expected \(1, 4\)",
        ),
        (
            {"keypoints": torch.zeros(1, 14, 2)},
            r"targets\[1\]\['keypoints'\] has shape \(1, 14, 2\), expected \(1, 17, 2\).*"
            r"14 keypoints but the model has 17",
        ),
        (
            {"keypoints_visible": torch.ones(2, 17)},
            r"targets\[1\]\['keypoints_visible'\] has shape \(2, 17\), expected \(1, 17\)",
        ),
        (
            {"keypoints": torch.full((1, 17, 2), float("nan"))},
            r"targets\[1\]\['keypoints'\] holds NaN or infinite values.*shape \(1, 17, 2\)",
        ),
        (
            {"boxes": torch.tensor([[0.0, 0.0, float("inf"), 5.0]])},
            r"targets\[1\]\['boxes'\] holds NaN or infinite values.*shape \(1, 4\)",
        ),
        (
            {"areas": torch.tensor([-1.0])},
            r"targets\[1\]\['areas'\] has values out of range; expected values >= 0, shape \(1,\)",
        ),
        (
            {"keypoints_visible": torch.full((1, 17), 2.0)},
            r"targets\[1\]\['keypoints_visible'\] .*expected values in \[0, 1\], shape \(1, 17\)",
        ),
        (
            {"boxes": torch.tensor([[50.0, 0.0, 10.0, 5.0]])},
            r"targets\[1\]\['boxes'\] has x2 < x1",
        ),
        (
            {"invalid_mask": torch.zeros(64, 64)},
            r"targets\[1\]\['invalid_mask'\] has shape \(64, 64\), expected \(128, 128\)",
        ),
        (
            {"bboxes": torch.zeros(1, 4)},
            r"targets\[1\]: missing keys \[\], unknown keys \['bboxes'\]",
        ),
    ],
)
def test_bad_targets_name_image_field_and_expected_shape(small, change, message):
    model, images, person = small
    with pytest.raises(ValueError, match=message):
        model.loss(images, [person, _with(person, **change)])


def test_bad_target_containers_and_stage(small):
    model, images, person = small
    with pytest.raises(ValueError, match="targets has 1 entries but images has 2"):
        model.loss(images, [person])
    with pytest.raises(TypeError, match="targets must be a list of dicts"):
        model.loss(images, person)
    with pytest.raises(TypeError, match=r"targets\[0\]\['boxes'\] must be a torch.Tensor"):
        model.loss(images, [_with(person, boxes=[[0, 0, 1, 1]]), person])
    with pytest.raises(ValueError, match=r"targets\[0\]: missing keys \['keypoints_visible'\]"):
        model.loss(images, [{k: person[k] for k in ("boxes", "keypoints")}, person])
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3, got 4"):
        model.loss(images, [person, person], stage=4)


def test_reparameterized_model_refuses_to_train():
    model, images, targets, _ = load_fixture("rtmo-t-body7")
    model.eval().reparameterize()
    with pytest.raises(RuntimeError, match="reparameterize"):
        model.loss(images, targets)


# ---------------------------------------------------------------------------------------------
# The losses one by one, on values worked out by hand.


def test_box_iou_and_square_loss():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0]])
    torch.testing.assert_close(losses.box_iou(a, b), torch.tensor([1 / 7, 0.0]))
    torch.testing.assert_close(losses.box_iou(a[:, None], b[None]).shape, torch.Size([2, 2]))
    # A zero-area pair: the union is clamped at 1e-6, the IoU at 1e-16 inside the loss.
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert losses.box_iou(point, point).item() == 0
    torch.testing.assert_close(losses.iou_square_loss(a, b), torch.tensor(2 - 1 / 49))


def test_oks_normalisations():
    """PoseOKS divides the weights by their sum, OKSLoss by K."""
    sigmas = torch.tensor([0.5, 0.25])
    target = torch.zeros(1, 2, 2)
    keypoints = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # distance 1 and 0
    areas = torch.tensor([4.0])  # sqrt 2: d = 1 / 2 / (2 * 0.5) = 0.5
    first = math.exp(-(0.5**2) / 2)
    visible = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(
        losses.pose_oks(keypoints, target, visible, areas, sigmas), torch.tensor([first])
    )
    torch.testing.assert_close(
        losses.oks_loss(keypoints, target, visible, areas, sigmas), torch.tensor([1 - first / 2])
    )


def test_varifocal_weights():
    logits = torch.tensor([0.0, 2.0, 30.0])
    targets = torch.tensor([0.0, 0.5, 0.0])
    weights = torch.tensor([1.0, 1.0, 0.5])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    negative = 0.75 * 0.25 * bce(torch.tensor(0.0), torch.tensor(0.0))
    positive = 0.5 * bce(torch.tensor(2.0), torch.tensor(0.5))
    clipped = 0.5 * 0.75 * bce(torch.tensor(10.0), torch.tensor(0.0))  # logit clipped to 10
    expected = negative + positive + clipped
    torch.testing.assert_close(losses.varifocal_loss(logits, targets, weights), expected)


def test_mle_loss_counts_nan_as_zero_and_weights_by_visibility(monkeypatch):
    def fake_op(*args, **kwargs):
        nll = torch.tensor([[1.0, float("nan"), 3.0]])
        return nll, torch.zeros(1, 3, 2)

    monkeypatch.setattr(losses.rtmo_kernels, "dcc_mle_loss", fake_op)
    visible = torch.tensor([[1.0, 1.0, 0.5]])
    loss, _ = losses.mle_loss(*[None] * 6, visible, None, (192, 256), 1.25, 300.0)
    torch.testing.assert_close(loss, torch.tensor([(1.0 + 0.0 + 1.5) / 3]))
