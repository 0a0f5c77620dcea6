"""Drawing of `Poses` on an image: coloured limbs, keypoints, boxes with their scores.

Line width, keypoint radius and font scale follow the image size so that a 160-pixel thumbnail and
a 4K frame are both readable.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import cv2
import numpy as np

from rtmo.preprocess import to_bgr_uint8

if TYPE_CHECKING:
    from rtmo.results import Poses

# Colours here are BGR, as OpenCV draws; the layout's colours in `Poses` are RGB.
BOX_COLOR = (0, 200, 0)  # green
TEXT_COLOR = (255, 255, 255)
KEYPOINT_COLOR = (0, 220, 255)  # amber, for a layout without keypoint colours
LIMB_COLOR = (255, 128, 0)  # blue, for a layout without limb colours
OUTLINE_COLOR = (0, 0, 0)
# Tracked people: a colour per id, hues a golden angle apart (neighbouring ids differ most).
_GOLDEN_ANGLE = 137.508
# Coordinates are clipped to this many pixels so that a wild keypoint cannot overflow cv2's int32.
MAX_COORD = 1 << 20
# One unit of line width per 400 pixels of the longer side: 1 px below 600, 2 px at 640, 10 px at
# 3840 (chosen by eye on 128- to 3840-pixel images).
PIXELS_PER_LINE_WIDTH = 400


def drawing_scale(image_size: tuple[int, int]) -> tuple[int, int, float]:
    """(line width, keypoint radius, font scale) for an image of (width, height)."""
    longest = max(image_size)
    line = max(1, round(longest / PIXELS_PER_LINE_WIDTH))
    radius = line + 2
    font_scale = max(0.35, longest / 1300)
    return line, radius, font_scale


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = (int(c) for c in rgb)
    return blue, green, red


def track_color(track_id: int) -> tuple[int, int, int]:
    """The BGR colour of a track id: the same in every frame, distinct for neighbouring ids."""
    hue = int((track_id * _GOLDEN_ANGLE) % 360) // 2  # OpenCV's hue is 0..179
    pixel = np.array([[[hue, 220, 230]]], np.uint8)
    blue, green, red = cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0]
    return int(blue), int(green), int(red)


def _label(
    canvas: np.ndarray,
    text: str,
    corner: tuple[int, int],
    font_scale: float,
    color: tuple[int, int, int] = BOX_COLOR,
) -> None:
    """Text on a filled box just above `corner` (inside the image when the box is at the top)."""
    thickness = max(1, round(font_scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    x, y = corner
    y = max(y, th + base)
    cv2.rectangle(canvas, (x, y - th - base), (x + tw, y), color, -1)
    cv2.putText(
        canvas,
        text,
        (x, y - base),
        cv2.FONT_HERSHEY_SIMPLEX,
        font_scale,
        TEXT_COLOR,
        thickness,
        cv2.LINE_AA,
    )


def draw_poses(
    image: np.ndarray,
    poses: Poses,
    kpt_thr: float = 0.3,
    draw_boxes: bool = True,
    draw_scores: bool = True,
) -> np.ndarray:
    """A BGR uint8 copy of `image` (H, W[, C], uint8 or uint16) with `poses` drawn on it.

    Limbs are drawn only when both ends score at least `kpt_thr`; keypoints likewise. Tracked
    people (`poses.track_ids`) get their id's colour and "#id" before the score.
    """
    canvas = to_bgr_uint8(np.asarray(image)).copy()
    height, width = canvas.shape[:2]
    if (width, height) != poses.image_size:
        raise ValueError(
            f"poses are for a {poses.image_size[0]}x{poses.image_size[1]} image, "
            f"got an image of {width}x{height}"
        )
    line, radius, font_scale = drawing_scale((width, height))
    limb_colors = [_bgr(c) for c in poses.limb_colors] or [LIMB_COLOR] * len(poses.skeleton)
    kpt_colors = [_bgr(c) for c in poses.keypoint_colors] or [KEYPOINT_COLOR] * poses.num_keypoints
    for i in range(len(poses)):
        if draw_boxes and np.isfinite(poses.boxes[i]).all():
            x1, y1, x2, y2 = np.clip(poses.boxes[i], -MAX_COORD, MAX_COORD).round().astype(int)
            tracked = poses.track_ids is not None
            color = track_color(int(poses.track_ids[i])) if tracked else BOX_COLOR
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, line, cv2.LINE_AA)
            if draw_scores:
                corner = (min(max(int(x1), 0), width - 1), min(max(int(y1), 0), height - 1))
                text = f"{poses.scores[i]:.2f}"
                text = f"#{poses.track_ids[i]} {text}" if tracked else text
                _label(canvas, text, corner, font_scale, color)
        finite = np.isfinite(poses.keypoints[i]).all(axis=1)
        points = np.clip(np.nan_to_num(poses.keypoints[i]), -MAX_COORD, MAX_COORD)
        points = points.round().astype(np.int64)
        visible = finite & (poses.keypoint_scores[i] >= kpt_thr)
        for (a, b), color in zip(poses.skeleton, limb_colors, strict=True):
            if visible[a] and visible[b]:
                pa, pb = tuple(points[a].tolist()), tuple(points[b].tolist())
                cv2.line(canvas, pa, pb, color, line + 1, cv2.LINE_AA)
        for k in np.flatnonzero(visible):
            center = tuple(points[k].tolist())
            cv2.circle(canvas, center, radius, OUTLINE_COLOR, -1, cv2.LINE_AA)
            cv2.circle(canvas, center, max(1, radius - 1), kpt_colors[k], -1, cv2.LINE_AA)
    return canvas


class PreviewWindow:
    """An OpenCV window that shows frames as they are processed (`rtmo predict --show`).

    `PreviewWindow.open(title)` returns the window, or the reason there can be none: no display
    (checked first: a GUI build of OpenCV aborts the process when it finds no display), or an
    OpenCV built without a GUI (opencv-python-headless, which `make` installs).
    """

    def __init__(self, title: str) -> None:
        self.title = title

    @classmethod
    def open(cls, title: str = "rtmo") -> PreviewWindow | str:
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            return "this OpenCV build has no GUI support (opencv-python-headless)"
        return cls(title)

    def show(self, image: np.ndarray) -> bool:
        """Shows `image`; False once the user pressed q or Esc, or closed the window."""
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        return not closed and key not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyWindow(self.title)
