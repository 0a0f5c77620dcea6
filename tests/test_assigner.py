"""SimOTA assignment: hand-made cases and mmpose 1.3.2's own assignments on the loss fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loss_fixtures import LOSS_FIXTURES, load_fixture

from rtmo.config import COCO_SIGMAS
from rtmo.train.assigner import OUTSIDE_COST, SimOTAAssigner, person_scores
from rtmo.train.targets import GroundTruth, check_targets

SIGMAS = torch.tensor(COCO_SIGMAS)
K = len(COCO_SIGMAS)


def _person(box: list[float], visible: float = 1.0) -> dict[str, torch.Tensor]:
    """A person whose keypoints sit on a 17-point pattern inside its box."""
    x1, y1, x2, y2 = box
    u = torch.linspace(0.2, 0.8, K)
    keypoints = torch.stack([x1 + u * (x2 - x1), y1 + u.flip(0) * (y2 - y1)], dim=-1)
    return {
        "boxes": torch.tensor(box),
        "keypoints": keypoints,
        "keypoints_visible": torch.full((K,), visible),
    }


def _truth(*people: dict[str, torch.Tensor]) -> GroundTruth:
    fields = ("boxes", "keypoints", "keypoints_visible")
    target = {f: torch.stack([p[f] for p in people]) for f in fields} if people else {
        "boxes": torch.zeros(0, 4),
        "keypoints": torch.zeros(0, K, 2),
        "keypoints_visible": torch.zeros(0, K),
    }  # fmt: skip
    return check_targets([target], torch.zeros(1, 3, 128, 128), K)[0]


def _grid(side: int = 128, stride: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.arange(side // stride) * stride + (stride - 1) / 2
    priors = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).reshape(-1, 2)
    return priors, torch.full((len(priors),), float(stride))


def _predicting(priors: torch.Tensor, person: dict[str, torch.Tensor]):
    """Every prior predicting exactly `person` with score 0.5: (boxes, scores, keypoints)."""
    n = len(priors)
    return (
        person["boxes"].expand(n, 4).clone(),
        torch.full((n,), 0.5),
        person["keypoints"].expand(n, K, 2).clone(),
    )


def test_empty_image_and_no_priors_assign_nothing():
    assigner = SimOTAAssigner(SIGMAS)
    priors, strides = _grid()
    boxes, scores, keypoints = _predicting(priors, _person([10, 10, 60, 90]))
    result = assigner.assign(priors, strides, boxes, scores, keypoints, _truth())
    assert (result.gt_index == -1).all()
    assert (result.overlaps == 0).all()
    assert result.gt_index.shape == (len(priors),)
    empty = assigner.assign(
        priors[:0], strides[:0], boxes[:0], scores[:0], keypoints[:0], _truth(_person([1, 1, 9, 9]))
    )
    assert empty.gt_index.shape == (0,)
    assert empty.overlaps.shape == (0,)


def test_person_without_candidate_prior_gets_no_positive():
    """A person far outside the prior grid has no prior in its box or centre square: alone it
    gets nothing. Beside a near person its k = 1 still takes its cheapest candidate (all cost
    it 1e5 + the same), which torch.topk picks among equals as mmpose does; here one the near
    person costs less, so the far person ends with nothing (mmpose 1.3.2 gives the same)."""
    assigner = SimOTAAssigner(SIGMAS)
    priors, strides = _grid()
    near, far = _person([20, 20, 80, 110]), _person([1000, 1000, 1060, 1090])
    boxes, scores, keypoints = _predicting(priors, near)
    candidate, _ = assigner.candidates(priors, strides, _truth(far))
    assert not candidate.any()
    alone = assigner.assign(priors, strides, boxes, scores, keypoints, _truth(far))
    assert (alone.gt_index == -1).all()
    result = assigner.assign(priors, strides, boxes, scores, keypoints, _truth(near, far))
    positives = torch.nonzero(result.gt_index >= 0).squeeze(1)
    assert positives.tolist() == [27, 28, 33, 34, 35, 36, 42, 43, 44, 49]
    assert (result.gt_index[positives] == 0).all()


def test_exact_predictions_give_dynamic_k_of_the_summed_oks():
    """Every prior predicts the person exactly: OKS 1, k = int(sum of the 10 best OKS) = 10,
    taken among the candidates inside both its box and its centre square (the others cost 1e5
    more), with overlap 1."""
    assigner = SimOTAAssigner(SIGMAS)
    priors, strides = _grid()
    person = _person([8, 8, 120, 120])
    truth = _truth(person)
    boxes, scores, keypoints = _predicting(priors, person)
    result = assigner.assign(priors, strides, boxes, scores, keypoints, truth)
    positives = torch.nonzero(result.gt_index == 0).squeeze(1)
    assert len(positives) == 10
    torch.testing.assert_close(result.overlaps[positives], torch.ones(10))
    candidate, inside = assigner.candidates(priors, strides, truth)
    inside_both = set(torch.nonzero(candidate).squeeze(1)[inside[:, 0]].tolist())
    assert set(positives.tolist()) <= inside_both


def test_two_people_competing_for_a_prior_keep_the_cheaper():
    """Costs (3 candidates x 2 people) and OKS by hand: k = int(0.9 + 0.8 + 0.3) = 2 for A and
    int(0.1 + 0.9 + 0.95) = 1 for B. A takes candidates 0 and 1, B candidate 1, which costs B
    less (1 < 2): candidate 1 goes to B, candidate 2 to nobody."""
    assigner = SimOTAAssigner(SIGMAS)
    cost = torch.tensor([[1.0, 5.0], [2.0, 1.0], [3.0, 2.0]])
    oks = torch.tensor([[0.9, 0.1], [0.8, 0.9], [0.3, 0.95]])
    matched, chosen = assigner.dynamic_k_matching(cost, oks)
    assert chosen.tolist() == [True, True, False]
    assert matched.tolist() == [0, 1]


def test_a_prior_taken_twice_goes_to_its_cheapest_person_among_all():
    """Candidate 0 is taken by A and B (each k = 1) but C costs it least: mmpose gives it to C
    even though C's own k picked candidate 1."""
    assigner = SimOTAAssigner(SIGMAS)
    cost = torch.tensor([[1.0, 1.0, 0.5], [9.0, 9.0, 0.1]])
    oks = torch.full((2, 3), 0.4)
    matched, chosen = assigner.dynamic_k_matching(cost, oks)
    assert chosen.tolist() == [True, True]
    assert matched.tolist() == [2, 2]


