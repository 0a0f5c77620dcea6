"""The prediction path: kernels vs the reference ops, batching, K=14, non-square inputs, padded
static outputs, reparameterisation and input checks."""

import copy

import pytest
import torch

from rtmo.config import from_name
from rtmo.model import RTMOModel, postprocess
from rtmo.model.head import decode_boxes
from rtmo_kernels.reference.dcc import dcc_decode_unfolded

# Bound on the fused decode's keypoint error against the float64 decode (px).
KEYPOINT_ATOL = 1e-3
# Boxes/scores come from the same dense outputs in both paths; only the gathers differ.
BOX_ATOL = 1e-4


def lively_model(name: str, use_kernels: bool = True, seed: int = 0) -> RTMOModel:
    """Random weights whose outputs look like a trained model's: scores spread over (0, 1),
    boxes of a few strides that overlap (NMS suppresses some) and peaked keypoint distributions.

    A fresh init gives near-constant maps, so the BatchNorm statistics are first measured on
    random images (each layer then outputs unit-scale, spatially varying features), and the
    output convs are scaled.
    """
    torch.manual_seed(seed)
    model = RTMOModel(from_name(name), use_kernels=use_kernels)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batch
    calibration = images(2, 128, 128, seed=seed + 100)
    with torch.no_grad():
        model.train()
        dense = model(calibration)
        model.head.dcc.pose_to_kpts(dense.pose_vecs.flatten(0, 1))
        model.eval()
        hm = model.head.head_module
        for level in range(2):
            hm.out_cls[level].weight.mul_(3.0)
            hm.out_cls[level].bias.fill_(-1.0)
            hm.out_bbox[level].weight.mul_(0.2)
            hm.out_bbox[level].bias.copy_(torch.tensor([0.0, 0.0, 2.0, 2.3]))
            hm.out_kpt_vis[level].weight.mul_(3.0)
        # Mean peak bin probability ~0.2 (a random GAU gives near one-hot ~0.9): spread over a
        # few bins like the Laplace targets the DCC is trained on.
        model.head.dcc.x_fc.weight.mul_(0.05)
        model.head.dcc.y_fc.weight.mul_(0.05)
    return model


def images(batch: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=gen) * 255


def with_kernels(model: RTMOModel, use_kernels: bool) -> RTMOModel:
    twin = copy.deepcopy(model)
    twin.use_kernels = use_kernels
    return twin


def assert_same_detections(ours: dict, ref: dict, kpt_atol: float, box_atol: float) -> None:
    assert ours["scores"].shape == ref["scores"].shape
    torch.testing.assert_close(ours["scores"], ref["scores"], atol=box_atol, rtol=0)
    torch.testing.assert_close(ours["boxes"], ref["boxes"], atol=box_atol, rtol=0)
    torch.testing.assert_close(ours["keypoints"], ref["keypoints"], atol=kpt_atol, rtol=0)
    torch.testing.assert_close(
        ours["keypoint_scores"], ref["keypoint_scores"], atol=box_atol, rtol=0
    )


@pytest.fixture(scope="module")
def model_t():
    return lively_model("rtmo-t")


@pytest.fixture(scope="module")
def batch():
    return images(2, 192, 192)


def test_outputs_are_sorted_sane_and_in_the_input(model_t, batch):
    preds = model_t.predict(batch, max_det=150)
    assert len(preds) == 2
    for p in preds:
        n = len(p["scores"])
        assert 0 < n < 12 * 12 + 6 * 6  # something survives, NMS suppressed something
        assert (p["scores"] > 0.1).all()
        assert (p["scores"][:-1] >= p["scores"][1:]).all()
        assert p["boxes"].shape == (n, 4)
        assert p["keypoints"].shape == (n, 17, 2)
        assert p["keypoints"].dtype == torch.float32
        assert p["keypoint_scores"].shape == (n, 17)
        assert (p["boxes"] >= 0).all()
        assert (p["boxes"] <= 192).all()
        assert torch.isfinite(p["keypoints"]).all()
        # The keypoints are spread inside the padded boxes, not collapsed at the centres.
        assert p["keypoints"].std(dim=1).mean() > 1.0


def test_kernels_match_the_reference_ops(model_t, batch):
    ours = model_t.predict(batch, max_det=150)
    ref = with_kernels(model_t, use_kernels=False).predict(batch, max_det=150)
    for o, r in zip(ours, ref, strict=True):
        # The reference decode's own float32 error reaches ~2e-3 px on these 100-250 px boxes
        # (bin angles of hundreds of radians); the kernel's is bounded separately below.
        assert_same_detections(o, r, kpt_atol=3e-3, box_atol=BOX_ATOL)


