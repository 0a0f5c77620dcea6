"""rtmo_kernels.batched_nms: parity with the reference and torchvision, edge cases, properties,
errors and the torch.library registration."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_cases import clustered_boxes, iou_matrix

import rtmo_kernels
from rtmo_kernels import _backend
from rtmo_kernels.reference.batched_nms import batched_nms as batched_nms_reference

BACKENDS = ["reference", "cpu", "triton"]
# fp32 IoU of boxes with coordinates below ~1000 px is within ~1e-6 of the float64 IoU.
IOU_SLACK = 1e-5


def run(backend, boxes, scores, idxs, thr):
    return rtmo_kernels.batched_nms(boxes, scores, idxs, thr, backend=backend)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.65, 0.8])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_torchvision_on_clustered_boxes(backend, seed, thr):
    n = 40 if backend == "triton" else 300
    boxes, scores = clustered_boxes(n, seed=seed)
    idxs = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, thr)
    assert torch.equal(run(backend, boxes, scores, idxs, thr), expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("thr", [0.3, 0.65])
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_score_ties_match_reference_exactly(backend, seed, thr):
    # With ties torchvision's order is unspecified; ours is lower index first on every backend.
    n = 40 if backend == "triton" else 300
    boxes, scores = clustered_boxes(n, seed=seed, tie_levels=4)
    idxs = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed))
    expected = batched_nms_reference(boxes, scores, idxs, thr)
    assert torch.equal(run(backend, boxes, scores, idxs, thr), expected)


def test_reference_ranks_ties_by_index():
    boxes = torch.tensor([[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11.0]])
    scores = torch.tensor([0.5, 0.7, 0.5])
    keep = batched_nms_reference(boxes, scores, torch.zeros(3, dtype=torch.int64), 0.5)
    assert keep.tolist() == [1, 0, 2]


@pytest.mark.parametrize("backend", BACKENDS)
class TestEdgeCases:
    def test_no_boxes(self, backend):
        keep = run(
            backend, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5
        )
        assert keep.dtype == torch.int64
        assert keep.shape == (0,)

    def test_one_box(self, backend):
        keep = run(
            backend,
            torch.tensor([[1.0, 2, 3, 4]]),
            torch.tensor([0.3]),
            torch.zeros(1, dtype=torch.int64),
            0.5,
        )
        assert keep.tolist() == [0]

    def test_identical_boxes_keep_the_best_then_lowest_index(self, backend):
        boxes = torch.tensor([[10.0, 10, 50, 80]]).repeat(4, 1)
        scores = torch.tensor([0.2, 0.9, 0.9, 0.4])
        assert run(backend, boxes, scores, torch.zeros(4, dtype=torch.int64), 0.5).tolist() == [1]

    def test_iou_exactly_at_threshold_is_kept(self, backend):
        # IoU([0,0,4,1], [1,0,4,1]) = 3/4 and IoU([0,0,2,1], [1,0,2,1]) = 1/2, both exact in fp32.
        boxes = torch.tensor([[0.0, 0, 4, 1], [1, 0, 4, 1], [10, 0, 12, 1], [11, 0, 12, 1]])
        scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
        idxs = torch.zeros(4, dtype=torch.int64)
        assert run(backend, boxes, scores, idxs, 0.75).tolist() == [0, 1, 2, 3]
        assert run(backend, boxes, scores, idxs, 0.7499).tolist() == [0, 2, 3]
        assert run(backend, boxes, scores, idxs, 0.5).tolist() == [0, 2, 3]
        assert run(backend, boxes, scores, idxs, 0.4999).tolist() == [0, 2]

    def test_zero_area_boxes_never_overlap(self, backend):
        boxes = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [3, 3, 3, 8]])
        scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
        keep = run(backend, boxes, scores, torch.zeros(4, dtype=torch.int64), 0.0)
        assert keep.tolist() == [0, 1, 2, 3]

    def test_nan_scores_are_never_kept(self, backend):
        boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
        scores = torch.tensor([float("nan"), 0.5, 0.4])
        keep = run(backend, boxes, scores, torch.zeros(3, dtype=torch.int64), 0.5)
        assert keep.tolist() == [1, 2]

    def test_nan_boxes_never_suppress_and_are_never_suppressed(self, backend):
        nan = float("nan")
        boxes = torch.tensor([[nan, 0, 10, 10], [0, 0, 10, 10], [0, nan, 10, 10], [0, 0, 10, 10]])
        scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
        keep = run(backend, boxes, scores, torch.zeros(4, dtype=torch.int64), 0.1)
        assert keep.tolist() == [0, 1, 2]

    def test_threshold_zero_suppresses_any_overlap_but_not_touching(self, backend):
        boxes = torch.tensor([[0.0, 0, 10, 10], [9.9, 9.9, 20, 20], [10, 0, 20, 9.9]])
        scores = torch.tensor([0.9, 0.8, 0.7])
        assert run(backend, boxes, scores, torch.zeros(3, dtype=torch.int64), 0.0).tolist() == [
            0,
            2,
        ]

    @pytest.mark.parametrize("thr", [1.0, 1.5])
    def test_threshold_at_least_one_suppresses_nothing(self, backend, thr):
        boxes = torch.tensor([[3.0, 4, 30, 40]]).repeat(5, 1)
        scores = torch.tensor([0.1, 0.5, 0.3, 0.5, 0.9])
        keep = run(backend, boxes, scores, torch.zeros(5, dtype=torch.int64), thr)
        assert keep.tolist() == [4, 1, 3, 2, 0]

    def test_different_idxs_never_suppress_each_other(self, backend):
        boxes = torch.tensor([[0.0, 0, 10, 10]]).repeat(4, 1)
        scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
        idxs = torch.tensor([7, 3, 7, -2])
        assert run(backend, boxes, scores, idxs, 0.5).tolist() == [0, 1, 3]

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_inputs_compute_in_fp32(self, backend, dtype):
        boxes, scores = clustered_boxes(40, seed=3)
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        idxs = torch.zeros(40, dtype=torch.int32)
        expected = batched_nms_reference(boxes.float(), scores.float(), idxs, 0.5)
        assert torch.equal(run(backend, boxes, scores, idxs, 0.5), expected)

    def test_non_contiguous_inputs(self, backend):
        boxes, scores = clustered_boxes(40, seed=4)
        idxs = torch.randint(0, 2, (40,))
        wide = torch.zeros(40, 8)
        wide[:, ::2] = boxes
        strided_scores = torch.stack([scores, scores], 1)[:, 1]
        strided_idxs = torch.stack([idxs, idxs], 1)[:, 0]
        assert not wide[:, ::2].is_contiguous()
        keep = run(backend, wide[:, ::2], strided_scores, strided_idxs, 0.5)
        assert torch.equal(keep, batched_nms_reference(boxes, scores, idxs, 0.5))

    def test_huge_and_tiny_boxes(self, backend):
        # 1e5 px coordinates with idxs far apart: no coordinate offset loses precision here.
        base, _ = clustered_boxes(30, seed=5)
        huge = base * 150 + 1e5
        tiny = base * 1e-4
        boxes = torch.cat([huge, tiny])
        scores = torch.rand(60, generator=torch.Generator().manual_seed(5))
        idxs = torch.cat([torch.full((30,), 10**9), torch.full((30,), -(10**9))])
        expected = batched_nms_reference(boxes, scores, idxs, 0.5)
        keep = run(backend, boxes, scores, idxs, 0.5)
        assert torch.equal(keep, expected)
        # torchvision's own batched_nms offsets coordinates by idx * 1.5e5 here; run it per idx.
        per_idx = [
            torchvision.ops.nms(boxes[:30], scores[:30], 0.5),
            30 + torchvision.ops.nms(boxes[30:], scores[30:], 0.5),
        ]
        by_score = torch.cat(per_idx)[torch.argsort(scores[torch.cat(per_idx)], descending=True)]
        assert torch.equal(keep, by_score)


box_lists = st.lists(
    st.tuples(
        st.integers(0, 20),
        st.integers(0, 20),
        st.integers(1, 12),
        st.integers(1, 12),
        st.integers(0, 5),
        st.integers(0, 1),
    ),
    min_size=1,
    max_size=24,
)


@settings(max_examples=60, deadline=None)
@given(rows=box_lists, thr=st.sampled_from([0.0, 0.2, 0.5, 0.7]))
def test_greedy_properties(rows, thr):
    data = torch.tensor(rows, dtype=torch.float32)
    boxes = torch.cat([data[:, :2], data[:, :2] + data[:, 2:4]], dim=1)
    scores, idxs = data[:, 4] / 5, data[:, 5].long()
    keep = rtmo_kernels.batched_nms(boxes, scores, idxs, thr, backend="cpu")
    assert torch.equal(keep, batched_nms_reference(boxes, scores, idxs, thr))
    kept = keep.tolist()
    rank = {i: r for r, i in enumerate(kept)}
    # Sorted by decreasing score, ties by increasing index.
    assert all((-scores[a], a) < (-scores[b], b) for a, b in itertools.pairwise(kept))
    iou = iou_matrix(boxes)
    for a in kept:
        for b in kept:
            if a != b and idxs[a] == idxs[b]:
                assert iou[a, b] <= thr + IOU_SLACK
    for d in set(range(len(rows))) - set(kept):
        assert any(
            idxs[k] == idxs[d] and iou[k, d] > thr - IOU_SLACK and (-scores[k], k) < (-scores[d], d)
            for k in rank
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"boxes": torch.zeros(3, 5)}, ValueError, r"boxes must have last dimension 4"),
        ({"boxes": torch.zeros(3, 4, 1)}, ValueError, r"boxes must have 2 dimensions"),
        ({"scores": torch.zeros(2)}, ValueError, r"scores has 2 rows but M=3"),
        ({"idxs": torch.zeros(4, dtype=torch.int64)}, ValueError, r"idxs has 4 rows but M=3"),
        ({"boxes": torch.zeros(3, 4, dtype=torch.int64)}, TypeError, r"boxes must have dtype"),
        ({"idxs": torch.zeros(3)}, TypeError, r"idxs must have dtype"),
        ({"iou_threshold": -0.1}, ValueError, r"iou_threshold must be a number >= 0"),
        ({"iou_threshold": float("nan")}, ValueError, r"iou_threshold must be a number >= 0"),
        ({"backend": "cuda"}, rtmo_kernels.BackendUnavailableError, r"'cuda' needs CUDA tensors"),
        ({"boxes": [[0, 0, 1, 1]] * 3}, TypeError, r"boxes must be a torch.Tensor"),
    ],
)
def test_errors_name_the_problem(kwargs, error, message):
    args = {
        "boxes": torch.zeros(3, 4),
        "scores": torch.zeros(3),
        "idxs": torch.zeros(3, dtype=torch.int64),
        "iou_threshold": 0.5,
    } | kwargs
    with pytest.raises(error, match=message):
        rtmo_kernels.batched_nms(**args)


def test_opcheck():
    boxes, scores = clustered_boxes(50, seed=6)
    idxs = torch.randint(0, 3, (50,))
    torch.library.opcheck(torch.ops.rtmo.batched_nms.default, (boxes, scores, idxs, 0.5))


def test_cuda_kernels_registered_when_compiled():
    if not _backend.extension().cuda_kernels_compiled():
        pytest.skip("rtmo_kernels._C was built without the CUDA kernels")
    for op in ("rtmo::batched_nms", "rtmo::nms_padded"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
