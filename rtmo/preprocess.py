"""Test-time pre-processing of mmpose's `BottomupResize` and the mapping of predictions back.

An image of size (W, H) is scaled with its aspect ratio kept so that it fits the model input
(w, h), placed at the centre of a canvas filled with 114, in BGR 0..255. The affine matrix is built
exactly as mmpose builds it (three float32 point pairs through `cv2.getAffineTransform`) and the
image is warped with `cv2.warpAffine(INTER_LINEAR)`, so a NumPy image gives the very input mmpose
gives. Predictions in model-input pixels go back to the image with mmpose's formula
`p / input_size * scale + center - scale / 2`.

Tensors are letterboxed where they are (GPU tensors on the GPU) by `letterbox_tensor`, which
reproduces OpenCV's (>= 4.11) float bilinear warp: on random uint8 noise at most 0.2% of the values
differ from `cv2.warpAffine`, by one grey level (tests/test_preprocess.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2
import numpy as np
import torch

PAD_VALUE = 114
SIZE_FACTOR = 32  # BottomupResize(size_factor=32): the input must be a multiple of it


@dataclass(frozen=True)
class Letterbox:
    """Where an image of `image_size` (W, H) sits in a model input of `input_size` (w, h).

    `center` and `scale` are mmpose's `input_center` / `input_scale` (float32, as mmpose keeps
    them): the image point `center` lands on the input's centre and an image extent of `scale`
    covers the whole input.
    """

    image_size: tuple[int, int]
    input_size: tuple[int, int]
    center: np.ndarray
    scale: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        """The (2, 3) float64 affine matrix from image pixels to input pixels."""
        return _warp_matrix(self.center, self.scale, self.input_size)

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) -> model-input pixels (..., 2), float64, by the warp matrix."""
        pts = np.asarray(points, dtype=np.float64)
        m = self.matrix
        return pts @ m[:, :2].T + m[:, 2]

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Model-input pixels (..., 2) -> image pixels (..., 2), float64 (mmpose's inverse)."""
        pts = np.asarray(points, dtype=np.float64)
        size = np.asarray(self.input_size, dtype=np.float64)
        scale = self.scale.astype(np.float64)
        return pts / size * scale + self.center.astype(np.float64) - 0.5 * scale

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes (n, 4) in model-input pixels -> (n, 4) float64 in image pixels."""
        corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
        return self.to_original(corners).reshape(-1, 4)


def letterbox_params(image_size: tuple[int, int], input_size: tuple[int, int]) -> Letterbox:
    """The placement of a (W, H) image in a (w, h) input (BottomupResize, resize_mode='fit')."""
    img_w, img_h = (int(v) for v in image_size)
    in_w, in_h = (int(v) for v in input_size)
    if img_w < 1 or img_h < 1:
        raise ValueError(f"image size must be at least 1x1 pixel, got {img_w}x{img_h} (WxH)")
    if in_w % SIZE_FACTOR or in_h % SIZE_FACTOR or in_w < 1 or in_h < 1:
        raise ValueError(
            f"input size must be positive multiples of {SIZE_FACTOR}, got {in_w}x{in_h} (wxh)"
        )
    ratio = img_w / img_h
    rsz_w = min(in_w, in_h * ratio)
    rsz_h = min(in_h, in_w / ratio)
    center = np.array([img_w / 2, img_h / 2], dtype=np.float32)
    scale = np.array([img_w * in_w / rsz_w, img_h * in_h / rsz_h], dtype=np.float32)
    return Letterbox((img_w, img_h), (in_w, in_h), center, scale)


def _warp_matrix(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """mmpose's get_warp_matrix for rot=0, shift=0, fixed aspect ratio: three float32 point pairs
    (centre, centre - half width, and the second point turned 90 degrees about it) solved by
    cv2.getAffineTransform, so the matrix is bit-identical to mmpose's."""
    out_w, out_h = output_size
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([scale[0] * -0.5, 0.0])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([out_w * -0.5, 0.0])
    for pts in (src, dst):
        direction = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-direction[1], direction[0]])
    return cv2.getAffineTransform(src, dst)


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded image as HxWx3 BGR uint8: grayscale is repeated, the alpha channel of BGRA is
    dropped (as cv2.IMREAD_COLOR does), 16-bit values are scaled by 255/65535.

    image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or uint16.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise TypeError(
            f"image must be uint8 or uint16, got {image.dtype}; scale float images to 0..255 "
            "and convert them with .astype(np.uint8)"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(
        f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}"
    )


