"""`rtmo.evaluate` and `rtmo eval`: pycocotools' numbers for hand-made cases, equality with mmpose's
CocoMetric, the results-file mode, bad input, the CLI, and runs of real predictors.

Hand-made cases check pycocotools' numbers against the COCO definitions: a person matched at every
OKS threshold is a true positive at each, AP is the 101-point interpolated precision, and OKS is
mean_k exp(-d_k^2 / (2 area (2 sigma_k)^2)) over the labelled keypoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from rtmo import cli
from rtmo.config import COCO_KEYPOINTS, COCO_SIGMAS, CROWDPOSE_KEYPOINTS, CROWDPOSE_SIGMAS
from rtmo.eval import (
    METRIC_NAMES,
    EvalInputError,
    evaluate,
    load_annotations,
    person_scores,
    poses_to_results,
    resolve_sigmas,
    score_results,
)
from rtmo.results import Poses
from rtmo.sources import SourceError

THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCOeval's OKS thresholds
RECALL_POINTS = 101  # COCOeval's interpolation points
# COCOeval's precision is tp / (tp + fp + eps): one true positive alone scores 1 - 2e-16.
ONE = pytest.approx(1.0, abs=1e-12)
PARITY = Path(__file__).with_name("data") / "eval_mmpose_parity.json"
# mmpose's CocoMetric names -> ours.
MMPOSE_NAMES = dict(
    zip(
        ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)"),
        METRIC_NAMES,
        strict=True,
    )
) | {"AP(E)": "AP_easy", "AP(M)": "AP_medium", "AP(H)": "AP_hard"}


# ------------------------------------------------------------------------------ hand-made data


def person_keypoints(box, k=17, seed=0):
    """(k, 2) keypoints spread over the box [x, y, w, h]."""
    x, y, w, h = box
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(x, x + w, k), rng.uniform(y, y + h, k)], axis=1)


def annotation(ann_id, image_id, keypoints, box, visible=None, area=True, iscrowd=0):
    k = len(keypoints)
    v = np.full(k, 2) if visible is None else np.where(visible, 2, 0)
    triplets = np.concatenate([np.where(v[:, None] > 0, keypoints, 0), v[:, None]], axis=1)
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": triplets.reshape(-1).tolist(),
        "num_keypoints": int((v > 0).sum()),
        "bbox": list(box),
        "iscrowd": iscrowd,
    }
    if area:
        ann["area"] = box[2] * box[3]
    return ann


def coco(annotations, image_ids=(1, 2), names=COCO_KEYPOINTS, **category):
    images = [{"id": i, "file_name": f"{i}.png", "width": 400, "height": 300} for i in image_ids]
    categories = [{"id": 1, "name": "person", "keypoints": list(names), **category}]
    return {"images": images, "annotations": annotations, "categories": categories}


def result(image_id, keypoints, score=0.9, category_id=1):
    triplets = np.concatenate([keypoints, np.ones((len(keypoints), 1))], axis=1)
    return {
        "image_id": image_id,
        "category_id": category_id,
        "keypoints": triplets.reshape(-1).tolist(),
        "score": score,
    }


BOXES = ((20, 30, 100, 200), (200, 40, 120, 220))  # two people per image, area 20000 and 26400


def two_people_per_image(image_ids=(1, 2), k=17):
    """Annotations of two people in each image and their keypoints by annotation id."""
    anns, truth = [], {}
    for image_id in image_ids:
        for box in BOXES:
            ann_id = len(anns) + 1
            keypoints = person_keypoints(box, k, seed=ann_id)
            anns.append(annotation(ann_id, image_id, keypoints, box))
            truth[ann_id] = (image_id, keypoints)
    return anns, truth


def metrics_of(data, predictions):
    return evaluate(data=data, predictions=predictions)


# ------------------------------------------------------------------------- pycocotools' numbers


def test_perfect_predictions_score_ap_1():
    anns, truth = two_people_per_image()
    # A medium person (40 x 60 = 2400 px^2 < 96^2) so that APm is defined too.
    small = (300, 200, 40, 60)
    anns.append(annotation(5, 2, person_keypoints(small, seed=5), small))
    truth[5] = (2, person_keypoints(small, seed=5))
    predictions = [result(image_id, kpts) for image_id, kpts in truth.values()]
    metrics = metrics_of(coco(anns), predictions)
    for name in METRIC_NAMES:
        assert metrics[name] == ONE, name
    assert metrics["dataset"] == {
        "images": 2,
        "people": 5,
        "keypoints": 17,
        "category": "person",
        "results": 5,
    }
    assert metrics["speed"] is None


def oks(distance, area, sigmas):
    """OKS of a prediction whose every keypoint is `distance` pixels away, all labelled."""
    sigmas = np.asarray(sigmas)
    return float(np.mean(np.exp(-(distance**2) / (2 * area * (2 * sigmas) ** 2))))


@pytest.mark.parametrize("distance", [1.0, 3.0, 6.0, 12.0, 30.0])
def test_shift_scores_the_ap_of_the_oks_formula(distance):
    box = BOXES[0]
    beside = (box[0] + 150, box[1], box[2], box[3])  # a second person of the same size
    anns = [
        annotation(i + 1, image_id, person_keypoints(b, seed=i), b)
        for i, (image_id, b) in enumerate([(1, box), (1, beside), (2, box)])
    ]
    shifted = [
        result(a["image_id"], np.reshape(a["keypoints"], (-1, 3))[:, :2] + [distance, 0])
        for a in anns
    ]
    similarity = oks(distance, box[2] * box[3], COCO_SIGMAS)
    assert np.abs(THRESHOLDS - similarity).min() > 1e-4  # not at a threshold: a clear outcome
    # Each person is a true positive at the thresholds <= OKS and a miss above them.
    expected = np.mean(similarity >= THRESHOLDS)
    metrics = metrics_of(coco(anns), shifted)
    assert metrics["AP"] == pytest.approx(expected, abs=1e-12)
    assert metrics["AR"] == pytest.approx(expected, abs=1e-12)
    assert metrics["AP50"] == float(similarity >= 0.5)
    assert metrics["AP75"] == float(similarity >= 0.75)


def test_missing_people_cap_the_recall():
    anns, truth = two_people_per_image(image_ids=(1,))
    predictions = [result(1, truth[1][1])]  # one of the two people
    metrics = metrics_of(coco(anns, image_ids=(1,)), predictions)
    # Precision 1 up to recall 0.5: the recall points 0.00 .. 0.50 are 51 of 101.
    assert metrics["AP"] == pytest.approx(51 / RECALL_POINTS)
    assert metrics["AR"] == 0.5


def test_extra_people_cost_precision_only_when_they_outrank_true_ones():
    anns, truth = two_people_per_image(image_ids=(1,))
    true = [result(1, kpts, score=0.8) for _, kpts in truth.values()]
    stray = person_keypoints((5, 5, 30, 30), seed=99)  # nobody there
    low = metrics_of(coco(anns, image_ids=(1,)), [*true, result(1, stray, score=0.3)])
    assert low["AP"] == ONE
    high = metrics_of(coco(anns, image_ids=(1,)), [*true, result(1, stray, score=0.95)])
    # Ranked first, the stray person halves the precision at recall 0.5 (1 of 2) and makes it
    # 2/3 at recall 1; interpolated: 2/3 at every recall point.
    assert high["AP"] == pytest.approx(2 / 3)
    assert high["AR"] == ONE


def test_unlabelled_keypoints_are_not_scored():
    box = BOXES[0]
    keypoints = person_keypoints(box)
    labelled = np.arange(17) % 2 == 0
    anns = [annotation(1, 1, keypoints, box, visible=labelled)]
    # A person with no labelled keypoint is not scored, so missing them costs nothing.
    anns.append(annotation(2, 1, person_keypoints(BOXES[1]), BOXES[1], visible=np.zeros(17)))
    guess = keypoints.copy()
    guess[~labelled] += 80  # far off where the annotation has no label
    metrics = metrics_of(coco(anns, image_ids=(1,)), [result(1, guess)])
    assert metrics["AP"] == ONE
    assert metrics["dataset"]["people"] == 1


@pytest.mark.parametrize("crowd", [True, False])
def test_people_inside_crowd_regions_are_ignored(crowd):
    box = BOXES[0]
    keypoints = person_keypoints(box)
    region = (200, 20, 180, 250)
    anns = [annotation(1, 1, keypoints, box)]
    if crowd:
        anns.append(annotation(2, 1, np.zeros((17, 2)), region, np.zeros(17), iscrowd=1))
    inside = person_keypoints((220, 40, 100, 200), seed=7)
    predictions = [result(1, keypoints, score=0.5), result(1, inside, score=0.9)]
    metrics = metrics_of(coco(anns, image_ids=(1,)), predictions)
    # In a crowd region the unmatched person is ignored; without one, ranked first, it is a false
    # positive that halves the precision at recall 1.
    assert metrics["AP"] == pytest.approx(1.0 if crowd else 0.5)


def test_empty_predictions_score_zero():
    anns, _ = two_people_per_image()
    metrics = metrics_of(coco(anns), [])
    for name in METRIC_NAMES:
        assert metrics[name] == (None if name in ("APm", "ARm") else 0.0), name
    assert metrics["dataset"]["results"] == 0


def test_people_outside_an_area_range_score_none_for_it():
    anns, truth = two_people_per_image()  # both people are large (area > 96^2)
    metrics = metrics_of(coco(anns), [result(i, k) for i, k in truth.values()])
    assert metrics["APm"] is None  # COCOeval's -1: no medium person to score
    assert metrics["APl"] == ONE


def test_k14_set_without_areas_takes_crowdpose_sigmas_and_box_areas():
    box = BOXES[0]
    anns = []
    for i, image_id in enumerate((1, 2, 3)):
        ann = annotation(i + 1, image_id, person_keypoints(box, k=14, seed=i), box, area=False)
        anns.append(ann)
    data = coco(anns, image_ids=(1, 2, 3), names=CROWDPOSE_KEYPOINTS)
    for image, crowd_index in zip(data["images"], (0.1, 0.5, 0.9), strict=True):
        image["crowdIndex"] = crowd_index
    distance = 6.0
    shifted = [
        result(a["image_id"], np.reshape(a["keypoints"], (-1, 3))[:, :2] + [0, distance])
        for a in anns
    ]
    similarity = oks(distance, 0.53 * box[2] * box[3], CROWDPOSE_SIGMAS)
    assert np.abs(THRESHOLDS - similarity).min() > 1e-4
    expected = np.mean(similarity >= THRESHOLDS)
    metrics = metrics_of(data, shifted)
    assert metrics["AP"] == pytest.approx(expected, abs=1e-12)
    for split in ("AP_easy", "AP_medium", "AP_hard"):  # one image each
        assert metrics[split] == pytest.approx(expected, abs=1e-12)
    settings = metrics["settings"]
    assert settings["oks_sigmas"] == list(CROWDPOSE_SIGMAS)
    assert settings["oks_sigmas_from"] == "CrowdPose (14 keypoints)"
    assert settings["oks_area"].startswith("0.53 x box area")


def test_crowd_splits_need_every_image_indexed():
    anns, truth = two_people_per_image()
    data = coco(anns)
    data["images"][0]["crowdIndex"] = 0.3
    metrics = metrics_of(data, [result(i, k) for i, k in truth.values()])
    assert "AP_easy" not in metrics
    data["images"][1]["crowdIndex"] = 0.4  # both medium: easy and hard have nothing to score
    metrics = metrics_of(data, [result(i, k) for i, k in truth.values()])
    assert (metrics["AP_easy"], metrics["AP_medium"], metrics["AP_hard"]) == (None, ONE, None)


def test_sigmas_come_from_the_category_when_it_has_them():
    k = 5
    box = BOXES[0]
    anns = [annotation(1, 1, person_keypoints(box, k=k), box)]
    names = [f"point{i}" for i in range(k)]
    sigmas = [0.05, 0.06, 0.07, 0.08, 0.09]
    data = coco(anns, image_ids=(1,), names=names, sigmas=sigmas)
    shifted = [result(1, person_keypoints(box, k=k) + np.array([4.0, 0]))]
    metrics = metrics_of(data, shifted)
    expected = np.mean(oks(4.0, box[2] * box[3], sigmas) >= THRESHOLDS)
    assert metrics["AP"] == pytest.approx(expected, abs=1e-12)
    assert metrics["settings"]["oks_sigmas"] == sigmas
    del data["categories"][0]["sigmas"]
    with pytest.raises(EvalInputError, match="5 keypoints and no 'sigmas' in category 1"):
        metrics_of(data, shifted)
    annotations = load_annotations(data)
    assert resolve_sigmas(annotations, sigmas=sigmas) == (tuple(sigmas), "given")


# ------------------------------------------------------------------------------ mmpose parity


@pytest.mark.parametrize(
    ("dataset", "score_mode"),
    [("coco", "bbox"), ("coco", "keypoint"), ("coco", "bbox_keypoint"), ("crowdpose", "bbox")],
)
def test_metrics_equal_mmpose_coco_metric(dataset, score_mode):
    """mmpose 1.3.2's CocoMetric (xtcocotools) on the same annotations and model outputs
    (tests/data/make_eval_parity.py): COCO with each score mode, and CrowdPose as mmpose's RTMO
    configs evaluate it (iou_type 'keypoints_crowd', use_area=False)."""
    fixture = json.loads(PARITY.read_text())[dataset]
    annotations = load_annotations(fixture["annotations"])
    k = annotations.num_keypoints
    results = []
    for image_id, out in fixture["outputs"].items():
        poses = Poses(
            np.reshape(out["boxes"], (-1, 4)),
            out["scores"],
            np.reshape(out["keypoints"], (-1, k, 2)),
            np.reshape(out["keypoint_scores"], (-1, k)),
            (640, 480),
        )
        results += poses_to_results(poses, int(image_id), 1, score_mode)
    sigmas, _ = resolve_sigmas(annotations)
    ours = score_results(annotations, results, sigmas)
    for name, value in fixture["mmpose"][score_mode].items():
        # xtcocotools rounds its crowdIndex split to 4 decimals; the rest is the same arithmetic.
        tolerance = 5e-5 if name in ("AP(E)", "AP(M)", "AP(H)") else 1e-12
        assert ours[MMPOSE_NAMES[name]] == pytest.approx(value, abs=tolerance), name


def test_score_modes_follow_mmpose():
    poses = Poses(
        np.zeros((3, 4)),
        [0.8, 0.5, 0.9],
        np.zeros((3, 4, 2)),
        [[0.1, 0.25, 0.5, 0.75], [0.1, 0.1, 0.1, 0.1], [1.0, 1.0, 1.0, 1.0]],
        (10, 10),
    )
    np.testing.assert_allclose(person_scores(poses, "bbox"), [0.8, 0.5, 0.9], rtol=1e-7)
    np.testing.assert_allclose(person_scores(poses, "keypoint"), [0.4, 0.1, 1.0], rtol=1e-7)
    # The mean of the keypoint scores strictly above the threshold (0.25 itself, exact in float32,
    # is out), times the box score; 0 when no keypoint is above it.
    np.testing.assert_allclose(
        person_scores(poses, "bbox_keypoint", 0.25), [0.8 * 0.625, 0.0, 0.9], rtol=1e-6
    )
    with pytest.raises(ValueError, match="score_mode must be one of"):
        person_scores(poses, "bbox_rle")


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def two_images():
    anns, truth = two_people_per_image()
    return coco(anns), [result(i, k) for i, k in truth.values()]


def test_results_with_unknown_image_ids_are_named(two_images):
    data, predictions = two_images
    predictions[0]["image_id"] = 999
    with pytest.raises(EvalInputError, match=r"1 results have image ids .* e\.g\. 999\).*2 images"):
        metrics_of(data, predictions)


def test_results_of_another_category_are_named(two_images):
    data, predictions = two_images
    for r in predictions[:2]:
        r["category_id"] = 7
    with pytest.raises(EvalInputError, match=r"category_id 7 \(2 results\).* is 1 \('person'\)"):
        metrics_of(data, predictions)


def test_results_with_another_keypoint_count_are_named(two_images):
    data, predictions = two_images
    predictions[1]["keypoints"] = predictions[1]["keypoints"][:42]
    with pytest.raises(
        EvalInputError, match=r"results\[1\] \(image 1\) has 42 keypoint values \(14 keypoints\)"
    ) as err:
        metrics_of(data, predictions)
    assert "has 17 keypoints (51 values)" in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.__setitem__(0, "x"), r"results\[0\] is a str"),
        (lambda p: p[0].pop("score"), r"results\[0\] has no 'score'"),
        (lambda p: p[2].__setitem__("score", float("nan")), r"results\[2\]: .*finite"),
        (lambda p: p[1].__setitem__("bbox", [0, 0, 1, 1]), "has no 'bbox' but results"),
    ],
)
def test_malformed_results_are_named(two_images, change, message):
    data, predictions = two_images
    change(predictions)
    with pytest.raises(EvalInputError, match=message):
        metrics_of(data, predictions)


def test_a_results_file_that_is_not_a_list_is_named(tmp_path, two_images):
    data, _ = two_images
    path = tmp_path / "results.json"
    path.write_text('{"annotations": []}')
    with pytest.raises(EvalInputError, match=r"results\.json: expected a COCO results list"):
        metrics_of(data, path)
    path.write_text("[{")
    with pytest.raises(EvalInputError, match=r"results\.json: not valid JSON"):
        metrics_of(data, path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("images"), "no 'images' list"),
        (lambda d: d["images"].clear(), "'images' list is empty"),
        (lambda d: d["images"].append(dict(d["images"][0])), "image id 1 appears twice"),
        (lambda d: d["categories"].append(dict(d["categories"][0], id=2)), r"found 2 \(ids"),
        (lambda d: d["annotations"][2].__setitem__("image_id", 9), "annotation 3: image_id 9"),
        (lambda d: d["annotations"][1]["keypoints"].pop(), "annotation 2: 50 keypoint values"),
        (lambda d: d["annotations"][0].pop("bbox"), r"annotation 1: no 'bbox'"),
        (lambda d: d["annotations"][3].pop("area"), "annotation 4 has no 'area' but 3 others do"),
        (lambda d: d["annotations"][3].__setitem__("id", 1), "annotation 1: id appears twice"),
    ],
)
def test_bad_annotation_files_are_named(two_images, change, message):
    data, predictions = two_images
    change(data)
    with pytest.raises(EvalInputError, match=message):
        metrics_of(data, predictions)


def test_other_categories_in_the_annotations_are_left_out(two_images):
    data, predictions = two_images
    data["categories"].append({"id": 2, "name": "dog"})
    data["annotations"].append({"id": 50, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]})
    assert metrics_of(data, predictions)["AP"] == ONE


def test_options_are_checked(two_images):
    data, predictions = two_images
    with pytest.raises(ValueError, match="either a model"):
        evaluate(data=data)
    for option, value, message in [
        ("score_mode", "box", "score_mode must be one of"),
        ("score_thr", 1.0, r"score_thr must be in \[0, 1\)"),
        ("nms_thr", 0.0, r"nms_thr must be in \(0, 1\]"),
        ("max_det", 0, "max_det must be at least 1"),
        ("batch_size", 0, "batch_size must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            evaluate(data=data, predictions=predictions, **{option: value})


# ------------------------------------------------------------------------------ results files


def test_results_file_mode_and_outputs(tmp_path, two_images):
    data, predictions = two_images
    data_path, results_path = tmp_path / "ann.json", tmp_path / "results.json"
    data_path.write_text(json.dumps(data))
    results_path.write_text(json.dumps(predictions))
    out = tmp_path / "out"
    metrics = evaluate(data=data_path, predictions=results_path, out=out)
    assert metrics["AP"] == ONE
    assert metrics["settings"]["predictions"] == str(results_path)
    assert metrics["settings"]["score_mode"] == "the results file's scores"
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # the results are the input
    with pytest.raises(ValueError, match="would overwrite the input"):
        evaluate(data=data_path, predictions=results_path, out=tmp_path)
    assert json.loads(results_path.read_text()) == predictions


# ------------------------------------------------------------------------------ running a model


class PlannedPredictor:
    """Stands in for `RTMO` where the test is about evaluate: an image whose pixels all equal n
    "holds" the people of plans[n]; predict returns the first max_det of them by score, as the
    predictor's NMS slots do."""

    def __init__(self, plans, k=17):
        self.plans = plans
        self.config = SimpleNamespace(name="planned", num_keypoints=k, sigmas=COCO_SIGMAS)
        self.input_size = (640, 640)  # 2000 priors
        self.device, self.dtype, self.backend = "cpu", "float32", "auto"
        self.model, self.checkpoint = SimpleNamespace(), None
        self.calls = []

    def predict(self, images, *, score_thr, nms_thr, max_det):
        self.calls.append((len(images), max_det, score_thr, nms_thr))
        out = []
        for image in images:
            poses = self.plans[int(image[0, 0, 0])]
            poses = poses[np.argsort(-poses.scores, kind="stable")[:max_det]]
            poses.speed = {"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5}
            out.append(poses)
        return out


def planned_people(keypoints, scores, image_size=(400, 300), keypoint_scores=None):
    keypoints = np.asarray(keypoints, dtype=np.float64)
    low, high = keypoints.min(axis=1), keypoints.max(axis=1)
    kpt_scores = np.ones(keypoints.shape[:2]) if keypoint_scores is None else keypoint_scores
    return Poses(np.concatenate([low, high], axis=1), scores, keypoints, kpt_scores, image_size)


def write_images(folder, data, size=(400, 300)):
    folder.mkdir(exist_ok=True)
    for n, image in enumerate(data["images"]):
        image["file_name"] = f"img{n}.png"
        cv2.imwrite(str(folder / image["file_name"]), np.full((size[1], size[0], 3), n, np.uint8))
    return folder


def test_model_run_scores_and_writes_results_that_rescore_identically(tmp_path, two_images):
    data, _ = two_images
    anns = data["annotations"]
    truth = {
        i: np.stack(
            [np.reshape(a["keypoints"], (-1, 3))[:, :2] for a in anns if a["image_id"] == i]
        )
        for i in (1, 2)
    }
    plans = {0: planned_people(truth[1], [0.9, 0.8]), 1: planned_people(truth[2], [0.7, 0.95])}
    images = write_images(tmp_path / "images", data)
    predictor = PlannedPredictor(plans)
    out = tmp_path / "out"
    metrics = evaluate(predictor, data=data, images=images, out=out, batch_size=2)
    assert metrics["AP"] == ONE
    assert predictor.calls == [(2, 100, 0.1, 0.65)]  # mmpose's thresholds, one batch
    speed = metrics["speed"]
    assert speed["images"] == 2
    assert speed["images_per_s"] > 0
    assert speed["ms_per_image"]["inference"] == pytest.approx(2.0)
    assert set(speed["ms_per_image"]) == {"load", "preprocess", "inference", "postprocess"}
    settings = metrics["settings"]
    assert (settings["score_thr"], settings["nms_thr"], settings["max_det"]) == (0.1, 0.65, None)
    assert settings["score_mode"] == "bbox"
    assert settings["model"]["name"] == "planned"
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 4
    assert set(results[0]) == {"image_id", "category_id", "keypoints", "score", "bbox"}
    assert [r["score"] for r in results] == [0.9, 0.8, 0.95, 0.7]  # by image, by score
    again = evaluate(data=data, predictions=out / "results.json")
    for name in METRIC_NAMES:
        assert again[name] == metrics[name]


def test_every_nms_survivor_is_kept_unless_max_det_is_given(tmp_path):
    anns, truth = two_people_per_image(image_ids=(1,))
    data = coco(anns, image_ids=(1,))
    stray = np.stack([person_keypoints((0, 0, 400, 300), seed=s) for s in range(248)])
    people = np.concatenate([np.stack([k for _, k in truth.values()]), stray])
    scores = np.concatenate([[0.05, 0.04], np.linspace(0.9, 0.1, 248)])  # the true people last
    predictor = PlannedPredictor({0: planned_people(people, scores)})
    images = write_images(tmp_path / "images", data)
    metrics = evaluate(predictor, data=data, images=images, score_mode="bbox")
    assert metrics["dataset"]["results"] == 250
    # The image filled the first 100 slots: run again with one slot per prior (2000 at 640x640).
    assert [c[1] for c in predictor.calls] == [100, 2000]
    assert metrics["speed"]["rerun_images"] == 1
    assert metrics["speed"]["images_at_max_det"] == 0
    # COCOeval scores the 20 best-scored people of an image: the true people are not among them.
    assert metrics["AR"] == 0.0
    capped = evaluate(predictor, data=data, images=images, max_det=30)
    assert capped["dataset"]["results"] == 30
    assert capped["speed"]["images_at_max_det"] == 1


def test_score_mode_reorders_people_before_cocoeval_keeps_20(tmp_path):
    anns, truth = two_people_per_image(image_ids=(1,))
    data = coco(anns, image_ids=(1,))
    stray = np.stack([person_keypoints((0, 0, 400, 300), seed=s) for s in range(30)])
    people = np.concatenate([np.stack([k for _, k in truth.values()]), stray])
    scores = np.concatenate([[0.2, 0.2], np.full(30, 0.9)])
    keypoint_scores = np.concatenate([np.full((2, 17), 0.95), np.full((30, 17), 0.3)])
    predictor = PlannedPredictor(
        {0: planned_people(people, scores, keypoint_scores=keypoint_scores)}
    )
    images = write_images(tmp_path / "images", data)
    by_box = evaluate(predictor, data=data, images=images, score_mode="bbox")
    by_keypoints = evaluate(predictor, data=data, images=images, score_mode="keypoint")
    assert by_box["AP"] == 0.0  # the true people rank 31st and 32nd: past COCOeval's 20
    assert by_keypoints["AP"] == ONE  # ranked first by keypoint score
    assert by_keypoints["settings"]["score_mode"] == "keypoint"


def test_model_input_problems_are_named(tmp_path, two_images):
    data, _ = two_images
    images = write_images(tmp_path / "images", data)
    plans = {
        0: planned_people(np.zeros((0, 17, 2)), []),
        1: planned_people(np.zeros((0, 17, 2)), []),
    }
    with pytest.raises(EvalInputError, match="predicts 14 keypoints but <annotations> has 17"):
        evaluate(PlannedPredictor(plans, k=14), data=data, images=images)
    with pytest.raises(ValueError, match="images: the folder"):
        evaluate(PlannedPredictor(plans), data=data)
    data["images"][1]["width"] = 500
    with pytest.raises(EvalInputError, match=r"img1.png: the image is 400x300 but .* 500x300"):
        evaluate(PlannedPredictor(plans), data=data, images=images)
    data["images"][1]["file_name"] = "missing.png"
    with pytest.raises(SourceError, match=r"missing\.png: no such file"):
        evaluate(PlannedPredictor(plans), data=data, images=images)


def annotated_folder(tmp_path, count):
    """A few small images with one annotated person each, as files."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    anns, images = [], []
    for i in range(count):
        w, h = 96 + 16 * i, 80
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": w, "height": h})
        box = (10, 5, 40, 70)
        anns.append(annotation(i + 1, i + 1, person_keypoints(box, seed=i), box))
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS)}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, folder


# ------------------------------------------------------------------------------ the command


@pytest.fixture
def files(tmp_path, two_images):
    data, predictions = two_images
    write_images(tmp_path / "images", data)
    (tmp_path / "ann.json").write_text(json.dumps(data))
    (tmp_path / "results.json").write_text(json.dumps(predictions))
    return tmp_path


def test_command_scores_a_results_file(files, capsys):
    argv = ["eval", "--predictions", files / "results.json", "--data", files / "ann.json"]
    status = cli.main([*map(str, argv), "--out", str(files / "out")])
    out = capsys.readouterr().out
    assert status == cli.EXIT_OK
    assert "AP   AP50" in out
    assert "1.000" in out
    assert "OKS sigmas: COCO (17 keypoints)" in out
    assert json.loads((files / "out" / "metrics.json").read_text())["AP"] == ONE


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "ann.json"], "give one of --checkpoint, --onnx, --random-weights"),
        (
            ["--data", "ann.json", "--random-weights", "--predictions", "results.json"],
            "not --random-weights and --predictions",
        ),
        (["--data", "none.json", "--predictions", "results.json"], "--data none.json: no such"),
        (["--data", "ann.json", "--predictions", "none.json"], "--predictions none.json: no such"),
        (["--data", "ann.json", "--random-weights"], "--images DIR is needed"),
        (["--data", "ann.json", "--random-weights", "--images", "x"], "--images x: no such folder"),
        (
            ["--data", "ann.json", "--predictions", "results.json", "--score-mode", "keypoint"],
            "--score-mode: only when a model runs",
        ),
        (
            ["--data", "ann.json", "--predictions", "results.json", "--max-det", "5"],
            "--max-det: only when a model runs",
        ),
        (
            ["--data", "ann.json", "--onnx", "m.onnx", "--images", "images", "--dtype", "fp32"],
            "--dtype: not with --onnx",
        ),
        (
            ["--data", "ann.json", "--random-weights", "--images", "images", "--backend", "fast"],
            "--backend: unknown backend 'fast'",
        ),
        (
            ["--data", "ann.json", "--onnx", "m.onnx", "--images", "images"],
            "--onnx m.onnx: no such file",
        ),
        (["--data", "ann.json", "--predictions", "ann.json"], "expected a COCO results list"),
    ],
)
def test_command_usage_errors_exit_2_naming_the_option(files, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(files)
    status = cli.main(["eval", *argv])
    err = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--score-thr", "1.5", "must be in [0, 1)"),
        ("--nms-thr", "0", "must be in (0, 1]"),
        ("--keypoint-score-thr", "-1", "must be in [0, 1]"),
        ("--batch-size", "0", "must be at least 1"),
        ("--device", "tpu:x", "must be cpu, cuda or cuda:N"),
        ("--model", "rtmo-x", "unknown RTMO variant 'rtmo-x'"),
        ("--max-det", "0", "must be at least 1"),
        ("--score-mode", "box", "invalid choice"),
    ],
)
def test_command_bad_values_exit_2_naming_the_option(capsys, option, value, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval", "--data", "a.json", "--random-weights", option, value])
    assert exc.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"argument {option}" in err
    assert message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the errors of a machine without a GPU")
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    ],
)
def test_command_device_errors_exit_2(files, capsys, options, message):
    argv = ["eval", "--random-weights", "--data", files / "ann.json", "--images", files / "images"]
    assert cli.main([*map(str, argv), *options]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("dtype", "message"),
    [
        ("fp16", "--dtype fp16 runs on a CUDA device only"),
        ("bf16", "--dtype bf16: this CPU has no native bfloat16"),
    ],
)
def test_command_cpu_precision_errors_exit_2(files, capsys, monkeypatch, dtype, message):
    from rtmo import precision

    monkeypatch.setattr(precision, "cpu_features", lambda: frozenset({"avx2"}))
    argv = ["eval", "--random-weights", "--data", files / "ann.json", "--images", files / "images"]
    assert cli.main([*map(str, argv), "--device", "cpu", "--dtype", dtype]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_command_with_a_mismatched_results_file_exits_2(files, capsys):
    predictions = json.loads((files / "results.json").read_text())
    predictions[0]["category_id"] = 3
    (files / "results.json").write_text(json.dumps(predictions))
    argv = ["eval", "--predictions", files / "results.json", "--data", files / "ann.json"]
    assert cli.main(list(map(str, argv))) == cli.EXIT_USAGE
    assert "category_id 3 (1 results)" in capsys.readouterr().err


def test_command_runs_a_random_weight_model_and_an_onnx_file(tmp_path, capsys):
    """`rtmo eval --random-weights` and `--onnx`: the real predictor on real files; results.json
    rescores to the same metrics."""
    from rtmo.config import from_name
    from rtmo.export import export_onnx
    from rtmo.model import RTMOModel

    data, images = annotated_folder(tmp_path, count=2)
    common = ["--data", str(data), "--images", str(images), "--device", "cpu"]
    torch.manual_seed(0)
    status = cli.main(
        ["eval", "--random-weights", "--model", "rtmo-t", *common, "--out", str(tmp_path / "t")]
    )
    captured = capsys.readouterr()
    assert status == cli.EXIT_OK, captured.err
    assert (
        "rtmo-t-body7 (torch, cpu, float32, fused kernels (backend auto), batch 8)" in captured.out
    )
    assert "max_det none: every NMS survivor kept (mmpose)" in captured.out
    assert "images/s" in captured.out
    assert "metrics.json and results.json in" in captured.err
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    for name in METRIC_NAMES:  # random weights: AP near 0; the machinery is what is tested
        assert metrics[name] is None or 0.0 <= metrics[name] <= 1.0
    assert metrics["settings"]["model"] == {
        "name": "rtmo-t-body7",
        "checkpoint": None,
        "runtime": "torch",
        "device": "cpu",
        "input_size": [416, 416],
        "batch_size": 8,
        "dtype": "float32",
        "backend": "auto",
        "use_kernels": True,
    }
    assert metrics["speed"]["images"] == 2
    assert metrics["speed"]["images_at_max_det"] == 0  # one slot per prior: nobody left out
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    assert len(results) == metrics["dataset"]["results"]
    assert {r["image_id"] for r in results} <= {1, 2}
    assert all(len(r["keypoints"]) == 51 for r in results)
    again = evaluate(data=data, predictions=tmp_path / "t" / "results.json")
    assert [again[n] for n in METRIC_NAMES] == [metrics[n] for n in METRIC_NAMES]

    torch.manual_seed(0)
    model = RTMOModel(from_name("rtmo-t")).eval()
    onnx_file = export_onnx(model, tmp_path / "t.onnx", (128, 128), max_det=20, score_thr=0.2)
    base = ["eval", "--onnx", str(onnx_file), *common]
    assert cli.main(base) == cli.EXIT_USAGE  # mmpose's score_thr 0.1 is below the file's
    assert "--score-thr 0.1 is below the 0.2 exported into t.onnx" in capsys.readouterr().err
    assert cli.main([*base, "--max-det", "25", "--score-thr", "0.2"]) == cli.EXIT_USAGE
    assert "--max-det 25: t.onnx has 20 person slots" in capsys.readouterr().err
    status = cli.main([*base, "--score-thr", "0.3", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert status == cli.EXIT_OK, captured.err
    assert "score_thr 0.3 (mmpose: 0.1)" in captured.out
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["settings"]["model"]["runtime"] == "onnxruntime"
    assert metrics["settings"]["model"]["input_size"] == [128, 128]
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert all(r["score"] >= 0.3 for r in results)
