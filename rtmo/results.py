"""`Poses`: the people found in one image, in that image's pixels, as NumPy arrays."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# JSON keeps coordinates to 1/1000 pixel and scores to 1e-5: finer digits are float32 noise.
COORD_DECIMALS = 3
SCORE_DECIMALS = 5


@dataclass
class Poses:
    """People found in one image, sorted by decreasing score.

    boxes (float32[n, 4]): x1, y1, x2, y2 in original-image pixels.
    scores (float32[n]): person score (the classification score, as mmpose reports it).
    keypoints (float32[n, K, 2]): x, y in original-image pixels.
    keypoint_scores (float32[n, K]): visibility score of each keypoint, 0..1.
    image_size: (width, height) of the image the coordinates refer to.
    keypoint_names, skeleton, limb_colors, keypoint_colors: the keypoint layout, used by `plot`
        (limbs are pairs of keypoint indices; colours are RGB, as in the model config).
    speed: milliseconds per image spent in each stage ("preprocess", "inference", "postprocess").
    track_ids (int64[n] or None): the id of each person across the frames of a video, set by
        `RTMO.track` (None for untracked results).
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    image_size: tuple[int, int]
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    limb_colors: tuple[tuple[int, int, int], ...] = ()
    keypoint_colors: tuple[tuple[int, int, int], ...] = ()
    speed: dict[str, float] = field(default_factory=dict)
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        self.keypoint_scores = np.asarray(self.keypoint_scores, dtype=np.float32)
        n = self.boxes.shape[0]
        if self.keypoints.ndim != 3 or self.keypoints.shape[2] != 2:
            raise ValueError(f"keypoints must be (n, K, 2), got {self.keypoints.shape}")
        num_kpts = self.keypoints.shape[1]
        expected = {"scores": (n,), "keypoints": (n, num_kpts, 2), "keypoint_scores": (n, num_kpts)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"{name} must have shape {shape} to match boxes {self.boxes.shape}, "
                    f"got {getattr(self, name).shape}"
                )
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
            if self.track_ids.shape != (n,):
                raise ValueError(
                    f"track_ids must have shape {(n,)} to match boxes {self.boxes.shape}, "
                    f"got {self.track_ids.shape}"
                )
        self._check_layout(num_kpts)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def _check_layout(self, num_kpts: int) -> None:
        if self.keypoint_names and len(self.keypoint_names) != num_kpts:
            raise ValueError(f"{len(self.keypoint_names)} keypoint names for {num_kpts} keypoints")
        if self.keypoint_colors and len(self.keypoint_colors) != num_kpts:
            raise ValueError(
                f"{len(self.keypoint_colors)} keypoint colours for {num_kpts} keypoints"
            )
        if self.limb_colors and len(self.limb_colors) != len(self.skeleton):
            raise ValueError(f"{len(self.limb_colors)} limb colours for {len(self.skeleton)} limbs")
        for limb in self.skeleton:
            if len(limb) != 2 or not all(0 <= k < num_kpts for k in limb):
                raise ValueError(f"limb {limb} must be two keypoint indices in [0, {num_kpts})")

    @classmethod
    def empty(cls, num_keypoints: int, image_size: tuple[int, int], **layout: Any) -> Poses:
        """No person: arrays of shapes (0, 4), (0,), (0, K, 2), (0, K)."""
        return cls(
            np.zeros((0, 4)),
            np.zeros((0,)),
            np.zeros((0, num_keypoints, 2)),
            np.zeros((0, num_keypoints)),
            image_size,
            **layout,
        )

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Poses:
        """A subset of the people (an int keeps the person axis: poses[0] has length 1)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Poses(
            self.boxes[index],
            self.scores[index],
            self.keypoints[index],
            self.keypoint_scores[index],
            self.image_size,
            self.keypoint_names,
            self.skeleton,
            self.limb_colors,
            self.keypoint_colors,
            dict(self.speed),
            None if self.track_ids is None else self.track_ids[index],
        )

    def __repr__(self) -> str:
        return (
            f"Poses({len(self)} people, {self.num_keypoints} keypoints, "
            f"image {self.image_size[0]}x{self.image_size[1]})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: image width/height and one entry per person with its bbox [x1, y1,
        x2, y2], score, keypoints [[x, y], ...] and keypoint_scores [...] (and track_id first,
        when tracked)."""
        people = []
        for i in range(len(self)):
            tracked = {} if self.track_ids is None else {"track_id": int(self.track_ids[i])}
            people.append(
                {
                    **tracked,
                    "bbox": np.round(self.boxes[i].astype(float), COORD_DECIMALS).tolist(),
                    "score": round(float(self.scores[i]), SCORE_DECIMALS),
                    "keypoints": np.round(self.keypoints[i].astype(float), COORD_DECIMALS).tolist(),
                    "keypoint_scores": np.round(
                        self.keypoint_scores[i].astype(float), SCORE_DECIMALS
                    ).tolist(),
                }
            )
        return {"width": self.image_size[0], "height": self.image_size[1], "people": people}

    def csv_columns(self) -> list[str]:
        """Column names of `to_rows`: person, track_id (when tracked), score, x1, y1, x2, y2, then
        NAME_x, NAME_y, NAME_score per keypoint."""
        names = self.keypoint_names or tuple(f"keypoint{k}" for k in range(self.num_keypoints))
        columns = ["person", *(["track_id"] if self.track_ids is not None else [])]
        columns += ["score", "x1", "y1", "x2", "y2"]
        return columns + [f"{name}_{part}" for name in names for part in ("x", "y", "score")]

    def to_rows(self) -> list[list[float | int]]:
        """One row per person, keypoints flattened (columns of `csv_columns`; the precision of
        `to_dict`)."""
        rows = []
        for i in range(len(self)):
            row: list[float | int] = [i]
            if self.track_ids is not None:
                row.append(int(self.track_ids[i]))
            row.append(round(float(self.scores[i]), SCORE_DECIMALS))
            row += np.round(self.boxes[i].astype(float), COORD_DECIMALS).tolist()
            keypoints = np.round(self.keypoints[i].astype(float), COORD_DECIMALS)
            scores = np.round(self.keypoint_scores[i].astype(float), SCORE_DECIMALS)
            for (x, y), score in zip(keypoints.tolist(), scores.tolist(), strict=True):
                row += [x, y, score]
            rows.append(row)
        return rows

    def crop(self, image: np.ndarray, index: int) -> np.ndarray:
        """The part of `image` (H, W[, C]) inside person `index`'s box, clipped to the image
        (a view; empty when the box lies outside)."""
        height, width = image.shape[:2]
        box = np.nan_to_num(self.boxes[index].astype(np.float64))
        x1, x2 = (int(np.clip(round(v), 0, width)) for v in box[0::2])
        y1, y2 = (int(np.clip(round(v), 0, height)) for v in box[1::2])
        return image[y1 : max(y1, y2), x1 : max(x1, x2)]

    def to_json(self, **kwargs: Any) -> str:
        """`to_dict()` as a JSON string; keyword arguments go to `json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)

    def plot(self, image: Any, kpt_thr: float = 0.3, *, rgb: bool = False, **style: Any) -> Any:
        """A copy of `image` with boxes, scores, keypoints and limbs drawn, in the image's form.

        image: the image the poses were found in, as
          - a path: read with OpenCV; returns a BGR uint8 array;
          - a numpy array (H, W[, C]) uint8/uint16, BGR as OpenCV gives it; with `rgb=True` an RGB
            array (PIL, matplotlib, imageio), and the result is RGB too;
          - a PIL image: returns a PIL image (RGB).
        Keypoints with a score below `kpt_thr` and limbs touching them are not drawn. `style`
        goes to `rtmo.visualize.draw_poses` (e.g. `draw_boxes=False`).
        """
        import os
        import sys

        import cv2

        from rtmo.preprocess import pil_to_bgr
        from rtmo.sources import read_image
        from rtmo.visualize import draw_poses

        if isinstance(image, (str, os.PathLike)):
            return draw_poses(read_image(image), self, kpt_thr=kpt_thr, **style)
        bgr = pil_to_bgr(image)
        if bgr is not None:
            drawn = draw_poses(bgr, self, kpt_thr=kpt_thr, **style)
            pil = sys.modules["PIL.Image"]  # loaded: `image` is one of its images
            return pil.fromarray(cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB))
        if rgb:
            drawn = draw_poses(_rgb_to_bgr(image), self, kpt_thr=kpt_thr, **style)
            return cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB)
        return draw_poses(image, self, kpt_thr=kpt_thr, **style)


def _rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """An RGB(A) or grey array with its colour channels swapped to BGR(A) (grey stays grey)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2)
    return array
