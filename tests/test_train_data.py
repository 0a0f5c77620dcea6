"""COCO keypoint datasets for training: what is read, and the errors for unusable files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtmo.config import COCO_KEYPOINTS, COCO_SIGMAS
from rtmo.train.data import DatasetError, KeypointDataset


def _write(tmp_path: Path, *, names=("a", "left_b", "right_b"), anns=None, images=None, **cat):
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    images = images if images is not None else [{"id": 1, "file_name": "one.png"}]
    for image in images:
        cv2.imwrite(str(folder / image["file_name"]), np.full((40, 60, 3), 90, np.uint8))
    k = len(names)
    keypoints = [10, 12, 2, 20, 22, 1, 0, 0, 0][: 3 * k] + [0] * max(0, 3 * k - 9)
    default = [{"id": 7, "image_id": 1, "bbox": [5, 6, 30, 20], "keypoints": keypoints}]
    category = {"id": 1, "name": "person", "keypoints": list(names), "sigmas": [0.05] * k, **cat}
    data = {"images": images, "annotations": default if anns is None else anns}
    data["categories"] = [category]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, folder


def test_reads_people_in_image_pixels_with_visibility_as_mmpose(tmp_path):
    path, folder = _write(tmp_path)
    data = KeypointDataset(path, folder)
    sample = data.load(0)
    assert sample.image.shape == (40, 60, 3)
    assert len(sample) == 1
    np.testing.assert_array_equal(sample.boxes, [[5, 6, 35, 26]])
    np.testing.assert_array_equal(sample.keypoints[0], [[10, 12], [20, 22], [0, 0]])
    np.testing.assert_array_equal(sample.visible[0], [1, 1, 0])  # v 2 and 1 are both 1
    assert sample.areas[0] == pytest.approx(0.53 * 30 * 20)  # no area: mmpose's fallback
    assert data.keypoints.names == ("a", "left_b", "right_b")
    assert data.keypoints.flip_pairs == ((1, 2),)
    assert data.keypoints.sigmas == (0.05,) * 3


def test_crowd_and_unlabelled_people_are_not_targets(tmp_path):
    labelled = [1, 1, 2] + [0] * 6
    anns = [
        {"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5], "keypoints": labelled},
        {"id": 2, "image_id": 1, "bbox": [0, 0, 5, 5], "keypoints": labelled, "iscrowd": 1},
        {"id": 3, "image_id": 1, "bbox": [0, 0, 5, 5], "keypoints": [0] * 9},
    ]
    path, folder = _write(tmp_path, anns=anns)
    assert len(KeypointDataset(path, folder).load(0)) == 1


def test_coco_keypoints_without_sigmas_take_cocos_and_others_need_them(tmp_path):
    coco = tuple(COCO_KEYPOINTS)
    path, folder = _write(tmp_path, names=coco, anns=[], sigmas=None)
    raw = json.loads(path.read_text())
    del raw["categories"][0]["sigmas"]
    path.write_text(json.dumps(raw))
    assert KeypointDataset(path, folder).keypoints.sigmas == COCO_SIGMAS

    path, folder = _write(tmp_path, anns=[])
    raw = json.loads(path.read_text())
    del raw["categories"][0]["sigmas"]
    path.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=r"no 'sigmas'.*--sigmas"):
        KeypointDataset(path, folder)
    assert KeypointDataset(path, folder, sigmas=(0.1, 0.2, 0.2)).keypoints.sigmas == (0.1, 0.2, 0.2)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("annotations"), "not COCO: it has no 'annotations' list"),
        (lambda d: d["annotations"][0].update(keypoints=[1, 2, 2]), r"annotations\[0\] \(id 7\)"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2]), "needs a 'bbox'"),
        (lambda d: d["annotations"][0].update(area=-1), "NaN or negative"),
        (lambda d: d["categories"].append(dict(d["categories"][0])), "exactly one category"),
        (lambda d: d["images"].append({"id": 2, "file_name": "gone.png"}), "gone.png"),
        (lambda d: d.update(images=[], annotations=[]), "holds no image"),
    ],
)
def test_unusable_annotations_name_the_file_and_entry(tmp_path, edit, message):
    path, folder = _write(tmp_path)
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=message) as err:
        KeypointDataset(path, folder)
    assert str(path) in str(err.value)


def test_keypoint_count_disagreeing_with_the_category_says_the_expected_count(tmp_path):
    path, folder = _write(tmp_path)
    raw = json.loads(path.read_text())
    raw["annotations"][0]["keypoints"] = [1, 2, 2] * 4
    path.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match="12 keypoint values; the category has 3 keypoints"):
        KeypointDataset(path, folder)


def test_not_json_and_missing_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not a JSON file"):
        KeypointDataset(bad, tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        KeypointDataset(tmp_path / "none.json", tmp_path)


def test_a_corrupt_image_loads_as_none(tmp_path):
    path, folder = _write(tmp_path)
    (folder / "one.png").write_bytes(b"\x89PNG not really")
    assert KeypointDataset(path, folder).load(0) is None
