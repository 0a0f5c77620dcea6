"""`Poses.plot` and the predictor take images in every form a user holds them: a path, a BGR array
(OpenCV), an RGB array (`rgb=True`) and a PIL image; the drawing is the same in all of them and
comes back in the form it was given."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from test_predictor import ContentModel, content_image
from test_visualize import RED, one_person

from rtmo.predictor import RTMO

SIZE = (80, 60)


@pytest.fixture
def bgr():
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)


def test_a_path_is_read_and_drawn_in_bgr(tmp_path, bgr):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), bgr)
    poses = one_person(SIZE)
    for given in (path, str(path)):
        np.testing.assert_array_equal(poses.plot(given), poses.plot(bgr))


def test_rgb_arrays_are_drawn_in_rgb(bgr):
    poses = one_person(SIZE)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    drawn = poses.plot(rgb, rgb=True)
    np.testing.assert_array_equal(drawn, cv2.cvtColor(poses.plot(bgr), cv2.COLOR_BGR2RGB))
    # The red limb (RGB layout colour) is red in the RGB result.
    x, y = np.round(poses.keypoints[0, :2].mean(0)).astype(int)
    assert tuple(drawn[y, x]) == RED[::-1]


def test_pil_images_come_back_as_pil_images(bgr):
    poses = one_person(SIZE)
    pil = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    drawn = poses.plot(pil)
    assert isinstance(drawn, Image.Image)
    assert drawn.mode == "RGB"
    np.testing.assert_array_equal(
        np.asarray(drawn), cv2.cvtColor(poses.plot(bgr), cv2.COLOR_BGR2RGB)
    )


def test_the_predictor_reads_pil_images_in_any_mode():
    model = RTMO(ContentModel(), device="cpu")
    bgr = content_image(64, 48)
    expected = model(bgr)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for pil in (Image.fromarray(rgb), Image.fromarray(rgb).convert("RGBA")):
        got = model(pil)
        np.testing.assert_array_equal(got.boxes, expected.boxes)
        assert got.image_size == (64, 48)
    grey = Image.fromarray(bgr[:, :, 0])
    assert model(grey).image_size == (64, 48)
    # 16-bit grey is scaled to 8 bits, not clipped at 255.
    wide = Image.fromarray(bgr[:, :, 0].astype(np.uint16) * 257)
    assert wide.mode.startswith("I;16")
    np.testing.assert_array_equal(model(wide).boxes, model(grey).boxes)
