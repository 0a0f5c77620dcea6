"""Tracking: box IoU and pose OKS against direct formulas, the Kalman filter against the textbook
update, ByteTracker's ids (crossings, re-entry within the buffer, false positives, low scores,
skipped frames), and One-Euro smoothing (jitter of a still pose, no lag on new tracks)."""

import numpy as np
import pytest
import torch
import torchvision

from benchmarks import motion
from rtmo.config import COCO_SIGMAS
from rtmo.results import Poses
from rtmo.track import ByteTracker, OneEuroSmoother, kalman
from rtmo.track.similarity import box_iou, combined_similarity, pose_oks

K = 17


def people(boxes, keypoints, scores, size=(640, 480), keypoint_scores=None) -> Poses:
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(len(boxes), K, 2)
    if keypoint_scores is None:
        keypoint_scores = np.ones(keypoints.shape[:2])
    return Poses(np.asarray(boxes), np.asarray(scores), keypoints, keypoint_scores, size)


def random_boxes(rng, n):
    xy = rng.uniform(0, 500, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0.5, 200, (n, 2))], axis=1)


# -- similarity --------------------------------------------------------------------------------


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 37), random_boxes(rng, 5)
    b[0] = a[3]  # identical boxes: IoU exactly 1
    expected = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    got = box_iou(a, b)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)  # both float64
    assert got[3, 0] == pytest.approx(1.0)


def test_box_iou_of_degenerate_and_empty_boxes():
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    flat = np.array([[10, 10, 10, 50.0]])  # zero width
    assert box_iou(flat, flat)[0, 0] == 0.0


def test_pose_oks_matches_the_coco_formula():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 300, (3, K, 2))
    b = a[[2, 0]] + rng.normal(0, 5, (2, K, 2))
    visible_a = rng.random((3, K)) > 0.2
    visible_b = rng.random((2, K)) > 0.2
    boxes = random_boxes(rng, 3)
    got = pose_oks(a, visible_a, boxes, b, visible_b, COCO_SIGMAS)
    for i in range(3):
        longer = max(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1])
        area = 0.53 * 0.4 * longer**2
        for j in range(2):
            terms = [
                np.exp(-np.sum((a[i, k] - b[j, k]) ** 2) / (2 * area * (2 * COCO_SIGMAS[k]) ** 2))
                for k in range(K)
                if visible_a[i, k] and visible_b[j, k]
            ]
            assert got[i, j] == pytest.approx(np.mean(terms), rel=1e-12)
    assert got[2, 0] > 0.5 > got[1, 0]  # the perturbed copy is the most similar


def test_pose_oks_without_shared_keypoints_is_nan_and_falls_back_to_iou():
    a = np.zeros((1, K, 2))
    only_first, all_but_first = np.eye(1, K, dtype=bool), ~np.eye(1, K, dtype=bool)
    oks = pose_oks(a, only_first, np.array([[0, 0, 10, 10.0]]), a, all_but_first, COCO_SIGMAS)
    assert np.isnan(oks[0, 0])
    iou = np.array([[0.7]])
    assert combined_similarity(iou, oks, 0.5)[0, 0] == 0.7
    assert combined_similarity(iou, np.array([[0.1]]), 0.5)[0, 0] == pytest.approx(0.4)


# -- Kalman filter -------------------------------------------------------------------------------


def test_batched_update_equals_the_textbook_update():
    rng = np.random.default_rng(2)
    mean, cov = kalman.initiate(random_boxes(rng, 4))
    mean, cov = kalman.predict(mean + rng.normal(0, 1, mean.shape), cov)
    boxes = random_boxes(rng, 4)
    got_mean, got_cov = kalman.update(mean, cov, boxes)
    h = np.eye(4, 8)
    for i in range(4):
        r = np.diag((kalman.POSITION_STD * np.tile(np.maximum(mean[i, 2:4], 1), 2)) ** 2)
        gain = cov[i] @ h.T @ np.linalg.inv(h @ cov[i] @ h.T + r)
        z = kalman.xyxy_to_cxcywh(boxes[i])[0]
        np.testing.assert_allclose(got_mean[i], mean[i] + gain @ (z - h @ mean[i]), rtol=1e-9)
        expected_cov = (np.eye(8) - gain @ h) @ cov[i]
        np.testing.assert_allclose(got_cov[i], expected_cov, rtol=1e-7, atol=1e-7)


def test_constant_velocity_is_learned():
    box = np.array([[100.0, 100, 150, 250]])
    mean, cov = kalman.initiate(box)
    for t in range(1, 30):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, box + np.array([4, 1, 4, 1]) * t)
    predicted, _ = kalman.predict(mean, cov)
    np.testing.assert_allclose(kalman.boxes_of(predicted)[0], box[0] + [120, 30, 120, 30], atol=0.5)


