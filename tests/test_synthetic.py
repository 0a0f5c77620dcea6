"""The procedural people dataset: valid COCO, labels that match the drawn pixels, visibility codes,
determinism, the motion sequences and `rtmo data synth`."""

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rtmo import cli
from rtmo.train import synthetic as synth
from rtmo.train.synthetic import Occluder, Person

SMALL = (320, 240)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Eight images of the validation seed at their natural sizes."""
    out = tmp_path_factory.mktemp("synth") / "val"
    return synth.synthesize_dataset(out, 8, seed=synth.VAL_SEED)


def _load(path):
    return json.loads(path.read_text())


def test_dataset_is_coco_that_pycocotools_loads_and_evaluates(dataset):
    coco = COCO(str(dataset))
    assert len(coco.getImgIds()) == 8
    category = coco.loadCats(1)[0]
    assert category["keypoints"] == list(synth.COCO_KEYPOINTS)
    assert len(category["sigmas"]) == 17
    assert min(min(pair) for pair in category["skeleton"]) == 1  # COCO's 1-based skeleton
    for image in coco.loadImgs(coco.getImgIds()):
        decoded = cv2.imread(str(dataset.parent / "images" / image["file_name"]))
        assert decoded.shape == (image["height"], image["width"], 3)
    # The ground truth scored against itself: every OKS is 1, so AP must be exactly 1. People
    # with no labelled keypoint are ignored by the metric, and crowds exceed its default of 20.
    anns = coco.loadAnns(coco.getAnnIds())
    detections = [{**a, "score": 1.0} for a in anns if a["num_keypoints"] > 0]
    evaluation = COCOeval(coco, coco.loadRes(detections), iouType="keypoints")
    evaluation.params.maxDets = [100]
    evaluation.evaluate()
    evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, 0, 0, 0]  # OKS thresholds x recall levels
    assert (precision == 1.0).all()


def test_annotations_are_self_consistent(dataset):
    data = _load(dataset)
    sizes = {image["id"]: (image["width"], image["height"]) for image in data["images"]}
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))  # COCOeval treats id 0 as unmatched
    for ann in data["annotations"]:
        width, height = sizes[ann["image_id"]]
        kpts = np.array(ann["keypoints"], float).reshape(17, 3)
        v = kpts[:, 2]
        assert set(v) <= {0, 1, 2}
        assert ann["num_keypoints"] == int((v > 0).sum())
        assert (ann["iscrowd"], ann["category_id"]) == (0, 1)
        np.testing.assert_array_equal(kpts[v == 0, :2], 0)
        labelled = kpts[v > 0, :2]
        x, y, w, h = ann["bbox"]
        assert x >= 0
        assert y >= 0
        assert x + w <= width
        assert y + h <= height
        # Keypoints lie in the image and in the box (the box is the whole figure's).
        assert (labelled >= (x, y)).all()
        assert (labelled <= (min(x + w, width - 1), min(y + h, height - 1))).all()
        assert 0 < ann["area"] <= w * h


def test_dataset_has_crowds_occlusion_and_the_height_range(dataset):
    anns = _load(dataset)["annotations"]
    people = np.bincount([a["image_id"] for a in anns])[1:]
    assert people.max() >= 15
    assert people.min() <= 6
    heights = np.array([a["bbox"][3] for a in anns])  # the figure's box: its height, or less
    assert heights.min() < 50
    assert heights.max() > 250
    # COCO-"small" people carry their box but no keypoints; the others are labelled.
    small = [a for a in anns if a["area"] < 32**2]
    assert small
    assert all(a["num_keypoints"] == 0 and not any(a["keypoints"]) for a in small)
    labelled = [a for a in anns if a["area"] >= 32**2]
    v = np.concatenate([a["keypoints"][2::3] for a in labelled])
    outside, hidden, visible = np.bincount(v, minlength=3) / v.size
    assert hidden > 0.1
    assert visible > 0.5
    assert outside > 0.005


@pytest.mark.parametrize("index", range(6))
def test_keypoints_lie_on_the_drawn_figure(index):
    """Every labelled keypoint's pixel is on the person's own drawing; a visible one shows one of
    the parts it joins (its limb, or the head for the face points), an occluded one is covered by
    something drawn later or by the person's own body."""
    rng = np.random.default_rng([synth.VAL_SEED, index])
    size = synth.sample_size(rng)
    background, elements, _ = synth.sample_scene(rng, size)
    _, owner, people = synth.render_scene(background, elements)
    checked = 0
    for i, person in enumerate(people):
        ox, oy = person.origin
        for k, (x, y, v) in enumerate(person.keypoints):
            if v == 0:
                continue
            px, py = round(x), round(y)
            part = person.part_map[py - oy, px - ox]
            assert part > 0, f"person {i} keypoint {k} is off the figure"
            if v == 2:
                assert owner[py, px] == i
                assert part in synth._KEYPOINT_PARTS[k]
            else:
                assert owner[py, px] != i or not person.self_visible[k]
            checked += 1
    assert checked > 20