@torch.no_grad()
def test_kernel_decode_is_at_least_as_accurate_as_the_reference(model_t, batch):
    """On the candidates' pose vectors: both float32 decodes against mmpose's unfolded decode in
    float64 (the kernel's error may be at most twice the reference's, plus a 1e-4 px floor)."""
    dense = model_t(batch)
    boxes = decode_boxes(dense.bbox_preds, dense.priors, dense.strides)[0]
    order = (dense.cls_logits[0].sigmoid() > 0.1).nonzero()[:, 0]
    dcc = model_t.head.dcc
    args = (dense.pose_vecs[0, order], boxes[order], dense.priors[order])
    kernel = dcc(*args, use_kernels=True)
    reference = dcc(*args, use_kernels=False)
    feats = dcc.keypoint_features(args[0]).double()
    x_fc, y_fc = copy.deepcopy(dcc.x_fc).double(), copy.deepcopy(dcc.y_fc).double()
    truth = dcc_decode_unfolded(feats, x_fc, y_fc, *(a.double() for a in args[1:]))[0]
    kernel_err = (kernel - truth).abs().max()
    reference_err = (reference - truth).abs().max()
    assert kernel_err <= 2 * reference_err + 1e-4
    assert kernel_err <= KEYPOINT_ATOL


def test_batch_of_two_equals_two_single_runs(model_t):
    # float64 through the reference ops: batching may only change float32 summation orders,
    # which the random DCC amplifies (see the reparameterisation test), so compare exactly.
    model = with_kernels(model_t, use_kernels=False).double()
    x = images(2, 128, 96).double()
    together = model.predict(x, max_det=60)
    for i in range(2):
        alone = model.predict(x[i : i + 1], max_det=60)[0]
        assert_same_detections(together[i], alone, kpt_atol=1e-6, box_atol=1e-6)


def test_crowdpose_has_14_keypoints():
    model = lively_model("rtmo-s-crowdpose", seed=3)
    x = images(1, 128, 128)
    ours = model.predict(x, max_det=100)[0]
    assert ours["keypoints"].shape[1:] == (14, 2)
    assert ours["keypoint_scores"].shape[1:] == (14,)
    ref = with_kernels(model, use_kernels=False).predict(x, max_det=100)[0]
    assert_same_detections(ours, ref, kpt_atol=3e-3, box_atol=BOX_ATOL)


def test_non_square_input(model_t):
    x = images(1, 96, 224)  # h=96, w=224
    dense = model_t(x)
    assert dense.cls_logits.shape == (1, 6 * 14 + 3 * 7)
    assert dense.priors[6 * 14 - 1].tolist() == [13 * 16 + 7.5, 5 * 16 + 7.5]
    assert dense.priors[-1].tolist() == [6 * 32 + 15.5, 2 * 32 + 15.5]
    p = model_t.predict(x, max_det=200)[0]
    assert len(p["scores"]) > 0
    assert (p["boxes"][:, 0::2] <= 224).all()
    assert (p["boxes"][:, 1::2] <= 96).all()
    assert p["boxes"][:, 0::2].max() > 96  # x uses the width, not the height
    ref = with_kernels(model_t, use_kernels=False).predict(x, max_det=200)[0]
    assert_same_detections(p, ref, kpt_atol=3e-3, box_atol=BOX_ATOL)


def test_padded_prediction_has_static_shapes_and_zero_padding(model_t, batch):
    padded = model_t.predict_padded(batch, max_det=40)
    assert padded.boxes.shape == (2, 40, 4)
    assert padded.keypoints.shape == (2, 40, 17, 2)
    assert padded.num_detections.dtype == torch.int64
    full = model_t.predict(batch, max_det=150)
    for i in range(2):
        n = int(padded.num_detections[i])
        assert n == min(40, len(full[i]["scores"]))
        # A cap keeps the top-scoring survivors of the uncapped run.
        torch.testing.assert_close(padded.scores[i, :n], full[i]["scores"][:n])
        assert (padded.scores[i, n:] == 0).all()
        assert (padded.keypoints[i, n:] == 0).all()


