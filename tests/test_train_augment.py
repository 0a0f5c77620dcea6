"""Training augmentation: the labels follow the pixels through every warp, flip and mosaic."""

from __future__ import annotations

import numpy as np
import pytest

from rtmo.config import AugmentSettings
from rtmo.preprocess import letterbox_image
from rtmo.train.augment import PAD_VALUE, augment, flip, letterbox, mosaic, random_affine, warp
from rtmo.train.data import Sample

# Three keypoints per person, each painted as a 7x7 square of its own colour.
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
FLIP = (0, 2, 1)  # keypoints 1 and 2 are a left/right pair


def _sample(rng: np.random.Generator, width=120, height=90, people=2) -> Sample:
    image = np.full((height, width, 3), 60, np.uint8)
    # Distinct cells of a 16 px grid, so that no two squares touch.
    cells = [(x, y) for x in range(12, width - 11, 16) for y in range(12, height - 11, 16)]
    chosen = rng.choice(len(cells), size=3 * people, replace=False)
    keypoints = np.array([cells[i] for i in chosen], np.float32).reshape(people, 3, 2)
    for person in keypoints:
        for color, (x, y) in zip(COLORS, person.astype(int), strict=True):
            image[y - 3 : y + 4, x - 3 : x + 4] = color
    boxes = np.concatenate([keypoints.min(1) - 4, keypoints.max(1) + 4], axis=1)
    visible = np.ones((people, 3), np.float32)
    areas = np.full(people, 400.0, np.float32)
    return Sample(image, boxes.astype(np.float32), keypoints, visible, areas)


def _assert_labels_on_their_pixels(sample: Sample, colors=COLORS) -> None:
    """Every visible keypoint sits on a pixel of its own colour (after interpolation: closest)."""
    assert len(sample) > 0
    for person, visible in zip(sample.keypoints, sample.visible, strict=True):
        for k, ((x, y), v) in enumerate(zip(person, visible, strict=True)):
            if v == 0:
                continue
            pixel = sample.image[round(y), round(x)].astype(int)
            distances = np.abs(colors.astype(int) - pixel).sum(axis=1)
            assert distances.argmin() == k, (k, (x, y), pixel)
        hidden = visible == 0
        assert (person[hidden] == 0).all()


def test_letterbox_is_the_prediction_warp_bit_for_bit():
    sample = _sample(np.random.default_rng(0))
    boxed = letterbox(sample, (64, 64))
    expected, placement = letterbox_image(sample.image, (64, 64))
    np.testing.assert_array_equal(boxed.image, expected)
    np.testing.assert_allclose(boxed.keypoints, placement.to_input(sample.keypoints), atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_random_affine_moves_labels_with_pixels(seed):
    rng = np.random.default_rng(seed)
    sample = _sample(rng)
    out = random_affine(sample, rng, (96, 96), AugmentSettings(rotate=10, shift=0.1))
    _assert_labels_on_their_pixels(out)
    sizes = out.boxes[:, 2:] - out.boxes[:, :2]
    assert (sizes >= 1).all()
    assert (out.boxes >= 0).all()
    assert (out.boxes <= 96).all()


def test_areas_scale_with_the_warp_and_outside_keypoints_turn_invisible():
    sample = _sample(np.random.default_rng(1), people=1)
    matrix = np.array([[2.0, 0.0, -60.0], [0.0, 2.0, 0.0]])  # zoom 2x, left part cut
    out = warp(sample, matrix, (120, 90))
    assert out.areas[0] == pytest.approx(4 * 400.0)
    x = sample.keypoints[0, :, 0] * 2 - 60
    y = sample.keypoints[0, :, 1] * 2
    inside = (x >= 0) & (x < 120) & (y >= 0) & (y < 90)
    np.testing.assert_array_equal(out.visible[0] > 0, inside)


def test_people_without_a_visible_keypoint_are_dropped():
    sample = _sample(np.random.default_rng(2), people=1)
    out = warp(sample, np.array([[1.0, 0, 500], [0, 1.0, 0]]), (120, 90))  # moved off the canvas
    assert len(out) == 0
    assert out.keypoints.shape == (0, 3, 2)


def test_flip_mirrors_and_swaps_left_and_right():
    sample = _sample(np.random.default_rng(3))
    out = flip(sample, FLIP)
    swapped = COLORS[list(FLIP)]
    _assert_labels_on_their_pixels(out, swapped)
    np.testing.assert_allclose(out.keypoints[:, 1, 0], 119 - sample.keypoints[:, 2, 0])
    np.testing.assert_allclose(out.boxes[:, [0, 2]], 120 - sample.boxes[:, [2, 0]])


def test_mosaic_keeps_every_quadrants_people_on_their_pixels():
    rng = np.random.default_rng(4)
    parts = [_sample(rng, 100 + 10 * i, 80) for i in range(4)]
    out = mosaic(parts, rng, (96, 96))
    assert out.image.shape == (192, 192, 3)
    assert (out.image == PAD_VALUE).any()
    assert len(out) >= 4  # people of several quadrants survive the cut
    _assert_labels_on_their_pixels(out)


@pytest.mark.parametrize("jitter", [True, False])
def test_augment_is_a_function_of_its_generator(jitter):
    parts = [_sample(np.random.default_rng(i)) for i in range(4)]
    runs = [
        augment(parts, np.random.default_rng(9), (96, 96), AugmentSettings(), FLIP, jitter)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    np.testing.assert_array_equal(runs[0].keypoints, runs[1].keypoints)
    assert runs[0].image.shape == (96, 96, 3)