def _front_facing(height=180.0, anchor=(160.0, 230.0), yaw=0.0) -> Person:
    """A person standing straight, arms hanging, turned `yaw` degrees from the camera."""
    rng = np.random.default_rng(0)
    pose = dict.fromkeys(synth.sample_pose(rng, "standing")[1], 0.0)
    pose.update(l_shoulder_abduct=12.0, r_shoulder_abduct=12.0, l_hip_abduct=4.0, r_hip_abduct=4.0)
    appearance = replace(synth.sample_appearance(rng), dress=False, hat=False)
    return Person(pose, synth.Body(), appearance, yaw=yaw, height=height, anchor=anchor)


def _keypoints(elements, size=SMALL):
    background = np.full((size[1], size[0], 3), 90, np.uint8)
    _, owner, people = synth.render_scene(background, elements)
    return owner, people


def test_a_figure_drawn_later_occludes():
    behind = _front_facing()
    in_front = _front_facing(height=240.0, anchor=(175.0, 236.0))
    owner, (first, second) = _keypoints([behind, in_front])
    v = first.keypoints[:, 2]
    assert (v == 1).sum() >= 5, "the larger figure in front covers the smaller one's body"
    for k, (x, y, vis) in enumerate(first.keypoints):
        covered = owner[round(y), round(x)] == 1
        assert vis == (1 if covered else 2), f"keypoint {synth.COCO_KEYPOINTS[k]}"
    assert (second.keypoints[:, 2] == 2).all()
    assert first.area < first.mask.sum()  # some of its pixels are covered ...
    assert first.area == (owner == 0).sum()  # ... and area counts what is left


def test_an_occluder_occludes_what_is_behind_it():
    person = _front_facing()
    wall = Occluder(
        (30.0, 60.0, 200.0), polygon=np.array([[0, 160], [320, 160], [320, 240], [0, 240.0]])
    )
    _, (drawn,) = _keypoints([person, wall])
    kpts = drawn.keypoints
    below = kpts[:, 1] >= 161
    assert 0 < below.sum() < 17
    assert (kpts[below, 2] == 1).all()
    assert (kpts[~below & (kpts[:, 1] < 159), 2] == 2).all()
    _, (unhidden,) = _keypoints([wall, person])  # drawn before the person: hides nothing
    assert (unhidden.keypoints[:, 2] == 2).all()


def test_keypoints_outside_the_image_are_zero():
    person = _front_facing(height=300.0, anchor=(160.0, 150.0))  # head above the top edge
    _, (drawn,) = _keypoints([person])
    kpts = drawn.keypoints
    outside = kpts[:, 2] == 0
    assert outside[:5].all(), "the face is above the image"
    np.testing.assert_array_equal(kpts[outside, :2], 0)
    assert (kpts[15:, 2] == 2).all(), "the ankles are inside"
    assert drawn.bbox[1] == 0  # the box is clipped to the image


def test_left_and_right_follow_the_facing_direction():
    """Facing the camera the person's left is on the image's right; from behind it is on the
    left; turned to face image-right (yaw 90) the right side is near and the left side hidden."""
    _, (front,) = _keypoints([_front_facing(yaw=0.0)])
    _, (back,) = _keypoints([_front_facing(yaw=180.0)])
    _, (profile,) = _keypoints([_front_facing(yaw=90.0)])
    left, right = [5, 7, 9, 11, 13, 15], [6, 8, 10, 12, 14, 16]
    assert (front.keypoints[left, 0] > front.keypoints[right, 0]).all()
    assert (back.keypoints[left, 0] < back.keypoints[right, 0]).all()
    assert (front.keypoints[:, 2] == 2).all()
    assert (back.keypoints[:3, 2] == 1).all(), "nose and eyes are behind the head"
    assert (back.keypoints[3:, 2] == 2).all()
    v = dict(zip(synth.COCO_KEYPOINTS, profile.keypoints[:, 2], strict=True))
    for name in ("nose", "right_eye", "right_ear", "right_shoulder", "right_knee"):
        assert v[name] == 2, f"the {name} faces the camera"
    for name in ("left_eye", "left_ear", "left_shoulder", "left_hip"):
        assert v[name] == 1, f"the {name} is behind the head or torso"
    assert profile.keypoints[0, 0] > profile.keypoints[4, 0], "the nose points to image right"


