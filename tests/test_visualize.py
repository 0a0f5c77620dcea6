"""Drawing: limbs, keypoint threshold, boxes and scores, readable on small and large images."""

import numpy as np
import pytest

from rtmo.results import Poses
from rtmo.visualize import BOX_COLOR, drawing_scale

# Layout colours are RGB; the canvas is BGR.
RED_RGB, BLUE_RGB = (255, 0, 0), (0, 0, 255)
RED, BLUE = (0, 0, 255), (255, 0, 0)


def one_person(size, kpt_scores=(0.9, 0.9, 0.9)) -> Poses:
    w, h = size
    keypoints = np.array([[[0.3 * w, 0.3 * h], [0.7 * w, 0.3 * h], [0.5 * w, 0.8 * h]]])
    return Poses(
        boxes=np.array([[0.2 * w, 0.2 * h, 0.8 * w, 0.9 * h]]),
        scores=np.array([0.87]),
        keypoints=keypoints,
        keypoint_scores=np.array([kpt_scores]),
        image_size=size,
        keypoint_names=("a", "b", "c"),
        skeleton=((0, 1), (1, 2)),
        limb_colors=(RED_RGB, BLUE_RGB),
        keypoint_colors=((0, 255, 0),) * 3,
    )


def _midpoint_color(canvas, poses, a, b):
    x, y = np.round((poses.keypoints[0, a] + poses.keypoints[0, b]) / 2).astype(int)
    return tuple(canvas[y, x].tolist())


@pytest.mark.parametrize("size", [(64, 48), (640, 480), (3840, 2160)])
def test_limbs_boxes_and_keypoints_are_drawn(size):
    poses = one_person(size)
    image = np.zeros((size[1], size[0], 3), np.uint8)
    canvas = poses.plot(image)
    assert canvas.shape == image.shape
    assert canvas.dtype == np.uint8
    assert not canvas.flags.writeable or canvas is not image
    assert (image == 0).all()  # the input is not drawn on
    assert _midpoint_color(canvas, poses, 0, 1) == RED
    assert _midpoint_color(canvas, poses, 1, 2) == BLUE
    x2, y2 = poses.boxes[0, 2:].round().astype(int)
    # Anti-aliased 1-px lines blend with the background: check the hue, not the exact value.
    b, g, r = canvas[(y2 + int(poses.boxes[0, 1])) // 2, x2].tolist()
    assert g > 0.8 * BOX_COLOR[1]
    assert b == r == 0


def test_low_scoring_keypoints_and_their_limbs_are_hidden():
    poses = one_person((640, 480), kpt_scores=(0.9, 0.9, 0.1))
    canvas = poses.plot(np.zeros((480, 640, 3), np.uint8), kpt_thr=0.3, draw_boxes=False)
    assert _midpoint_color(canvas, poses, 0, 1) == RED
    assert _midpoint_color(canvas, poses, 1, 2) == (0, 0, 0)
    x, y = poses.keypoints[0, 2].round().astype(int)
    assert (canvas[y - 3 : y + 4, x - 3 : x + 4] == 0).all()
    shown = poses.plot(np.zeros((480, 640, 3), np.uint8), kpt_thr=0.05, draw_boxes=False)
    assert _midpoint_color(shown, poses, 1, 2) == BLUE


def test_score_label_is_drawn_inside_the_image_for_a_box_at_the_top():
    poses = one_person((320, 240))
    poses.boxes[0, 1] = 0
    blank = np.zeros((240, 320, 3), np.uint8)
    with_score = poses.plot(blank)
    without = poses.plot(blank, draw_scores=False)
    changed = np.any(with_score != without, axis=2)
    ys, _ = np.nonzero(changed)
    assert ys.size > 0
    assert ys.min() >= 0


def test_drawing_scales_with_image_size():
    small, large = drawing_scale((160, 120)), drawing_scale((3840, 2160))
    assert small[0] == 1
    assert large[0] >= 7
    assert large[1] > small[1]
    assert large[2] > 4 * small[2]


def test_wild_and_nan_keypoints_do_not_crash():
    poses = one_person((100, 100))
    poses.keypoints[0, 0] = [1e12, -1e12]
    poses.keypoints[0, 1] = [np.nan, 5]
    canvas = poses.plot(np.zeros((100, 100), np.uint8))  # grayscale in, BGR out
    assert canvas.shape == (100, 100, 3)


def test_image_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="poses are for a 64x48 image, got an image of 48x64"):
        one_person((64, 48)).plot(np.zeros((64, 48, 3), np.uint8))


def test_keypoints_take_their_layout_colour():
    poses = one_person((640, 480))
    canvas = poses.plot(np.zeros((480, 640, 3), np.uint8), draw_boxes=False)
    x, y = poses.keypoints[0, 2].round().astype(int)
    assert tuple(canvas[y, x].tolist()) == (0, 255, 0)


def test_layout_without_colours_is_drawn_with_defaults():
    poses = one_person((200, 100))
    poses.limb_colors, poses.keypoint_colors = (), ()
    canvas = poses.plot(np.zeros((100, 200, 3), np.uint8), draw_boxes=False)
    assert canvas.any()
