"""The kernels fuzzed with NaN, infinities, huge, tiny and denormal boxes, priors, queries and
scores, on every backend a CPU runs (the reference, the C++ kernels and Triton under its
interpreter, at tiny shapes): no crash, the documented NaN policy, and the same answer everywhere.

dcc_decode's policy (rtmo_kernels.ops.dcc_decode): a keypoint axis with a NaN or infinite input
(its query row, the box or prior coordinates of the axis) has a NaN coordinate and a NaN
confidence; so does one whose logits overflow float32 or whose coordinate is beyond float32;
nothing is infinite. Inside the domain (finite inputs, boxes and priors within +-1e30,
|query|_1 <= 1e30) the outputs are finite, the confidence is in (0, 1] and the coordinate lies
between the first and the last bin. NMS (rtmo_kernels.ops.*nms*): NaN scores are never kept, the
output is a set of valid indices by decreasing score, and every backend returns the same indices.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rtmo_kernels

# The Triton interpreter computes in numpy, which warns about the NaN and overflow these inputs
# are made of.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

BACKENDS = ["reference", "cpu", "triton"]
NAN, INF = math.nan, math.inf
# Values a float32 input can hold that break naive code: non-finite, near the float32 limits,
# denormal (below 1.2e-38), signed zeros, and ordinary pixel values.
SPECIAL = [NAN, INF, -INF, 3.4e38, -3.4e38, 1e30, -1e30, 1e-40, -1e-45, 0.0, -0.0, 1.0, 416.0]
# The domain where finite outputs are promised: box and prior coordinates within +-1e30 px (bins
# then stay within float32), queries with |q|_1 <= 1e30 (|<q, phi>| <= |q|_1 since |phi| <= 1).
DOMAIN = 1e30
# The expectation is a convex combination of the bins; float32 rounding of the bin positions and
# of the weights lets it pass the first or last bin by a few ulps of the extent.
BIN_RANGE_SLACK = 1e-5
SETTINGS = settings(
    max_examples=40,
    deadline=None,  # the Triton interpreter is slow on its first call
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # CI-stable: the same examples every run
)


def floats_with_specials(low: float = -1e4, high: float = 1e4) -> st.SearchStrategy[float]:
    ordinary = st.floats(low, high, allow_nan=False, width=32)
    return st.one_of(ordinary, ordinary, st.sampled_from(SPECIAL))


def tensor(shape: tuple[int, ...], values: st.SearchStrategy[float]) -> st.SearchStrategy:
    count = int(np.prod(shape))
    return st.lists(values, min_size=count, max_size=count).map(
        lambda v: torch.tensor(v, dtype=torch.float32).reshape(shape)
    )


@st.composite
def dcc_inputs(draw):
    n = draw(st.integers(0, 3))
    k = draw(st.integers(1, 3))
    d = draw(st.sampled_from([2, 4, 8]))
    query_values = st.one_of(st.floats(-5, 5, width=32), st.sampled_from(SPECIAL))
    query_x = draw(tensor((n, k, d), query_values))
    query_y = draw(tensor((n, k, d), query_values))
    boxes = draw(tensor((n, 4), floats_with_specials()))
    priors = draw(tensor((n, 2), floats_with_specials()))
    num_bins = (draw(st.integers(2, 20)), draw(st.integers(2, 20)))
    mode = draw(st.sampled_from(["expectation", "argmax"]))
    return query_x, query_y, boxes, priors, num_bins, mode


def axis_inputs(query, boxes, priors, axis):
    """(N, K, D) query values and (N, 3) geometry (the box ends and the prior) of one axis."""
    geometry = torch.stack([boxes[:, axis], boxes[:, axis + 2], priors[:, axis]], dim=1)
    return query, geometry


def must_be_nan(query, geometry):
    """(N, K) bool: an input of the axis is NaN or infinite."""
    return ~torch.isfinite(query).all(-1) | ~torch.isfinite(geometry).all(-1)[:, None]


def in_domain(query, geometry):
    """(N, K) bool: every input finite and small enough that the outputs must be finite."""
    small_query = query.abs().nan_to_num(INF).sum(-1) <= DOMAIN
    small_geometry = (geometry.abs().nan_to_num(INF) <= DOMAIN).all(-1)[:, None]
    return small_query & small_geometry


@SETTINGS
@given(dcc_inputs())
def test_dcc_decode_follows_the_nan_policy_on_every_backend(case):
    query_x, query_y, boxes, priors, num_bins, mode = case
    decided = []  # per backend: the NaN outputs where the policy decides them
    for backend in BACKENDS:
        keypoints, confidence = rtmo_kernels.dcc_decode(
            query_x, query_y, boxes, priors, num_bins=num_bins, mode=mode, backend=backend
        )
        assert keypoints.dtype == confidence.dtype == torch.float32
        assert keypoints.shape == confidence.shape == (*query_x.shape[:2], 2)
        nan = torch.isnan(keypoints)
        # Both outputs of an axis are NaN together, and nothing is infinite.
        assert torch.equal(nan, torch.isnan(confidence)), backend
        assert not torch.isinf(keypoints).any(), backend
        assert not torch.isinf(confidence).any(), backend
        for axis, query in enumerate((query_x, query_y)):
            query, geometry = axis_inputs(query, boxes, priors, axis)
            must, finite = must_be_nan(query, geometry), in_domain(query, geometry)
            assert nan[..., axis][must].all(), (backend, axis)
            assert not nan[..., axis][finite].any(), (backend, axis)
            _check_finite_outputs(keypoints, confidence, boxes, axis, finite)
            decided.append((backend, axis, nan[..., axis][must | finite]))
    for backend, axis, mask in decided:
        reference = next(m for b, a, m in decided if b == "reference" and a == axis)
        assert torch.equal(mask, reference), f"{backend} and reference differ in NaN outputs"


def _check_finite_outputs(keypoints, confidence, boxes, axis, finite):
    """Confidence in (0, 1]; the coordinate between the first and the last bin (in float64)."""
    conf = confidence[..., axis][finite]
    assert (conf > 0).all()
    assert (conf <= 1 + 1e-6).all()
    lo, hi = boxes[:, axis].double(), boxes[:, axis + 2].double()
    center, half = (lo + hi) / 2, 1.25 * (hi - lo) / 2
    first, last = center - half, center + half
    low = torch.minimum(first, last)[:, None].expand_as(finite)[finite]
    high = torch.maximum(first, last)[:, None].expand_as(finite)[finite]
    coordinate = keypoints[..., axis][finite].double()
    slack = BIN_RANGE_SLACK * (high - low) + 1e-6 * torch.maximum(low.abs(), high.abs()) + 1e-3
    assert (coordinate >= low - slack).all()
    assert (coordinate <= high + slack).all()


@st.composite
def nms_inputs(draw):
    m = draw(st.integers(0, 12))
    # Boxes drawn around a few corners so that they overlap; some coordinates special.
    boxes = draw(tensor((m, 4), floats_with_specials(-50, 50)))
    scores = draw(tensor((m,), st.one_of(st.floats(0, 1, width=32), st.sampled_from(SPECIAL))))
    idxs = draw(tensor((m,), st.sampled_from([0.0, 1.0]))).long()
    threshold = draw(st.sampled_from([0.0, 0.3, 0.65, 1.0]))
    return boxes, scores, idxs, threshold


@SETTINGS
@given(nms_inputs())
def test_batched_nms_is_valid_and_the_same_on_every_backend(case):
    boxes, scores, idxs, threshold = case
    results = [
        rtmo_kernels.batched_nms(boxes, scores, idxs, threshold, backend=backend)
        for backend in BACKENDS
    ]
    keep = results[0]
    assert keep.dtype == torch.int64
    assert len(set(keep.tolist())) == keep.numel()
    assert ((keep >= 0) & (keep < boxes.shape[0])).all()
    assert not torch.isnan(scores[keep]).any()
    kept_scores = scores[keep]
    assert (kept_scores[:-1] >= kept_scores[1:]).all()
    for backend, other in zip(BACKENDS[1:], results[1:], strict=True):
        assert torch.equal(other, keep), f"{backend}: {other.tolist()} vs {keep.tolist()}"


@SETTINGS
@given(nms_inputs(), st.sampled_from([-INF, 0.0, 0.5]), st.integers(0, 5))
def test_nms_padded_is_valid_and_the_same_on_every_backend(case, score_threshold, max_det):
    boxes, scores, _, threshold = case
    boxes, scores = boxes[None], scores[None]
    results = [
        rtmo_kernels.nms_padded(boxes, scores, threshold, score_threshold, max_det, backend=b)
        for b in BACKENDS
    ]
    keep, count = results[0]
    assert keep.shape == (1, max_det)
    assert count.shape == (1,)
    valid = keep[0, : int(count)]
    assert (keep[0, int(count) :] == -1).all()
    assert ((valid >= 0) & (valid < boxes.shape[1])).all()
    kept_scores = scores[0, valid]
    assert not torch.isnan(kept_scores).any()
    assert (kept_scores > score_threshold).all()
    assert (kept_scores[:-1] >= kept_scores[1:]).all()
    for backend, (other_keep, other_count) in zip(BACKENDS[1:], results[1:], strict=True):
        assert torch.equal(other_keep, keep), backend
        assert torch.equal(other_count, count), backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_dcc_nan_policy_examples(backend):
    """The policy on hand-made cases: each bad input poisons only its own axis."""
    query = torch.ones(4, 1, 4)
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 4)
    priors = torch.tensor([[5.0, 5]] * 4)
    query_x, query_y = query.clone(), query.clone()
    query_x[0, 0, 1] = NAN  # instance 0: x query NaN
    boxes[1, 1] = INF  # instance 1: y extent infinite
    priors[2, 0] = -INF  # instance 2: x prior infinite
    query_y[3] = 3.4e38  # instance 3: y logits overflow float32 (2 x 3.4e38 at the prior)
    keypoints, confidence = rtmo_kernels.dcc_decode(
        query_x, query_y, boxes, priors, num_bins=(5, 7), backend=backend
    )
    expected = torch.tensor([[True, False], [False, True], [True, False], [False, True]])
    assert torch.equal(torch.isnan(keypoints[:, 0]), expected)
    assert torch.equal(torch.isnan(confidence[:, 0]), expected)