def pil_to_bgr(image: object) -> np.ndarray | None:
    """A PIL image as HxWx3 BGR uint8 (converted from its mode: RGB, L, RGBA, P, 16-bit, ...), or
    None when `image` is not a PIL image. PIL is not imported: an object can only be a PIL image
    if PIL.Image is loaded already."""
    pil = sys.modules.get("PIL.Image")
    if pil is None or not isinstance(image, pil.Image):
        return None
    if image.mode.startswith("I;16"):  # 16-bit grey: scaled like 16-bit arrays, not clipped
        return to_bgr_uint8(np.asarray(image).astype(np.uint16))
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)


def letterbox_image(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """BottomupResize of one BGR image (H, W, 3) -> the (h, w, 3) input and its placement."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) BGR, got shape {image.shape}")
    height, width = image.shape[:2]
    box = letterbox_params((width, height), input_size)
    warped = cv2.warpAffine(
        image,
        box.matrix,
        box.input_size,
        flags=cv2.INTER_LINEAR,
        borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    return warped, box


def _source_taps(
    inv: np.ndarray, count: int, src_len: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of `count` output pixels along one axis: the two source indices into the image
    padded by one border pixel on each side, and the weight of the second one.

    `inv` = (a, b): source coordinate = a * i + b, computed in float32 as OpenCV does. A source
    index outside the image reads the border pixel, so taps wholly outside give PAD_VALUE and taps
    straddling the edge blend the edge pixel with PAD_VALUE, as BORDER_CONSTANT does.
    """
    a, b = (torch.tensor(float(v), dtype=torch.float32, device=device) for v in inv)
    coord = a * torch.arange(count, dtype=torch.float32, device=device) + b
    first = torch.floor(coord)
    weight = coord - first
    first = first.to(torch.int64)
    border = src_len + 1  # index of the right/bottom border column/row in the padded image

    def padded(idx: torch.Tensor) -> torch.Tensor:
        inside = (idx >= 0) & (idx < src_len)
        return torch.where(inside, idx + 1, torch.where(idx < 0, 0, border))

    return padded(first), padded(first + 1), weight


def letterbox_tensor(
    images: torch.Tensor, input_size: tuple[int, int]
) -> tuple[torch.Tensor, Letterbox]:
    """BottomupResize of a batch of same-sized BGR images, on their own device.

    images: (B, 3, H, W) or (3, H, W), uint8 or floating, BGR 0..255.
    Returns the (B, 3, h, w) float32 input and the placement shared by the batch. uint8 images are
    rounded to whole grey levels as cv2.warpAffine does for uint8; floating images are not.
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be (B, 3, H, W) or (3, H, W) BGR, got shape {tuple(images.shape)}"
        )
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    height, width = images.shape[-2:]
    box = letterbox_params((width, height), input_size)
    inv = cv2.invertAffineTransform(box.matrix)  # the warp is axis-aligned: inv[0,1] = inv[1,0] = 0
    in_w, in_h = box.input_size
    x0, x1, wx = _source_taps((inv[0, 0], inv[0, 2]), in_w, width, images.device)
    y0, y1, wy = _source_taps((inv[1, 1], inv[1, 2]), in_h, height, images.device)

    padded = torch.nn.functional.pad(images.to(torch.float32), (1, 1, 1, 1), value=PAD_VALUE)
    top, bottom = padded[:, :, y0], padded[:, :, y1]
    wx, wy = wx.view(1, 1, 1, -1), wy.view(1, 1, -1, 1)
    rows_top = top[..., x0] * (1 - wx) + top[..., x1] * wx
    rows_bottom = bottom[..., x0] * (1 - wx) + bottom[..., x1] * wx
    out = rows_top * (1 - wy) + rows_bottom * wy
    if images.dtype == torch.uint8:
        out = out.round_().clamp_(0, 255)
    return out, box