def test_keypoint_centres_move_the_centre_square():
    """With use_keypoints_for_center the square sits on the mean visible keypoint, not on the
    box centre; a person without visible keypoints keeps the box centre."""
    priors, strides = _grid()
    person = _person([0, 0, 128, 128])
    person["keypoints"][:] = torch.tensor([100.0, 100.0])
    truth = _truth(person, _person([0, 0, 128, 128], visible=0.0))
    by_box = SimOTAAssigner(SIGMAS).centres(truth)
    by_keypoints = SimOTAAssigner(SIGMAS, use_keypoints_for_center=True).centres(truth)
    torch.testing.assert_close(by_box, torch.tensor([[64.0, 64.0], [64.0, 64.0]]))
    torch.testing.assert_close(by_keypoints, torch.tensor([[100.0, 100.0], [64.0, 64.0]]))
    _, inside = SimOTAAssigner(SIGMAS, True).candidates(priors, strides, truth)
    inside_priors = priors[inside[:, 0]]
    assert ((inside_priors - 100).abs() < 2.5 * 16).all()


def test_cost_adds_outside_penalty_and_clamped_cls_cost():
    """A score of 0 costs BCE 100 (F.binary_cross_entropy's clamp), pairs outside "box and
    centre" 1e5 more."""
    assigner = SimOTAAssigner(SIGMAS)
    person = _person([10, 10, 60, 90])
    truth = _truth(person)
    boxes, _, keypoints = _predicting(torch.zeros(2, 2), person)
    scores = torch.tensor([1.0, 0.0])
    inside = torch.tensor([[True], [False]])
    cost, oks = assigner.cost(boxes, scores, keypoints, inside, truth)
    torch.testing.assert_close(oks, torch.ones(2, 1))
    expected_perfect = -2 * 3 * torch.log(torch.tensor(1 + 1e-7))
    penalties = torch.tensor([0.0, OUTSIDE_COST + 100])
    torch.testing.assert_close(cost[:, 0], expected_perfect + penalties)


@pytest.mark.parametrize("variant", list(LOSS_FIXTURES))
def test_assignments_equal_mmpose(variant):
    """mmpose's SimOTAAssigner inputs and results recorded on the fixture's batch: our assigner
    on the same inputs assigns the same people to the same priors, with the same overlaps (to
    float32 rounding)."""
    model, images, targets, ref = load_fixture(variant)
    truth = check_targets(targets, images, model.config.num_keypoints)
    assigner = SimOTAAssigner(
        torch.tensor(model.config.sigmas), model.config.use_keypoints_for_center
    )
    total = 0
    for i, gt in enumerate(truth):
        prefix = f"assign{i}/"
        rec = {
            k[len(prefix) :]: torch.from_numpy(v) for k, v in ref.items() if k.startswith(prefix)
        }
        result = assigner.assign(
            rec["priors"][:, :2], rec["priors"][:, 2], rec["bboxes"], rec["scores"][:, 0],
            rec["keypoints"], gt,
        )  # fmt: skip
        expected = rec["gt_inds"].long() - 1
        assert torch.equal(result.gt_index, expected), i
        positive = expected >= 0
        # Float32 rounding only: the vectorised exp of one CPU (AVX-512 on Intel or AMD) differs
        # from another's in the last bit.
        torch.testing.assert_close(
            result.overlaps[positive], rec["max_overlaps"][positive], rtol=1e-6, atol=1e-7
        )
        total += int(positive.sum())
    assert total >= len(truth)  # the fixtures do assign


def test_person_scores_are_square_roots_of_the_clipped_sigmoid():
    logits = torch.tensor([0.0, 2e4, -2e4, float("nan")])
    expected = torch.tensor([0.5**0.5, 1.0, torch.sigmoid(torch.tensor(-1e4)).sqrt(), 0.0])
    torch.testing.assert_close(person_scores(logits), expected)
    assert np.isfinite(person_scores(logits).numpy()).all()
