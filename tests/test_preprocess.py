"""BottomupResize letterbox (cv2 and torch paths), its inverse mapping, and image conversion."""

import cv2
import numpy as np
import pytest
import torch

from rtmo.preprocess import (
    PAD_VALUE,
    letterbox_image,
    letterbox_params,
    letterbox_tensor,
    to_bgr_uint8,
)

# (W, H) of landscape, portrait, square, tiny and huge images; inputs of RTMO-t and RTMO-s.
IMAGE_SIZES = [(640, 480), (480, 640), (500, 500), (17, 9), (9, 17), (1, 1), (12000, 7000)]
INPUT_SIZES = [(416, 416), (640, 640), (640, 384)]
# mmpose keeps centre and scale in float32; the matrix is solved from float32 points. The round trip
# is exact up to that rounding: a few float32 ulps of the image extent.
EPS32 = float(np.finfo(np.float32).eps)


def _grid_points(width: int, height: int) -> np.ndarray:
    xs = np.linspace(-0.5, width + 0.5, 7)
    ys = np.linspace(-0.5, height + 0.5, 5)
    return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("input_size", INPUT_SIZES)
def test_matrix_is_the_centered_fit(image_size, input_size):
    (img_w, img_h), (in_w, in_h) = image_size, input_size
    s = min(in_w / img_w, in_h / img_h)
    expected = np.array(
        [[s, 0, in_w / 2 - s * img_w / 2], [0, s, in_h / 2 - s * img_h / 2]], dtype=np.float64
    )
    box = letterbox_params(image_size, input_size)
    # getAffineTransform leaves ~1e-17 in the zero entries (double rounding of the solve).
    np.testing.assert_allclose(box.matrix[:, :2], expected[:, :2], rtol=8 * EPS32, atol=1e-12)
    np.testing.assert_allclose(box.matrix[:, 2], expected[:, 2], atol=8 * EPS32 * max(in_w, in_h))


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("input_size", INPUT_SIZES)
def test_round_trip_through_letterbox_and_inverse(image_size, input_size):
    box = letterbox_params(image_size, input_size)
    points = _grid_points(*image_size)
    back = box.to_original(box.to_input(points))
    tol = 4 * EPS32 * max(image_size)
    np.testing.assert_allclose(back, points, rtol=0, atol=tol)
    # Boxes are mapped corner by corner with the same formula.
    boxes = np.concatenate([points[:-1], points[1:]], axis=1)
    np.testing.assert_allclose(
        box.boxes_to_original(
            np.stack([box.to_input(boxes[:, :2]), box.to_input(boxes[:, 2:])], 1)
        ).reshape(-1, 4),
        boxes,
        rtol=0,
        atol=tol,
    )


@pytest.mark.parametrize("image_size", [(640, 480), (480, 640), (17, 9)])
def test_image_corners_land_on_the_centered_content(image_size):
    box = letterbox_params(image_size, (416, 416))
    img_w, img_h = image_size
    s = min(416 / img_w, 416 / img_h)
    corners = box.to_input(np.array([[0.0, 0.0], [img_w, img_h]]))
    pad = np.array([(416 - s * img_w) / 2, (416 - s * img_h) / 2])
    np.testing.assert_allclose(corners[0], pad, atol=1e-3)
    np.testing.assert_allclose(corners[1], 416 - pad, atol=1e-3)


def test_warped_dot_lands_where_the_mapping_says():
    image = np.zeros((300, 500, 3), np.uint8)
    image[200:203, 100:103] = 255  # a 3x3 dot centred on pixel (101, 201)
    warped, box = letterbox_image(image, (640, 640))
    ys, xs = np.nonzero(warped[:, :, 0] > 150)
    expected = box.to_input(np.array([101.0, 201.0]))
    np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=1.0)


def test_letterbox_pads_with_114_and_keeps_bgr():
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30
    warped, _ = letterbox_image(image, (416, 416))
    assert warped.shape == (416, 416, 3)
    assert warped.dtype == np.uint8
    assert (warped[0] == PAD_VALUE).all()  # band above the centred content
    assert (warped[-1] == PAD_VALUE).all()
    np.testing.assert_array_equal(warped[208, 208], [10, 20, 30])


def test_invalid_sizes_are_named():
    with pytest.raises(ValueError, match="multiples of 32"):
        letterbox_params((100, 100), (100, 100))
    with pytest.raises(ValueError, match="at least 1x1"):
        letterbox_params((0, 10), (416, 416))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        letterbox_image(np.zeros((10, 10), np.uint8), (416, 416))