# -- ByteTracker ---------------------------------------------------------------------------------


def standing(x: float, arms_up: bool) -> np.ndarray:
    """A person 300 px tall with feet at (x, 400), arms up or down: keypoints (17, 2)."""
    walker = motion._new_walker(np.random.default_rng(0), 300.0)
    walker.arms, walker.side_view = ("raised" if arms_up else "swing"), 0.0
    walker.times, walker.points = [0.0, 1.0], [(x, 400.0), (x, 400.0)]
    pose = motion._skeleton(walker, (x, 400.0), 0.0, 1.0)
    if arms_up:  # both arms up
        pose[[8, 10]] = pose[[6, 6]] - [[20, 60], [25, 130]]
    return pose


def test_pose_separates_people_whose_boxes_coincide():
    """Two people in the same box (one behind the other); from frame 1 on, the box of the one
    with raised arms comes out a little nearer to the other's track. IoU alone follows the boxes
    and swaps them; with OKS each id stays with its pose."""
    up, down = standing(300, True), standing(300, False)
    box = np.array([250.0, 80, 350, 420])
    nudged = box + 3.0
    for oks_weight, swapped in ((0.0, True), (0.5, False)):
        tracker = ByteTracker(COCO_SIGMAS, oks_weight=oks_weight)
        first = tracker.update(people([box, nudged], [up, down], [0.9, 0.8]))
        id_up, id_down = first.track_ids.tolist()
        for _ in range(5):
            out = tracker.update(people([nudged, box], [up, down], [0.9, 0.8]))
            by_pose = dict(zip(("up", "down"), out.track_ids.tolist(), strict=True))
            assert (by_pose == {"up": id_down, "down": id_up}) is swapped


def ids_by_truth(sequence, detections, tracker) -> dict[int, list[int]]:
    """{true id: the track ids its detections got, frame by frame} (untracked ones left out)."""
    out: dict[int, list[int]] = {}
    for index, frame in enumerate(detections):
        tracked = tracker.update(
            people(frame.boxes, frame.keypoints, frame.scores, sequence.image_size,
                   frame.keypoint_scores),
            index,
        )  # fmt: skip
        for box, track_id in zip(tracked.boxes, tracked.track_ids, strict=True):
            row = int(np.flatnonzero(np.all(np.isclose(frame.boxes, box, atol=1e-3), axis=1))[0])
            if frame.ids[row] > 0:
                out.setdefault(int(frame.ids[row]), []).append(int(track_id))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ids_stay_with_people_through_a_crossing(seed):
    sequence = motion.make_sequence("crossing", seed, frames=120)
    detections = motion.detect(sequence, seed, oks_level=0.85, false_positives_per_frame=0.3)
    ids = ids_by_truth(sequence, detections, ByteTracker(COCO_SIGMAS))
    assert len(ids) >= 2
    for true_id, track_ids in ids.items():
        assert set(track_ids) == {track_ids[0]}, f"person {true_id} got ids {set(track_ids)}"
    assert len({track_ids[0] for track_ids in ids.values()}) == len(ids)  # no id shared


def test_a_person_back_within_the_buffer_keeps_the_id():
    sequence = motion.make_sequence("reenter", 0)  # person 1 is out of the picture 19 frames
    present = [t for t, frame in enumerate(sequence.frames) if 1 in frame.ids]
    gap = max(np.diff(present)) - 1
    assert 15 <= gap <= 25
    detections = motion.detect(sequence, 0, miss_rate=0.0, false_positives_per_frame=0.0)
    kept = ids_by_truth(sequence, detections, ByteTracker(COCO_SIGMAS, track_buffer=30))
    assert set(kept[1]) == {kept[1][0]}
    # With a buffer shorter than the absence, the track is gone: a new id when they come back.
    lost = ids_by_truth(sequence, detections, ByteTracker(COCO_SIGMAS, track_buffer=gap - 5))
    assert len(set(lost[1])) == 2


def test_a_one_frame_false_positive_never_gets_an_id():
    tracker = ByteTracker(COCO_SIGMAS)
    person = standing(100, False)
    box = np.array([50.0, 80, 150, 420])
    assert tracker.update(people([box], [person], [0.9])).track_ids.tolist() == [1]
    ghost_box = np.array([400.0, 80, 500, 420])
    out = tracker.update(people([box, ghost_box], [person, standing(450, True)], [0.9, 0.95]))
    assert out.track_ids.tolist() == [1]  # the new one waits for a second frame
    assert tracker.update(people([box], [person], [0.9])).track_ids.tolist() == [1]
    # Seen twice, a newcomer is confirmed and gets the next id.
    for expected in ([1], [1, 2]):
        out = tracker.update(people([box, ghost_box], [person, standing(450, True)], [0.9, 0.95]))
        assert sorted(out.track_ids.tolist()) == expected


