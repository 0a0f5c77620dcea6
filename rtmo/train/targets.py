"""The ground truth of a training batch: one dict of tensors per image, checked and converted.

Each image's dict holds, in model-input pixels, for its n people (n = 0 is valid):

- `boxes` (n, 4): x1, y1, x2, y2 with x1 <= x2, y1 <= y2;
- `keypoints` (n, K, 2): x, y; unlabelled keypoints are (0, 0) with visibility 0;
- `keypoints_visible` (n, K): visibility in 0..1;
- `areas` (n,), optional: the COCO segment area, >= 0; default the box area;
- `keypoints_visible_weights` (n, K), optional: the weight of each keypoint in `loss_vis`, >= 0;
  default 1 (mmpose's KeypointConverter gives 0 to keypoints a source dataset does not define);
- `invalid_mask` (H, W), optional: 1 (or True) on regions holding people without annotations,
  0 elsewhere. Priors whose predicted pose lies there weigh less in `loss_cls` (mmpose's
  `BottomupGetHeatmapMask(get_invalid=True)`, in RTMO's last-epochs pipeline).

Keypoints may lie outside the image (COCO has such labelled keypoints). Anything else (a missing
key, a wrong shape, a K that is not the model's, NaN or infinite values, negative areas) raises a
ValueError or TypeError naming the image index, the field and the expected shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_REQUIRED = ("boxes", "keypoints", "keypoints_visible")
_OPTIONAL = ("areas", "keypoints_visible_weights", "invalid_mask")


@dataclass(frozen=True)
class GroundTruth:
    """One image's checked ground truth on the images' device, float32 (float64 with float64
    images); see the module doc."""

    boxes: Tensor
    keypoints: Tensor
    keypoints_visible: Tensor
    areas: Tensor
    keypoints_visible_weights: Tensor
    invalid_mask: Tensor | None = None

    def __len__(self) -> int:
        return self.boxes.shape[0]


def check_targets(targets: object, images: Tensor, num_keypoints: int) -> list[GroundTruth]:
    """Checks a batch's targets against `images` (B, 3, H, W) and a model with K keypoints."""
    if not isinstance(targets, Sequence) or isinstance(targets, (str, bytes)):
        kind = type(targets).__name__
        raise TypeError(f"targets must be a list of dicts, one per image, got {kind}")
    if len(targets) != images.shape[0]:
        raise ValueError(
            f"targets has {len(targets)} entries but images has {images.shape[0]}: "
            "one dict per image"
        )
    height, width = images.shape[-2:]
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    return [
        _check_image(i, t, num_keypoints, (height, width), images.device, dtype)
        for i, t in enumerate(targets)
    ]


def _check_image(
    index: int,
    target: object,
    k: int,
    size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> GroundTruth:
    where = f"targets[{index}]"
    if not isinstance(target, Mapping):
        raise TypeError(f"{where} must be a dict of tensors, got {type(target).__name__}")
    missing = [key for key in _REQUIRED if key not in target]
    unknown = [key for key in target if key not in _REQUIRED + _OPTIONAL]
    if missing or unknown:
        raise ValueError(
            f"{where}: missing keys {missing}, unknown keys {unknown}; expected "
            f"{list(_REQUIRED)} and optionally {list(_OPTIONAL)}"
        )
    fields = {key: _as_float(where, key, value, device, dtype) for key, value in target.items()}
    n = fields["boxes"].shape[0] if fields["boxes"].dim() == 2 else -1
    expected = {
        "boxes": (n, 4),
        "keypoints": (n, k, 2),
        "keypoints_visible": (n, k),
        "areas": (n,),
        "keypoints_visible_weights": (n, k),
        "invalid_mask": size,
    }
    for key, value in fields.items():
        _check_shape(where, key, value, expected[key], k)
        if not torch.isfinite(value).all():
            raise ValueError(
                f"{where}[{key!r}] holds NaN or infinite values; expected finite values of "
                f"shape {_shape_text(expected[key])}"
            )
    boxes = fields["boxes"]
    if (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError(f"{where}['boxes'] has x2 < x1 or y2 < y1; expected xyxy, shape (n, 4)")
    _check_range(where, "keypoints_visible", fields["keypoints_visible"], (n, k), 1.0)
    for key in ("areas", "keypoints_visible_weights", "invalid_mask"):
        if key in fields:
            _check_range(where, key, fields[key], expected[key], None)
    box_areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return GroundTruth(
        boxes=boxes,
        keypoints=fields["keypoints"],
        keypoints_visible=fields["keypoints_visible"],
        areas=fields.get("areas", box_areas),
        keypoints_visible_weights=fields.get(
            "keypoints_visible_weights", torch.ones_like(fields["keypoints_visible"])
        ),
        invalid_mask=fields.get("invalid_mask"),
    )


def _as_float(
    where: str, key: str, value: object, device: torch.device, dtype: torch.dtype
) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex():
        raise TypeError(f"{where}[{key!r}] must be real, got {value.dtype}")
    return value.detach().to(device=device, dtype=dtype)


def _shape_text(shape: tuple[int, ...]) -> str:
    """(n, 17, 2) with n spelt out when the boxes did not give it."""
    dims = ", ".join("n" if d < 0 else str(d) for d in shape)
    return f"({dims},)" if len(shape) == 1 else f"({dims})"


def _check_shape(where: str, key: str, value: Tensor, shape: tuple[int, ...], k: int) -> None:
    fits = value.dim() == len(shape) and all(
        d < 0 or d == v for d, v in zip(shape, value.shape, strict=True)
    )
    if fits:
        return
    n_note = "" if key == "invalid_mask" else " (n = the number of boxes)"
    message = (
        f"{where}[{key!r}] has shape {tuple(value.shape)}, expected {_shape_text(shape)}{n_note}"
    )
    if key in ("keypoints", "keypoints_visible", "keypoints_visible_weights") and (
        value.dim() >= 2 and value.shape[1] != k
    ):
        message += f": {value.shape[1]} keypoints but the model has {k}"
    raise ValueError(message)


def _check_range(
    where: str, key: str, value: Tensor, shape: tuple[int, ...], upper: float | None
) -> None:
    if (value < 0).any() or (upper is not None and (value > upper).any()):
        bounds = f"values in [0, {upper:g}]" if upper is not None else "values >= 0"
        raise ValueError(
            f"{where}[{key!r}] has values out of range; expected {bounds}, shape "
            f"{_shape_text(shape)}"
        )
