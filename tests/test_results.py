"""`Poses`: shapes, empty results, indexing and the JSON schema."""

import json

import numpy as np
import pytest

from rtmo.results import Poses


def make_poses(n: int = 3, k: int = 17, size=(320, 240)) -> Poses:
    rng = np.random.default_rng(n * 100 + k)
    xy = rng.uniform(0, min(size), (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 50, (n, 2))], axis=1)
    return Poses(
        boxes=boxes,
        scores=np.sort(rng.uniform(0.1, 1, n))[::-1],
        keypoints=rng.uniform(0, min(size), (n, k, 2)),
        keypoint_scores=rng.uniform(0, 1, (n, k)),
        image_size=size,
        speed={"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5},
    )


def test_arrays_are_float32_with_documented_shapes():
    poses = make_poses(3, 14)
    assert len(poses) == 3
    assert poses.boxes.shape == (3, 4)
    assert poses.scores.shape == (3,)
    assert poses.keypoints.shape == (3, 14, 2)
    assert poses.keypoint_scores.shape == (3, 14)
    assert {a.dtype for a in (poses.boxes, poses.keypoints, poses.scores)} == {np.dtype(np.float32)}
    assert poses.num_keypoints == 14


@pytest.mark.parametrize("k", [17, 14])
def test_empty_result_is_a_valid_poses(k):
    poses = Poses.empty(k, (64, 48))
    assert len(poses) == 0
    assert poses.boxes.shape == (0, 4)
    assert poses.scores.shape == (0,)
    assert poses.keypoints.shape == (0, k, 2)
    assert poses.keypoint_scores.shape == (0, k)
    assert poses.to_dict() == {"width": 64, "height": 48, "people": []}
    image = np.full((48, 64, 3), 7, np.uint8)
    np.testing.assert_array_equal(poses.plot(image), image)


def test_mismatched_shapes_are_named():
    good = make_poses(2)
    with pytest.raises(ValueError, match=r"scores must have shape \(2,\)"):
        Poses(good.boxes, good.scores[:1], good.keypoints, good.keypoint_scores, (10, 10))
    with pytest.raises(ValueError, match=r"keypoints must be \(n, K, 2\)"):
        Poses(good.boxes, good.scores, good.keypoints[..., 0], good.keypoint_scores, (10, 10))
    with pytest.raises(ValueError, match="keypoint_scores must have shape"):
        Poses(good.boxes, good.scores, good.keypoints, good.keypoint_scores[:, :3], (10, 10))
    arrays = (good.boxes, good.scores, good.keypoints, good.keypoint_scores, (10, 10))
    with pytest.raises(ValueError, match="2 keypoint names for 17 keypoints"):
        Poses(*arrays, keypoint_names=("a", "b"))
    with pytest.raises(ValueError, match="1 keypoint colours for 17 keypoints"):
        Poses(*arrays, keypoint_colors=((1, 2, 3),))
    with pytest.raises(ValueError, match="2 limb colours for 1 limbs"):
        Poses(*arrays, skeleton=((0, 1),), limb_colors=((1, 2, 3),) * 2)
    with pytest.raises(ValueError, match=r"limb \(0, 17\) must be two keypoint indices"):
        Poses(*arrays, skeleton=((0, 17),))


def test_indexing_keeps_layout_and_person_axis():
    poses = make_poses(4)
    first = poses[0]
    assert len(first) == 1
    np.testing.assert_array_equal(first.keypoints[0], poses.keypoints[0])
    assert len(poses[1:3]) == 2
    assert len(poses[poses.scores > 2]) == 0
    assert first.image_size == poses.image_size
    assert "4 people" in repr(poses)


def test_json_schema():
    poses = make_poses(2, 17)
    data = json.loads(poses.to_json())
    assert set(data) == {"width", "height", "people"}
    assert (data["width"], data["height"]) == (320, 240)
    assert len(data["people"]) == 2
    for i, person in enumerate(data["people"]):
        assert set(person) == {"bbox", "score", "keypoints", "keypoint_scores"}
        assert len(person["bbox"]) == 4
        assert isinstance(person["score"], float)
        assert np.asarray(person["keypoints"]).shape == (17, 2)
        assert len(person["keypoint_scores"]) == 17
        np.testing.assert_allclose(person["bbox"], poses.boxes[i], atol=1e-3)
        np.testing.assert_allclose(person["keypoints"], poses.keypoints[i], atol=1e-3)
        np.testing.assert_allclose(person["keypoint_scores"], poses.keypoint_scores[i], atol=1e-5)
        assert person["score"] == pytest.approx(float(poses.scores[i]), abs=1e-5)
    assert json.loads(poses.to_json(indent=2)) == data
