"""COCO-format keypoint datasets for training: the annotation file checked entry by entry, its
keypoint set (names, skeleton, flip pairs, OKS sigmas) and one `Sample` per image.

A `Sample` holds a BGR uint8 image and its people as arrays: `boxes` (n, 4) xyxy, `keypoints`
(n, K, 2), `visible` (n, K) (COCO's v of 1 or 2 is 1, as mmpose reads it) and `areas` (n,), all in
that image's pixels. Crowd annotations and people without labelled keypoints are left out of the
targets, as mmpose's FilterAnnotations(by_kpt=True) leaves them out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtmo.config import COCO_KEYPOINTS, COCO_SIGMAS, KeypointSet, flip_pairs_by_name

# How many missing files an error lists before "... and N more".
_LISTED = 5


class DatasetError(ValueError):
    """An annotation file or image folder that cannot be trained on; the message names the file
    and the entry."""


@dataclass
class Sample:
    """One image and its people (see the module doc)."""

    image: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, keep: np.ndarray) -> Sample:
        """The same image with the people where `keep` (n,) is True."""
        return Sample(
            self.image, self.boxes[keep], self.keypoints[keep], self.visible[keep], self.areas[keep]
        )


@dataclass(frozen=True)
class _Entry:
    file: Path
    image_id: int
    boxes: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    areas: np.ndarray


class KeypointDataset:
    """A COCO keypoint annotation file and its image folder, checked when constructed.

    `sigmas` gives the OKS sigmas where the category has none (COCO's own 17 keypoints default to
    COCO's sigmas). Raises DatasetError naming the file and entry for anything that is not COCO,
    keypoint counts that disagree with the category, image files that do not exist, or a dataset
    with no image.
    """

    def __init__(
        self,
        annotations: str | os.PathLike,
        images: str | os.PathLike,
        sigmas: tuple[float, ...] | None = None,
    ) -> None:
        self.annotations = Path(annotations)
        self.images = Path(images)
        data = _read_json(self.annotations)
        self.keypoints = _keypoint_set(self.annotations, data, sigmas)
        self._entries = _entries(self.annotations, self.images, data, len(self.keypoints.names))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def num_people(self) -> int:
        return sum(len(e.boxes) for e in self._entries)

    def load(self, index: int) -> Sample | None:
        """The image `index` and its people; None when the image file cannot be decoded (the
        caller skips and counts it)."""
        entry = self._entries[index]
        image = cv2.imread(str(entry.file), cv2.IMREAD_COLOR)
        if image is None:
            return None
        return Sample(
            image,
            entry.boxes.copy(),
            entry.keypoints.copy(),
            entry.visible.copy(),
            entry.areas.copy(),
        )

    def describe(self, index: int) -> str:
        entry = self._entries[index]
        return f"{entry.file} (image id {entry.image_id})"


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path} is not a JSON file: {err}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} is not COCO: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path} is not COCO: it has no {key!r} list")
    return data


def _keypoint_set(path: Path, data: dict, sigmas: tuple[float, ...] | None) -> KeypointSet:
    """The keypoint set of the file's one category with keypoints."""
    with_keypoints = [c for c in data["categories"] if isinstance(c, dict) and c.get("keypoints")]
    if len(with_keypoints) != 1:
        raise DatasetError(
            f"{path}: expected exactly one category with a 'keypoints' list, found "
            f"{len(with_keypoints)}"
        )
    category = with_keypoints[0]
    names = tuple(str(n) for n in category["keypoints"])
    where = f"{path}: categories[{data['categories'].index(category)}]"
    try:
        skeleton = tuple((int(a) - 1, int(b) - 1) for a, b in category.get("skeleton", []))
    except (TypeError, ValueError):
        raise DatasetError(f"{where}['skeleton'] must be a list of 1-based index pairs") from None
    sigmas = sigmas or _category_sigmas(where, category, names)
    if len(sigmas) != len(names):
        raise DatasetError(f"{where}: {len(names)} keypoints but {len(sigmas)} OKS sigmas")
    try:
        return KeypointSet(names, skeleton, tuple(sigmas), flip_pairs_by_name(names))
    except ValueError as err:
        raise DatasetError(f"{where}: {err}") from None


def _category_sigmas(where: str, category: dict, names: tuple[str, ...]) -> tuple[float, ...]:
    if "sigmas" in category:
        return tuple(float(s) for s in category["sigmas"])
    if names == COCO_KEYPOINTS:
        return COCO_SIGMAS
    raise DatasetError(
        f"{where} has keypoints {list(names)} but no 'sigmas': give the OKS sigma of each "
        "keypoint with --sigmas"
    )


def _entries(path: Path, folder: Path, data: dict, k: int) -> list[_Entry]:
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist")
    people: dict[int, list[tuple[int, dict]]] = {}
    for i, ann in enumerate(data["annotations"]):
        image_id = _check_annotation(path, i, ann, k)
        if image_id is not None:
            people.setdefault(image_id, []).append((i, ann))
    entries, missing = [], []
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DatasetError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        file = folder / str(image["file_name"])
        if not file.is_file():
            missing.append(f"images[{i}] {file}")
            continue
        entries.append(_entry(file, int(image["id"]), people.get(image["id"], []), k))
    if missing:
        more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
        raise DatasetError(
            f"{path}: {len(missing)} image files do not exist: {', '.join(missing[:_LISTED])}{more}"
        )
    if not entries:
        raise DatasetError(f"{path} holds no image: nothing to train on")
    return entries


def _check_annotation(path: Path, i: int, ann: object, k: int) -> int | None:
    """The image id of a usable person annotation, None for a crowd or unlabelled one."""
    where = f"{path}: annotations[{i}]"
    if not isinstance(ann, dict) or "image_id" not in ann:
        raise DatasetError(f"{where} needs an 'image_id'")
    values = ann.get("keypoints")
    if not isinstance(values, list) or len(values) != 3 * k:
        count = len(values) if isinstance(values, list) else "no"
        raise DatasetError(
            f"{where} (id {ann.get('id')}) has {count} keypoint values; the category has {k} "
            f"keypoints, so expected {3 * k} (x, y, v each)"
        )
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise DatasetError(f"{where} (id {ann.get('id')}) needs a 'bbox' [x, y, w, h]")
    values = np.asarray(values + bbox + [ann.get("area", 0.0)], dtype=np.float64)
    if not np.isfinite(values).all() or min(bbox[2:]) < 0 or values[-1] < 0:
        raise DatasetError(f"{where} (id {ann.get('id')}) has NaN or negative values")
    labelled = (np.asarray(ann["keypoints"][2::3]) > 0).any()
    return None if ann.get("iscrowd", 0) or not labelled else ann["image_id"]


def _entry(file: Path, image_id: int, people: list[tuple[int, dict]], k: int) -> _Entry:
    n = len(people)
    keypoints = np.zeros((n, k, 3), np.float32)
    boxes = np.zeros((n, 4), np.float32)
    areas = np.zeros(n, np.float32)
    for row, (_, ann) in enumerate(people):
        keypoints[row] = np.asarray(ann["keypoints"], np.float32).reshape(k, 3)
        x, y, w, h = ann["bbox"]
        boxes[row] = (x, y, x + w, y + h)
        # mmpose's fallback for a missing area (RTMO.md §5).
        areas[row] = ann.get("area") or 0.53 * w * h
    visible = np.minimum(keypoints[..., 2], 1.0)
    return _Entry(file, image_id, boxes, keypoints[..., :2] * visible[..., None], visible, areas)