def test_bbox_is_the_whole_figure_and_area_its_visible_pixels():
    for index in range(3):
        rng = np.random.default_rng([synth.VAL_SEED, index])
        background, elements, _ = synth.sample_scene(rng, synth.sample_size(rng))
        _, owner, people = synth.render_scene(background, elements)
        for i, person in enumerate(people):
            assert person.area == (owner == i).sum()
            if person.area == 0:
                continue
            rows, cols = np.nonzero(person.mask)
            x, y, w, h = person.bbox
            assert (x, y) == (person.origin[0] + cols.min(), person.origin[1] + rows.min())
            assert (w, h) == (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
            assert person.area <= person.mask.sum()


def test_same_seed_same_bytes_and_longer_sets_extend_shorter_ones(tmp_path):
    a = synth.synthesize_dataset(tmp_path / "a", 3, seed=5, size=SMALL)
    b = synth.synthesize_dataset(tmp_path / "b", 3, seed=5, size=SMALL)
    shorter = synth.synthesize_dataset(tmp_path / "c", 2, seed=5, size=SMALL)
    other = synth.synthesize_dataset(tmp_path / "d", 3, seed=6, size=SMALL)
    assert a.read_bytes() == b.read_bytes()
    for name in ("000001.jpg", "000002.jpg", "000003.jpg"):
        assert (a.parent / "images" / name).read_bytes() == (
            b.parent / "images" / name
        ).read_bytes()
    assert _load(shorter)["annotations"] == [
        ann for ann in _load(a)["annotations"] if ann["image_id"] <= 2
    ]
    assert _load(other)["annotations"] != _load(a)["annotations"]


def test_a_scene_draws_the_same_every_time():
    """Drawing uses no random state: a person keeps its look from frame to frame of a video."""
    rng = np.random.default_rng([synth.VAL_SEED, 3])
    background, elements, _ = synth.sample_scene(rng, SMALL)
    first, _, people = synth.render_scene(background, elements)
    again, _, people_again = synth.render_scene(background, elements)
    np.testing.assert_array_equal(first, again)
    for a, b in zip(people, people_again, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_output_is_complete_or_absent(tmp_path, monkeypatch):
    original = synth.render_image

    def fail_on_second(seed, index, *args):
        if index == 1:
            raise RuntimeError("boom")
        return original(seed, index, *args)

    monkeypatch.setattr(synth, "render_image", fail_on_second)
    with pytest.raises(RuntimeError, match="boom"):
        synth.synthesize_dataset(tmp_path / "out", 3, seed=0, size=SMALL)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a staging folder is left
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        synth.synthesize_dataset(tmp_path / "full", 1)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_images": 0}, "num_images"),
        ({"num_images": 2.5}, "num_images"),
        ({"num_images": 1, "seed": -1}, "seed"),
        ({"num_images": 1, "size": (10, 10)}, "size"),
        ({"num_images": 1, "max_people": 0}, "max_people"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        synth.synthesize_dataset(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ motion


@pytest.fixture(scope="module")
def sequence():
    """Sequence 0 of the tracking seed at a small size: long enough for a person to leave the
    view and come back."""
    frames = synth.render_sequence(synth.SEQUENCE_SEED, 0, 110, (192, 144), fps=25.0)
    return [people for _, people in frames]


def test_tracks_are_unique_per_frame_and_move_smoothly(sequence):
    previous = {}
    for people in sequence:
        ids = [p.person.track_id for p in people]
        assert len(ids) == len(set(ids))
        assert min(ids, default=1) >= 1
        current = {p.person.track_id: p for p in people}
        for track, person in current.items():
            if track not in previous:
                continue
            before, now = previous[track].keypoints, person.keypoints
            both = (before[:, 2] > 0) & (now[:, 2] > 0)
            step = np.hypot(*(now[both, :2] - before[both, :2]).T)
            # A walker moves up to ~0.06 statures a frame at 25 fps (a child at 1.6 m/s), a
            # swinging foot ~2.5x that; a swap of identities would jump by a body width or more.
            assert step.max(initial=0) < 0.2 * person.person.height + 1.0
        previous = current


def test_people_leave_come_back_and_cross(sequence):
    frames_of = {}
    for frame, people in enumerate(sequence):
        for p in people:
            frames_of.setdefault(p.person.track_id, []).append(frame)
    gaps = [np.diff(frames).max() for frames in frames_of.values() if len(frames) > 1]
    assert max(gaps) > 10, "some person leaves the view and comes back with the same track id"
    occluded = sum(int((p.keypoints[:, 2] == 1).sum()) for people in sequence for p in people)
    assert occluded > 0
    overlapping = 0
    for people in sequence:
        boxes = np.array([p.bbox for p in people])
        x0, y0 = boxes[:, 0], boxes[:, 1]
        x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
        ix = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
        iy = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
        overlapping += int(((ix > 0) & (iy > 0)).sum() - len(people))
    assert overlapping > 0, "paths cross"


def test_sequences_write_an_mp4_and_coco_json_per_video(tmp_path):
    paths = synth.synthesize_sequences(tmp_path / "seq", 2, 12, seed=3, size=(160, 120), fps=10)
    assert [p.name for p in paths] == ["seq_000.json", "seq_001.json"]
    for video_id, path in enumerate(paths, start=1):
        coco = COCO(str(path))
        images = coco.loadImgs(coco.getImgIds())
        assert [im["frame_index"] for im in images] == list(range(12))
        assert {im["video_id"] for im in images} == {video_id}
        assert _load(path)["videos"][0]["fps"] == 10
        anns = coco.loadAnns(coco.getAnnIds())
        assert min(a["track_id"] for a in anns) >= 1
        capture = cv2.VideoCapture(str(path.with_suffix(".mp4")))
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            assert frame.shape == (120, 160, 3)
            count += 1
        capture.release()
        assert count == 12


# --------------------------------------------------------------------------------------------- CLI


def test_cli_writes_images_and_videos(tmp_path, capsys):
    out = tmp_path / "still"
    assert cli.main(["data", "synth", "--out", str(out), "--images", "2", "--size", "160x120"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000001.jpg", "000002.jpg"]
    assert len(_load(out / "annotations.json")["images"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()  # an existing empty folder is fine
    argv = ["data", "synth", "--out", str(empty), "--motion", "--sequences", "1", "--frames", "3"]
    assert cli.main([*argv, "--size", "96x64"]) == 0
    assert sorted(p.name for p in empty.iterdir()) == ["seq_000.json", "seq_000.mp4"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "0"], "--images: must be at least 1"),
        (["--images", "many"], "--images: expected an integer"),
        (["--images", "2", "--seed", "-3"], "--seed: must be at least 0"),
        (["--images", "2", "--size", "640"], "--size: expected WIDTHxHEIGHT"),
        (["--images", "2", "--size", "8x8"], "--size: width and height"),
        (["--motion", "--frames", "0"], "--frames: must be at least 1"),
        (["--motion", "--fps", "0"], "--fps: must be in 1..240"),
    ],
)
def test_cli_bad_values_exit_2_naming_the_option(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "synth", "--out", str(tmp_path / "out"), *args])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "2", "--frames", "5"], "--frames needs --motion"),
        (["--motion", "--images", "2"], "--images is for still images"),
        (["--motion", "--max-people", "2"], "--max-people is for still images"),
        ([], "give --images N"),
    ],
)
def test_cli_inconsistent_options_exit_2(tmp_path, capsys, args, message):
    status = cli.main(["data", "synth", "--out", str(tmp_path / "out"), *args])
    assert status == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_never_overwrites(tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "annotations.json").write_text("{}")
    status = cli.main(["data", "synth", "--out", str(tmp_path / "used"), "--images", "1"])
    assert status == cli.EXIT_USAGE
    assert "--out" in capsys.readouterr().err
    assert (tmp_path / "used" / "annotations.json").read_text() == "{}"