def test_low_scores_keep_a_track_but_never_start_one():
    tracker = ByteTracker(COCO_SIGMAS, high_thr=0.5, low_thr=0.1)
    person, box = standing(100, False), np.array([50.0, 80, 150, 420])
    tracker.update(people([box], [person], [0.9]))
    # Half hidden: a low score; the second round keeps the id.
    assert tracker.update(people([box + 2], [person], [0.3])).track_ids.tolist() == [1]
    fresh = ByteTracker(COCO_SIGMAS)
    for _ in range(3):
        assert len(fresh.update(people([box], [person], [0.3]))) == 0
    assert len(fresh.update(people([box], [person], [0.05]))) == 0


def test_skipped_frames_are_predicted_through():
    tracker = ByteTracker(COCO_SIGMAS)
    person = standing(100, False)
    base = np.array([50.0, 80, 150, 420])
    for frame in range(10):  # 10 px per frame to the right
        step = np.array([10.0 * frame, 0, 10.0 * frame, 0])
        tracker.update(people([base + step], person[None] + [10.0 * frame, 0], [0.9]), frame)
    # Frames 10-21 unreadable; at frame 22 the 100 px wide box has moved 130 px from where it
    # was last seen (IoU 0 with it), to where its velocity takes it.
    moved = people([base + np.array([220.0, 0, 220, 0])], person[None] + [220.0, 0], [0.9])
    assert tracker.update(moved, 22).track_ids.tolist() == [1]
    with pytest.raises(ValueError, match="does not come after"):
        tracker.update(moved, 22)


def test_bad_options_and_inputs_are_named():
    with pytest.raises(ValueError, match="track_buffer"):
        ByteTracker(COCO_SIGMAS, track_buffer=-1)
    with pytest.raises(TypeError, match="track_buffer"):
        ByteTracker(COCO_SIGMAS, track_buffer=2.5)
    with pytest.raises(ValueError, match="oks_weight"):
        ByteTracker(COCO_SIGMAS, oks_weight=1.5)
    with pytest.raises(ValueError, match="sigmas"):
        ByteTracker([0.1, -0.2])
    with pytest.raises(ValueError, match="low_thr"):
        ByteTracker(COCO_SIGMAS, low_thr=0.6, high_thr=0.5)
    with pytest.raises(ValueError, match="14 keypoints"):
        ByteTracker(COCO_SIGMAS).update(Poses.empty(14, (64, 48)))


def test_no_people_and_empty_frames():
    tracker = ByteTracker(COCO_SIGMAS)
    out = tracker.update(Poses.empty(K, (64, 48)))
    assert len(out) == 0
    assert out.track_ids.shape == (0,)
    person, box = standing(100, False), np.array([50.0, 80, 150, 420])
    # Not the tracker's first frame: confirmed when seen a second time.
    assert len(tracker.update(people([box], [person], [0.9]))) == 0
    assert tracker.update(people([box], [person], [0.9])).track_ids.tolist() == [1]
    assert len(tracker.update(Poses.empty(K, (640, 480)))) == 0
    assert tracker.update(people([box], [person], [0.9])).track_ids.tolist() == [1]


# -- smoothing -----------------------------------------------------------------------------------


def acceleration(path: np.ndarray) -> float:
    """Mean |x[t+1] - 2 x[t] + x[t-1]| of a (T, K, 2) keypoint path."""
    return float(np.linalg.norm(path[2:] - 2 * path[1:-1] + path[:-2], axis=-1).mean())


def smoothed_path(smoother, path, boxes, track_id=1, fps=30.0, start=0):
    out = []
    for t, keypoints in enumerate(path):
        frame = people(boxes[t][None], keypoints[None], [0.9])
        frame.track_ids = np.array([track_id])
        out.append(smoother(frame, (start + t) / fps).keypoints[0])
    return np.array(out)


def test_smoothing_reduces_the_jitter_of_a_noisy_still_pose():
    rng = np.random.default_rng(3)
    still = standing(300, False)
    noisy = still + rng.normal(0, 4.0, (90, K, 2))  # 4 px noise on a 300 px person
    boxes = np.tile([250.0, 80, 350, 420], (90, 1))
    smoothed = smoothed_path(OneEuroSmoother(), noisy, boxes)
    assert acceleration(smoothed) < acceleration(noisy) / 4  # measured: / 7.0
    error = lambda path: np.linalg.norm(path[30:] - still, axis=-1).mean()  # noqa: E731
    assert error(smoothed) < error(noisy) / 2  # and closer to the truth (measured: / 2.6)