@pytest.mark.parametrize("use_kernels", [True, False])
def test_cpu_eager_decodes_the_kept_people_only_with_the_static_paths_numbers(
    model_t, batch, monkeypatch, use_kernels
):
    """On the CPU the DCC runs on the kept rows only; the result equals, bit for bit, the static
    path's (every max_det slot decoded, as on CUDA and under torch.compile / export)."""
    model = with_kernels(model_t, use_kernels)
    decoded_rows = []
    dcc_forward = type(model.head.dcc).forward

    def counting_forward(dcc, pose_vecs, *args, **kwargs):
        decoded_rows.append(pose_vecs.shape[0])
        return dcc_forward(dcc, pose_vecs, *args, **kwargs)

    monkeypatch.setattr(type(model.head.dcc), "forward", counting_forward)
    trimmed = model.predict_padded(batch, max_det=150)
    monkeypatch.setattr(postprocess, "_sync_is_free", lambda keep: False)
    static = model.predict_padded(batch, max_det=150)
    kept = int(trimmed.num_detections.sum())
    assert 0 < kept < 2 * 150
    assert decoded_rows == [kept, 2 * 150]
    for name, a, b in zip(trimmed._fields, trimmed, static, strict=True):
        assert torch.equal(a, b), name


def test_max_det_above_the_priors_takes_one_slot_per_prior(model_t):
    """At most one person per prior: a larger max_det gives as many slots as priors (20 at
    64x64), as the raw-head Postprocessor does, so the DCC runs on no slot past them."""
    x = images(1, 64, 64)
    everyone = {"score_thr": 0.0, "nms_thr": 1.0}
    capped = model_t.predict_padded(x, max_det=1000, **everyone)
    exact = model_t.predict_padded(x, max_det=20, **everyone)
    assert capped.boxes.shape == (1, 20, 4)
    assert capped.num_detections.tolist() == [20]
    for got, want in zip(capped, exact, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_no_detection_gives_empty_tensors(model_t, batch):
    preds = model_t.predict(batch, score_thr=0.999999)
    for p in preds:
        assert p["boxes"].shape == (0, 4)
        assert p["keypoints"].shape == (0, 17, 2)
        assert p["keypoint_scores"].shape == (0, 17)


def test_reparameterization_is_exact_in_float64(model_t):
    plain = with_kernels(model_t, use_kernels=False).double()
    fused = copy.deepcopy(plain).reparameterize()
    assert fused.head.dcc.query_weight is not None
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = images(1, 128, 128).double()
    want = plain.predict(x, max_det=60)
    for got, ref in zip(fused.predict(x, max_det=60), want, strict=True):
        assert_same_detections(got, ref, kpt_atol=1e-6, box_atol=1e-6)
    fused.reparameterize()  # idempotent
    for got, ref in zip(fused.predict(x, max_det=60), want, strict=True):
        assert_same_detections(got, ref, kpt_atol=1e-6, box_atol=1e-6)


def test_reparameterized_float32_error_is_that_of_the_plain_model(model_t, batch):
    """In float32 the folds round differently, and a random DCC amplifies pose-vector noise
    (measured: 1e-5 on the pose vectors moves keypoints by ~0.04 px). The fused model's error
    against the float64 truth must stay within twice the plain float32 model's, plus 1e-3 px."""
    x = batch[:1]
    truth = with_kernels(model_t, use_kernels=False).double().predict_padded(x.double())
    plain = model_t.predict_padded(x)
    fused = copy.deepcopy(model_t).reparameterize().predict_padded(x)
    assert torch.equal(fused.num_detections, truth.num_detections)
    assert torch.equal(plain.num_detections, truth.num_detections)
    plain_err = (plain.keypoints.double() - truth.keypoints).abs().max()
    fused_err = (fused.keypoints.double() - truth.keypoints).abs().max()
    assert fused_err <= 2 * plain_err + 1e-3
    torch.testing.assert_close(fused.boxes.double(), truth.boxes, atol=1e-3, rtol=0)


def test_reparameterize_needs_eval_mode():
    model = RTMOModel(from_name("rtmo-t")).train()
    with pytest.raises(RuntimeError, match="eval mode"):
        model.reparameterize()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"images": torch.zeros(1, 3, 100, 96)}, ValueError, "multiples of 32, got 100x96"),
        (
            {"images": torch.zeros(3, 64, 64)},
            ValueError,
            r"shape \(B, 3, H, W\), got \(3, 64, 64\)",
        ),
        ({"images": torch.zeros(1, 3, 64, 64, dtype=torch.uint8)}, TypeError, "must be float"),
        ({"images": [1, 2]}, TypeError, "torch.Tensor, got list"),
        ({"score_thr": 1.5}, ValueError, "score_thr must be in"),
        ({"nms_thr": 0.0}, ValueError, "nms_thr must be in"),
        ({"max_det": 0}, ValueError, "max_det must be at least 1"),
    ],
)
def test_bad_arguments(model_t, kwargs, error, match):
    args = {"images": torch.zeros(1, 3, 64, 64), **kwargs}
    with pytest.raises(error, match=match):
        model_t.predict(**args)