# The torch path follows OpenCV's float bilinear warp, but OpenCV's source coordinates can differ in
# the last float32 bit, which moves a value across a .5 rounding boundary. Measured on uint8 noise:
# at most 1 grey level, on 0 to 0.17% of the values (1500x1000 -> 640x384 is the worst case seen).
MAX_GREY_DIFF = 1
MAX_DIFFERING_FRACTION = 5e-3


@pytest.mark.parametrize("image_size", [(640, 480), (480, 640), (17, 9), (1500, 1000), (1, 1)])
@pytest.mark.parametrize("input_size", [(416, 416), (640, 384)])
def test_tensor_letterbox_matches_cv2_on_uint8(image_size, input_size):
    rng = np.random.default_rng(image_size[0] * 7 + input_size[1])
    image = rng.integers(0, 256, (image_size[1], image_size[0], 3), dtype=np.uint8)
    expected, box = letterbox_image(image, input_size)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    out, tbox = letterbox_tensor(tensor, input_size)
    assert out.shape == (1, 3, input_size[1], input_size[0])
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(tbox.matrix, box.matrix)
    got = out[0].permute(1, 2, 0).numpy().astype(np.int64)
    diff = np.abs(got - expected.astype(np.int64))
    assert diff.max() <= MAX_GREY_DIFF
    assert (diff > 0).mean() <= MAX_DIFFERING_FRACTION


def test_tensor_letterbox_matches_cv2_on_float_batch():
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (2, 90, 170, 3)).astype(np.float32)
    out, _ = letterbox_tensor(torch.from_numpy(images).permute(0, 3, 1, 2), (416, 416))
    for i in range(2):
        expected, _ = letterbox_image(images[i], (416, 416))
        # cv2 interpolates float32 images in float32 too; allow its rounding on values up to 255.
        np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-3)


def test_tensor_letterbox_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        letterbox_tensor(torch.zeros(1, 4, 8, 8), (416, 416))
    with pytest.raises(TypeError, match="int32"):
        letterbox_tensor(torch.zeros(1, 3, 8, 8, dtype=torch.int32), (416, 416))


def test_to_bgr_uint8_converts_gray_rgba_and_16_bit():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_bgr_uint8(gray).shape == (3, 4, 3)
    np.testing.assert_array_equal(to_bgr_uint8(gray)[..., 2], gray)
    np.testing.assert_array_equal(to_bgr_uint8(gray[..., None]), to_bgr_uint8(gray))
    bgra = np.dstack([np.full((3, 4), v, np.uint8) for v in (1, 2, 3, 0)])
    np.testing.assert_array_equal(to_bgr_uint8(bgra)[0, 0], [1, 2, 3])
    deep = np.array([[0, 257, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(to_bgr_uint8(deep)[0, :, 0], [0, 1, 255])
    bgr = np.zeros((2, 2, 3), np.uint8)
    assert to_bgr_uint8(bgr) is bgr


def test_to_bgr_uint8_rejects_what_it_cannot_convert():
    with pytest.raises(TypeError, match="uint8 or uint16, got float32"):
        to_bgr_uint8(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"got \(2, 2, 2\)"):
        to_bgr_uint8(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        to_bgr_uint8([[1, 2]])


def test_16_bit_png_read_by_cv2_matches_conversion(tmp_path):
    deep = (np.arange(60, dtype=np.uint16).reshape(5, 4, 3) * 1000).astype(np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), deep)
    loaded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert loaded.dtype == np.uint16
    converted = to_bgr_uint8(loaded)
    assert converted.dtype == np.uint8
    np.testing.assert_allclose(converted, deep / 257.0, atol=0.5)


@pytest.mark.needs_cuda
def test_tensor_letterbox_on_the_gpu_matches_cv2():
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    expected, _ = letterbox_image(image, (640, 640))
    out, _ = letterbox_tensor(torch.from_numpy(image).permute(2, 0, 1).cuda(), (640, 640))
    assert out.device.type == "cuda"
    diff = np.abs(out[0].permute(1, 2, 0).cpu().numpy().astype(np.int64) - expected)
    assert diff.max() <= MAX_GREY_DIFF
    assert (diff > 0).mean() <= MAX_DIFFERING_FRACTION
