"""rtmo_kernels.nms_padded: static-shape NMS per image against the reference and torchvision, edge
cases, errors, opcheck and torch.compile(fullgraph=True)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from nms_cases import clustered_boxes

import rtmo_kernels
from rtmo_kernels.reference.nms_padded import nms_padded as nms_padded_reference

BACKENDS = ["reference", "cpu", "triton"]


def batch_of_images(n: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [clustered_boxes(n, seed=seed + i, people=3 + i) for i in range(batch)]
    return torch.stack([b for b, _ in pairs]), torch.stack([s for _, s in pairs])


def expected_from_torchvision(boxes, scores, iou_thr, score_thr, max_det):
    keep = torch.full((boxes.shape[0], max_det), -1, dtype=torch.int64)
    num = torch.zeros(boxes.shape[0], dtype=torch.int64)
    for i, (b, s) in enumerate(zip(boxes, scores, strict=True)):
        cand = torch.nonzero(s > score_thr).flatten()
        kept = cand[torchvision.ops.nms(b[cand], s[cand], iou_thr)][:max_det]
        keep[i, : len(kept)] = kept
        num[i] = len(kept)
    return keep, num


def assert_same(result, expected):
    assert result[0].dtype == torch.int64
    assert result[1].dtype == torch.int64
    assert torch.equal(result[0], expected[0])
    assert torch.equal(result[1], expected[1])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("iou_thr", [0.3, 0.5, 0.65, 0.8])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_torchvision_per_image(backend, seed, iou_thr):
    # Score threshold 0.4 leaves a different number of candidates in each of the 3 images.
    n = 48 if backend == "triton" else 250
    boxes, scores = batch_of_images(n, 3, seed=seed)
    expected = expected_from_torchvision(boxes, scores, iou_thr, 0.4, n)
    assert len(set(expected[1].tolist())) > 1
    assert_same(rtmo_kernels.nms_padded(boxes, scores, iou_thr, 0.4, n, backend=backend), expected)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_ties_and_max_det_match_reference(backend):
    n = 48 if backend == "triton" else 250
    boxes, _ = batch_of_images(n, 2, seed=7)
    scores = torch.stack([clustered_boxes(n, seed=s, tie_levels=3)[1] for s in (7, 8)])
    for max_det in (0, 1, 3, n + 5):
        expected = nms_padded_reference(boxes, scores, 0.5, 0.2, max_det)
        result = rtmo_kernels.nms_padded(boxes, scores, 0.5, 0.2, max_det, backend=backend)
        assert_same(result, expected)


@pytest.mark.parametrize("backend", BACKENDS)
class TestEdgeCases:
    def test_no_candidates_in_an_empty_image(self, backend):
        keep, num = rtmo_kernels.nms_padded(
            torch.zeros(2, 0, 4), torch.zeros(2, 0), 0.5, 0.1, 4, backend=backend
        )
        assert keep.shape == (2, 4)
        assert (keep == -1).all()
        assert num.tolist() == [0, 0]

    def test_score_threshold_above_every_score(self, backend):
        boxes, scores = batch_of_images(20, 2)
        keep, num = rtmo_kernels.nms_padded(boxes, scores, 0.5, 0.995, 5, backend=backend)
        assert (keep == -1).all()
        assert num.tolist() == [0, 0]

    def test_score_equal_to_threshold_is_not_a_candidate(self, backend):
        boxes = torch.tensor([[[0.0, 0, 1, 1], [5, 5, 6, 6]]])
        scores = torch.tensor([[0.25, 0.5]])
        keep, num = rtmo_kernels.nms_padded(boxes, scores, 0.5, 0.25, 3, backend=backend)
        assert keep.tolist() == [[1, -1, -1]]
        assert num.tolist() == [1]

    def test_max_det_below_survivors_keeps_the_best(self, backend):
        boxes = torch.tensor([[[10.0 * i, 0, 10.0 * i + 5, 5] for i in range(6)]])
        scores = torch.tensor([[0.1, 0.6, 0.3, 0.9, 0.5, 0.6]])
        keep, num = rtmo_kernels.nms_padded(boxes, scores, 0.5, 0.0, 3, backend=backend)
        assert keep.tolist() == [[3, 1, 5]]
        assert num.tolist() == [3]

    def test_nan_scores_are_never_candidates_and_nan_boxes_never_suppress(self, backend):
        nan = float("nan")
        boxes = torch.tensor([[[0.0, 0, 9, 9], [nan, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9]]])
        scores = torch.tensor([[nan, 0.9, 0.8, 0.7]])
        keep, num = rtmo_kernels.nms_padded(boxes, scores, 0.5, 0.0, 4, backend=backend)
        assert keep.tolist() == [[1, 2, -1, -1]]
        assert num.tolist() == [2]

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_inputs(self, backend, dtype):
        boxes, scores = batch_of_images(30, 2, seed=9)
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        expected = nms_padded_reference(boxes.float(), scores.float(), 0.5, 0.3, 10)
        assert_same(rtmo_kernels.nms_padded(boxes, scores, 0.5, 0.3, 10, backend=backend), expected)

    def test_non_contiguous_inputs(self, backend):
        boxes, scores = batch_of_images(30, 3, seed=10)
        boxes_t = boxes.transpose(0, 1).contiguous().transpose(0, 1)
        scores_t = scores.t().contiguous().t()
        assert not boxes_t.is_contiguous()
        assert not scores_t.is_contiguous()
        expected = nms_padded_reference(boxes, scores, 0.65, 0.2, 12)
        result = rtmo_kernels.nms_padded(boxes_t, scores_t, 0.65, 0.2, 12, backend=backend)
        assert_same(result, expected)

    def test_threshold_at_least_one_keeps_every_candidate(self, backend):
        boxes = torch.tensor([[[1.0, 1, 8, 8]] * 4])
        scores = torch.tensor([[0.3, 0.8, 0.3, 0.05]])
        keep, num = rtmo_kernels.nms_padded(boxes, scores, 1.0, 0.1, 4, backend=backend)
        assert keep.tolist() == [[1, 0, 2, -1]]
        assert num.tolist() == [3]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"boxes": torch.zeros(2, 3, 5)}, ValueError, r"boxes must have last dimension 4"),
        ({"boxes": torch.zeros(3, 4)}, ValueError, r"boxes must have 3 dimensions"),
        ({"scores": torch.zeros(2, 4)}, ValueError, r"scores must have shape \(B, N\)=\(2, 3\)"),
        ({"scores": torch.zeros(2, 3, dtype=torch.int32)}, TypeError, r"scores must have dtype"),
        ({"boxes": torch.zeros(2, 3, 4, dtype=torch.int64)}, TypeError, r"boxes must have dtype"),
        ({"max_det": -1}, ValueError, r"max_det must be >= 0, got -1"),
        ({"max_det": 2.0}, TypeError, r"max_det must be an int"),
        ({"score_threshold": float("nan")}, ValueError, r"score_threshold must be a number"),
        ({"backend": "cuda"}, rtmo_kernels.BackendUnavailableError, r"'cuda' needs CUDA tensors"),
    ],
)
def test_errors_name_the_problem(kwargs, error, message):
    args = {
        "boxes": torch.zeros(2, 3, 4),
        "scores": torch.zeros(2, 3),
        "iou_threshold": 0.5,
        "score_threshold": 0.1,
        "max_det": 5,
    } | kwargs
    with pytest.raises(error, match=message):
        rtmo_kernels.nms_padded(**args)


def test_kernel_checks_shapes_when_called_directly():
    # The op is public through torch.ops too: bad shapes must not reach the kernel's loops.
    with pytest.raises(RuntimeError, match="scores must be"):
        torch.ops.rtmo.nms_padded(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.5, 0.1, 5)


def test_opcheck():
    boxes, scores = batch_of_images(40, 2, seed=11)
    torch.library.opcheck(torch.ops.rtmo.nms_padded.default, (boxes, scores, 0.5, 0.2, 8))


def test_fullgraph_compile():
    boxes, scores = batch_of_images(40, 2, seed=12)

    @torch.compile(fullgraph=True, backend="eager")
    def post_process(boxes, scores):
        keep, num = rtmo_kernels.nms_padded(boxes, scores, 0.65, 0.1, 10)
        kept_scores = torch.where(keep >= 0, scores.gather(1, keep.clamp(min=0)), 0.0)
        return keep, num, kept_scores

    keep, num, kept_scores = post_process(boxes, scores)
    assert_same((keep, num), nms_padded_reference(boxes, scores, 0.65, 0.1, 10))
    assert (kept_scores[keep >= 0] > 0.1).all()


def test_batch_large_enough_for_the_parallel_path():
    # 17 x 2000 boxes is above the CPU kernel's threshold for running images in parallel: each row
    # equals the serial one-image call, itself checked against the reference elsewhere.
    boxes, scores = batch_of_images(2000, 17, seed=13)
    keep, num = rtmo_kernels.nms_padded(boxes, scores, 0.65, 0.3, 40, backend="cpu")
    for i in range(17):
        one = rtmo_kernels.nms_padded(boxes[i : i + 1], scores[i : i + 1], 0.65, 0.3, 40)
        assert_same((keep[i : i + 1], num[i : i + 1]), one)
    expected = nms_padded_reference(boxes[:1], scores[:1], 0.65, 0.3, 40)
    assert_same((keep[:1], num[:1]), expected)