def test_smoothing_follows_fast_motion_and_never_lags_a_new_track():
    walk = standing(100, False)[None] + np.arange(60)[:, None, None] * [15.0, 0]  # 1.5 heights/s
    boxes = np.array([[50.0 + 15 * t, 80, 150 + 15 * t, 420] for t in range(60)])
    smoother = OneEuroSmoother()
    smoothed = smoothed_path(smoother, walk, boxes)
    np.testing.assert_array_equal(smoothed[0], walk[0].astype(np.float32))  # first frame as is
    lag = lambda path: np.abs(path[30:, :, 0] - walk[30:, :, 0]).mean()  # noqa: E731
    # Less than one frame's motion behind (measured 9.6 px at 15 px per frame); a fixed cutoff
    # (beta 0) falls 72 px behind.
    assert lag(smoothed) < 15.0
    assert lag(smoothed_path(OneEuroSmoother(beta=0.0), walk, boxes)) > 5 * lag(smoothed)
    # A new id on the next frame, far away: returned as it is, nothing of the other track.
    newcomer = standing(500, True)
    assert np.array_equal(
        smoothed_path(smoother, newcomer[None], boxes[:1], track_id=2, start=60)[0],
        newcomer.astype(np.float32),
    )


def test_a_track_back_after_a_gap_restarts_its_filter():
    smoother = OneEuroSmoother()
    pose = standing(100, False)
    box = np.array([[50.0, 80, 150, 420]])
    smoothed_path(smoother, np.repeat(pose[None], 5, 0), np.repeat(box, 5, 0))
    other = people(box, pose[None], [0.9])
    other.track_ids = np.array([7])
    smoother(other, 5 / 30)  # track 1 absent from this frame
    moved = pose + np.array([200.0, 0])
    back = smoothed_path(smoother, moved[None], box + np.array([200.0, 0, 200, 0]), start=6)
    np.testing.assert_array_equal(back[0], moved.astype(np.float32))


def test_smoother_errors_are_named():
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroSmoother(min_cutoff=0)
    with pytest.raises(ValueError, match="beta"):
        OneEuroSmoother(beta=-1)
    with pytest.raises(ValueError, match="track_ids"):
        OneEuroSmoother()(Poses.empty(K, (64, 48)), 0.0)
    smoother = OneEuroSmoother()
    frame = Poses.empty(K, (64, 48))
    frame.track_ids = np.zeros(0, np.int64)
    smoother(frame, 1.0)
    with pytest.raises(ValueError, match="does not come after"):
        smoother(frame, 1.0)


# -- Poses with ids ------------------------------------------------------------------------------


def test_track_ids_travel_with_the_people():
    person = standing(100, False)
    boxes = np.array([[50.0, 80, 150, 420], [300, 80, 400, 420]])
    poses = people(boxes, [person, person + 250], [0.9, 0.8])
    poses.track_ids = np.array([7, 3])
    poses = Poses(**{**poses.__dict__})  # validated on construction
    assert poses[1].track_ids.tolist() == [3]
    assert poses[poses.scores > 0.85].track_ids.tolist() == [7]
    assert [p["track_id"] for p in poses.to_dict()["people"]] == [7, 3]
    assert next(iter(poses.to_dict()["people"][0])) == "track_id"  # first key
    assert "track_id" not in people(boxes, [person, person], [0.9, 0.8]).to_dict()["people"][0]
    with pytest.raises(ValueError, match="track_ids must have shape"):
        Poses(boxes, [0.9, 0.8], np.zeros((2, K, 2)), np.ones((2, K)), (640, 480), track_ids=[1])


def test_rows_and_crops_of_tracked_people():
    person = standing(100, False)
    poses = people(
        np.array([[50.0, 80, 150, 420], [-20, -5, 10, 30]]), [person, person], [0.9, 0.8]
    )
    poses.track_ids = np.array([4, 9])
    columns, rows = poses.csv_columns(), poses.to_rows()
    assert columns[:7] == ["person", "track_id", "score", "x1", "y1", "x2", "y2"]
    assert columns[7:10] == ["keypoint0_x", "keypoint0_y", "keypoint0_score"]
    assert len(columns) == 7 + 3 * K
    assert [len(row) for row in rows] == [len(columns)] * 2
    assert rows[0][:3] == [0, 4, 0.9]
    image = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3)
    np.testing.assert_array_equal(poses.crop(image, 0), image[80:420, 50:150])
    assert poses.crop(image, 1).shape == (30, 10, 3)  # clipped to the image


def test_tracked_people_are_drawn_in_their_id_colour():
    from rtmo.visualize import track_color

    person = standing(100, False)
    poses = people(np.array([[50.0, 80, 150, 420]]), [person], [0.9])
    poses.track_ids = np.array([5])
    drawn = poses.plot(np.zeros((480, 640, 3), np.uint8), draw_scores=False)
    assert tuple(drawn[250, 50].tolist()) == track_color(5)  # the box's left edge
    assert track_color(5) != track_color(6)
