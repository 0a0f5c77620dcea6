"""Configurations of every published RTMO variant, their keypoint sets and official checkpoints.

Naming: ``rtmo-{t,s,m,l}-{body7,coco,crowdpose}`` plus ``rtmo-l-body7-crowdpose`` (RTMO-l trained
on body7 and evaluated on CrowdPose's 14 keypoints). Short names pick the body7 model of a size
(``rtmo-s`` is ``rtmo-s-body7``; ``rtmo`` is ``rtmo-l-body7``, mmpose's alias), and
``rtmo-{s,m,l}-crowd`` is ``rtmo-{s,m,l}-crowdpose``. `VARIANTS` lists the full names.

>>> cfg = from_name("rtmo-s")
>>> cfg.name, cfg.input_size, cfg.num_keypoints
('rtmo-s-body7', (640, 640), 17)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

_BASE_URL = "https://download.openmmlab.com/mmpose/v1/projects/rtmo"

COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
CROWDPOSE_KEYPOINTS = (
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "top_head",
    "neck",
)

# Colours (RGB) as in mmpose's dataset metafiles: green for the left side, orange for the right,
# blue for the centre line and the head.
_GREEN, _ORANGE, _BLUE = (0, 255, 0), (255, 128, 0), (51, 153, 255)

COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
COCO_LIMB_COLORS = (
    (_GREEN,) * 2 + (_ORANGE,) * 2 + (_BLUE,) * 4 + (_GREEN, _ORANGE) * 2 + (_BLUE,) * 7
)
COCO_KEYPOINT_COLORS = (_BLUE,) * 5 + (_GREEN, _ORANGE) * 6

CROWDPOSE_SKELETON = (
    (10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (1, 3), (2, 4),
    (3, 5), (12, 13), (1, 13), (0, 13),
)  # fmt: skip
CROWDPOSE_LIMB_COLORS = (
    (_GREEN,) * 2 + (_ORANGE,) * 2 + (_BLUE,) * 4 + (_GREEN, _ORANGE) * 2 + (_BLUE,) * 3
)
CROWDPOSE_KEYPOINT_COLORS = (_BLUE,) * 5 + (_GREEN, _ORANGE) * 4 + (_GREEN,)

# Per-keypoint OKS sigmas of the dataset metafiles (the `head.loss_oks.sigmas` buffer).
COCO_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
    0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
CROWDPOSE_SIGMAS = (
    0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079,
    0.079,
)  # fmt: skip

# How mmpose 1.3.2 evaluates every RTMO variant: its configs' test_cfg (score_thr, nms_thr; the
# RTMOConfig defaults), every NMS survivor kept (max_det None), and
# val_evaluator = CocoMetric(score_mode='bbox', nms_mode='none') with CocoMetric's default
# keypoint_score_thr (used by score_mode 'bbox_keypoint' only).
# CocoMetric's score modes for a one-stage model: the box score, the mean keypoint score, the box
# score times the mean of the keypoint scores above keypoint_score_thr.
SCORE_MODES = ("bbox", "keypoint", "bbox_keypoint")
MMPOSE_EVAL_SETTINGS = {
    "score_thr": 0.1,
    "nms_thr": 0.65,
    "max_det": None,
    "score_mode": "bbox",
    "keypoint_score_thr": 0.2,
    "nms_mode": "none",
}


def flip_pairs_by_name(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Index pairs of keypoints that swap under a horizontal flip: "left_x" with "right_x"."""
    index = {name: i for i, name in enumerate(names)}
    return tuple(
        (i, index["right_" + name.removeprefix("left_")])
        for i, name in enumerate(names)
        if name.startswith("left_") and "right_" + name.removeprefix("left_") in index
    )


@dataclass(frozen=True)
class KeypointSet:
    """What a model's keypoints are: names, limbs (index pairs), OKS sigmas and the pairs that a
    horizontal flip swaps. Colours default to mmpose's scheme by the names' left/right prefix."""

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limb_colors: tuple[tuple[int, int, int], ...] = ()
    keypoint_colors: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        k = len(self.names)
        if k == 0 or len(set(self.names)) != k:
            raise ValueError(f"keypoint names must be non-empty and unique, got {self.names}")
        if len(self.sigmas) != k or not all(s > 0 for s in self.sigmas):
            raise ValueError(f"{k} keypoints need {k} OKS sigmas > 0, got {self.sigmas}")
        for what, pairs in (("skeleton", self.skeleton), ("flip_pairs", self.flip_pairs)):
            if any(not (0 <= a < k and 0 <= b < k) or a == b for a, b in pairs):
                raise ValueError(f"{what} must pair distinct indices in 0..{k - 1}, got {pairs}")
        if not self.keypoint_colors:
            object.__setattr__(self, "keypoint_colors", tuple(map(self._side_color, self.names)))
        if not self.limb_colors:
            limbs = tuple(self._limb_color(a, b) for a, b in self.skeleton)
            object.__setattr__(self, "limb_colors", limbs)

    @property
    def flip_indices(self) -> tuple[int, ...]:
        """Where each keypoint goes under a horizontal flip."""
        order = list(range(len(self.names)))
        for a, b in self.flip_pairs:
            order[a], order[b] = b, a
        return tuple(order)

    def as_dict(self) -> dict:
        """Plain lists and strings (what a checkpoint's `meta` stores)."""
        return {
            "names": list(self.names),
            "skeleton": [list(limb) for limb in self.skeleton],
            "sigmas": list(self.sigmas),
            "flip_pairs": [list(pair) for pair in self.flip_pairs],
        }

    @classmethod
    def from_dict(cls, data: dict) -> KeypointSet:
        return cls(
            names=tuple(data["names"]),
            skeleton=tuple(tuple(limb) for limb in data["skeleton"]),
            sigmas=tuple(float(s) for s in data["sigmas"]),
            flip_pairs=tuple(tuple(pair) for pair in data["flip_pairs"]),
        )

    @staticmethod
    def _side_color(name: str) -> tuple[int, int, int]:
        return _GREEN if name.startswith("left") else _ORANGE if name.startswith("right") else _BLUE

    def _limb_color(self, a: int, b: int) -> tuple[int, int, int]:
        sides = {self._side_color(self.names[a]), self._side_color(self.names[b])}
        return sides.pop() if len(sides) == 1 else _BLUE


COCO_KEYPOINT_SET = KeypointSet(
    COCO_KEYPOINTS,
    COCO_SKELETON,
    COCO_SIGMAS,
    flip_pairs_by_name(COCO_KEYPOINTS),
    COCO_LIMB_COLORS,
    COCO_KEYPOINT_COLORS,
)
CROWDPOSE_KEYPOINT_SET = KeypointSet(
    CROWDPOSE_KEYPOINTS,
    CROWDPOSE_SKELETON,
    CROWDPOSE_SIGMAS,
    flip_pairs_by_name(CROWDPOSE_KEYPOINTS),
    CROWDPOSE_LIMB_COLORS,
    CROWDPOSE_KEYPOINT_COLORS,
)

# (deepen, widen) per size, from the official configs.
_SIZE_FACTORS = {"t": (0.33, 0.375), "s": (0.33, 0.5), "m": (0.67, 0.75), "l": (1.0, 1.0)}


@dataclass(frozen=True)
class TrainStage:
    """What one stage of RTMO's training schedule sets in the objective (RTMO.md §1.4, §5).

    The `loss_*` fields are the weights of mmpose's losses of the same names. `overlaps_power`:
    the classification target of a positive is its OKS to this power. `proxy_target_cc`: the
    regression branch learns from the detached DCC keypoints (where they are closer to the ground
    truth) and the classification target becomes the OKS of the DCC keypoints. `use_aux_loss`
    adds `loss_bbox_aux`, an L1 loss on the raw box outputs.
    """

    loss_cls: float = 1.0
    loss_bbox: float = 5.0
    loss_oks: float = 30.0
    loss_vis: float = 1.0
    loss_mle: float = 1.0
    loss_bbox_aux: float = 1.0
    overlaps_power: float = 0.5
    proxy_target_cc: bool = False
    use_aux_loss: bool = False


@dataclass(frozen=True)
class AugmentSettings:
    """The random ranges of the stage-1/2 pipeline (mmpose's RTMO configs)."""

    mosaic_prob: float = 1.0
    shift: float = 0.1  # of the output size
    rotate: float = 10.0  # degrees
    scale: tuple[float, float] = (0.75, 1.0)  # of the region taken; < 1 zooms in
    hue: int = 5  # YOLOXHSVRandomAug's additive deltas (OpenCV's 0..180 hue)
    saturation: int = 30
    value: int = 30
    flip_prob: float = 0.5


@dataclass(frozen=True)
class TrainRecipe:
    """RTMO's training recipe (RTMO.md §1.4) with its epoch counts turned into fractions of the
    run, so that a run of any length keeps the official proportions.

    Taken as published: AdamW (weight decay 0.05, none on norms and biases, the neck's encoder at
    0.05 x the learning rate), gradients clipped at norm 0.1, a quadratic warm-up, the stage
    switches at 280/600 and 580/600, the augmentation ranges. Changed for short runs, each with
    its reason:
    - the warm-up lasts 5/600 of the run but at least 200 steps (at most a tenth of the run):
      from random weights, AdamW at full rate in the first steps drives the heads' BatchNorm
      statistics far off;
    - the learning rate scales with the square root of batch / 256, not linearly: at a batch of
      16 the linear rule gives 2.5e-4, which leaves a run of a few thousand steps far from
      converged; AdamW's update size does not grow with the batch the way SGD's does;
    - one cosine from the peak down to 5% (mmpose's eta_min) over the run after warm-up, instead
      of two cosines with a 2.5x restart at the switch;
    - the EMA averages over at most a tenth of the run (momentum >= 10 / steps): mmpose's 2e-4
      averages over 5000 steps, longer than a short run, and would keep the weights of its start;
    - Mosaic on half the stage-1/2 samples instead of all: a mosaic shows people at half their
      size, and on the procedural data most people are already small.
    """

    base_lr: float = 4e-3
    base_batch: int = 256
    weight_decay: float = 0.05
    encoder_lr_mult: float = 0.05
    clip_grad_norm: float = 0.1
    warmup_fraction: float = 5 / 600
    min_lr_ratio: float = 0.05
    ema_momentum: float = 2e-4
    ema_gamma: float = 2000.0
    augment: AugmentSettings = AugmentSettings(mosaic_prob=0.5)

    def learning_rate(self, batch_size: int) -> float:
        return self.base_lr * (batch_size / self.base_batch) ** 0.5


@dataclass(frozen=True)
class RTMOConfig:
    """One RTMO variant: architecture, keypoint set, input size and where its weights live.

    The channel counts follow from `deepen`/`widen` exactly as in mmpose's configs (RTMO.md §1.2).
    """

    name: str
    size: str  # "t", "s", "m" or "l"
    dataset: str  # "body7", "coco", "crowdpose" or "body7-crowdpose"
    input_size: tuple[int, int]  # (w, h) of the model input
    checkpoint_url: str
    onnx_url: str | None = None
    score_thr: float = 0.1
    nms_thr: float = 0.65
    bbox_padding: float = 1.25
    num_bins: tuple[int, int] = (192, 256)  # (x, y)
    dcc_temperature: float = 300.0
    # None: the dataset's own (COCO's 17 or CrowdPose's 14); set for models of other keypoints.
    custom_keypoints: KeypointSet | None = None

    @property
    def keypoints(self) -> KeypointSet:
        """The keypoint set the model predicts."""
        if self.custom_keypoints is not None:
            return self.custom_keypoints
        return CROWDPOSE_KEYPOINT_SET if self.crowdpose else COCO_KEYPOINT_SET

    def with_keypoints(self, keypoints: KeypointSet) -> RTMOConfig:
        """This variant predicting `keypoints` instead (a head of that K)."""
        standard = CROWDPOSE_KEYPOINT_SET if self.crowdpose else COCO_KEYPOINT_SET
        return replace(self, custom_keypoints=None if keypoints == standard else keypoints)

    @property
    def train_stages(self) -> tuple[TrainStage, TrainStage, TrainStage]:
        """Stages 1, 2, 3 of the official schedule (the configs' values and their mode-switch
        hooks): 1 before `stage_start_epochs[1]`; 2 after RTMOModeSwitchHook's epoch; 3 the last
        epochs, when YOLOXPoseModeSwitchHook turns on the auxiliary box loss."""
        # The MLE weight of the first stage is per model family; the switch sets 5.0 for all.
        if self.crowdpose:
            first = TrainStage(loss_mle=1e-3)
        else:
            first = TrainStage(loss_mle=1.0 if self.size in ("t", "s") else 1e-2)
        switched = replace(first, proxy_target_cc=True, loss_mle=5.0, loss_oks=10.0)
        if self.crowdpose or self.size in ("m", "l"):
            switched = replace(switched, overlaps_power=1.0, loss_cls=2.0)
        return first, switched, replace(switched, use_aux_loss=True)

    def train_stage(self, stage: int) -> TrainStage:
        """The objective's settings in stage 1, 2 or 3 (see `train_stages`)."""
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
        return self.train_stages[stage - 1]

    @property
    def train_recipe(self) -> TrainRecipe:
        return TrainRecipe()

    def stage_of_epoch(self, epoch: int, epochs: int) -> int:
        """The schedule stage (1, 2, 3) of epoch `epoch` (from 0) of a run of `epochs`, at the
        official proportions of `stage_start_epochs`, rounded to whole epochs; a run of 3 epochs
        or more has at least one epoch of each stage."""
        official = self.stage_start_epochs
        second = round(epochs * official[1] / self.max_epochs)
        last = max(round(epochs * (self.max_epochs - official[2]) / self.max_epochs), 1)
        if epochs >= 3:
            second = min(max(second, 1), epochs - 2)
        return 1 if epoch < second else 3 if epoch >= epochs - last else 2

    @property
    def max_epochs(self) -> int:
        return 700 if self.crowdpose else 600

    @property
    def stage_start_epochs(self) -> tuple[int, int, int]:
        """First epoch of stages 1, 2, 3: the mode switch at 280 (CrowdPose 350), the auxiliary
        loss for the last 20 (CrowdPose 30) epochs."""
        if self.crowdpose:
            return 0, 350, self.max_epochs - 30
        return 0, 280, self.max_epochs - 20

    @property
    def use_keypoints_for_center(self) -> bool:
        """SimOTA centres a ground truth on the mean of its visible keypoints instead of its box
        centre (only the t and s configs of COCO and body7 set it)."""
        return self.size in ("t", "s") and not self.crowdpose

    @property
    def deepen(self) -> float:
        return _SIZE_FACTORS[self.size][0]

    @property
    def widen(self) -> float:
        return _SIZE_FACTORS[self.size][1]

    @property
    def crowdpose(self) -> bool:
        return self.dataset.endswith("crowdpose")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints.names)

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return self.keypoints.names

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        """Limbs as pairs of keypoint indices."""
        return self.keypoints.skeleton

    @property
    def limb_colors(self) -> tuple[tuple[int, int, int], ...]:
        """RGB colour of each limb of `skeleton`."""
        return self.keypoints.limb_colors

    @property
    def keypoint_colors(self) -> tuple[tuple[int, int, int], ...]:
        """RGB colour of each keypoint."""
        return self.keypoints.keypoint_colors

    @property
    def sigmas(self) -> tuple[float, ...]:
        """OKS sigma of each keypoint."""
        return self.keypoints.sigmas

    @property
    def architecture(self) -> str:
        """The name shared by every variant with this exact state_dict layout (e.g. "rtmo-s")."""
        return f"rtmo-{self.size}-crowdpose" if self.crowdpose else f"rtmo-{self.size}"

    @property
    def checkpoint_filename(self) -> str:
        return self.checkpoint_url.rsplit("/", 1)[-1]

    # Channel counts (RTMO.md §1.2).
    @property
    def backbone_channels(self) -> tuple[int, int, int]:
        """Output channels of CSPDarknet at strides 8/16/32."""
        return tuple(int(c * self.widen) for c in (256, 512, 1024))

    @property
    def head_channels(self) -> int:
        """Half of the projector's output: the width of each of the cls and pose branches."""
        return int(256 * self.widen)

    @property
    def pose_channels(self) -> int:
        """Width of the grouped pose branch: 8 groups of int(36 * widen)."""
        return 8 * int(36 * self.widen)

    @property
    def pose_vec_channels(self) -> int:
        return 2 * self.head_channels


def _variant(size: str, dataset: str, ckpt: str, onnx: bool = False) -> RTMOConfig:
    side = 416 if size == "t" else 640
    name = f"rtmo-{size}-{dataset}"
    onnx_url = f"{_BASE_URL}/onnx_sdk/{ckpt.removesuffix('.pth')}.zip" if onnx else None
    return RTMOConfig(name, size, dataset, (side, side), f"{_BASE_URL}/{ckpt}", onnx_url)


_L_BODY7_CROWDPOSE = "rtmo-l_16xb16-700e_body7-crowdpose-640x640-5bafdc11_20231219.pth"
VARIANTS: dict[str, RTMOConfig] = {
    c.name: c
    for c in (
        _variant("t", "body7", "rtmo-t_8xb32-600e_body7-416x416-f48f75cb_20231219.pth", True),
        _variant("s", "body7", "rtmo-s_8xb32-600e_body7-640x640-dac2bf74_20231211.pth", True),
        _variant("m", "body7", "rtmo-m_16xb16-600e_body7-640x640-39e78cc4_20231211.pth", True),
        _variant("l", "body7", "rtmo-l_16xb16-600e_body7-640x640-b37118ce_20231211.pth", True),
        _variant("s", "coco", "rtmo-s_8xb32-600e_coco-640x640-8db55a59_20231211.pth"),
        _variant("m", "coco", "rtmo-m_16xb16-600e_coco-640x640-6f4e0306_20231211.pth"),
        _variant("l", "coco", "rtmo-l_16xb16-600e_coco-640x640-516a421f_20231211.pth"),
        _variant("s", "crowdpose", "rtmo-s_8xb32-700e_crowdpose-640x640-79f81c0d_20231211.pth"),
        # The published file name really starts with "rrtmo".
        _variant("m", "crowdpose", "rrtmo-m_16xb16-700e_crowdpose-640x640-0eaf670d_20231211.pth"),
        _variant("l", "crowdpose", "rtmo-l_16xb16-700e_crowdpose-640x640-1008211f_20231211.pth"),
        _variant("l", "body7-crowdpose", _L_BODY7_CROWDPOSE),
    )
}

_ALIASES = {
    "rtmo": "rtmo-l-body7",
    **{f"rtmo-{s}": f"rtmo-{s}-body7" for s in "tsml"},
    **{f"rtmo-{s}-crowd": f"rtmo-{s}-crowdpose" for s in "sml"},
}


def aliases_of(name: str) -> list[str]:
    """The short names of a full variant name ("rtmo-s-body7" -> ["rtmo-s"])."""
    return [alias for alias, full in _ALIASES.items() if full == name]


def from_name(name: str) -> RTMOConfig:
    """The config of a variant by full name (see `VARIANTS`) or alias ("rtmo-s", "rtmo-l-crowd")."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in VARIANTS:
        known = ", ".join([*VARIANTS, *_ALIASES])
        raise ValueError(f"unknown RTMO variant {name!r}; known names: {known}")
    return VARIANTS[key]


def download_checkpoint(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Downloads the official checkpoint of a variant (once) and returns its path.

    The file goes to `directory`, default ``$RTMO_HOME`` or ``~/.cache/rtmo``. A failed download
    (offline, HTTP error) raises OSError naming the URL and leaves no partial file.
    """
    import urllib.request  # not at module level: it costs the command line's start-up

    cfg = from_name(name)
    root = Path(directory or os.environ.get("RTMO_HOME", Path.home() / ".cache" / "rtmo"))
    path = root / cfg.checkpoint_filename
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        try:
            urllib.request.urlretrieve(cfg.checkpoint_url, partial)
        except OSError as err:  # URLError and HTTPError are OSErrors
            partial.unlink(missing_ok=True)
            reason = getattr(err, "reason", None) or err
            raise OSError(
                f"cannot download the {cfg.name} checkpoint from {cfg.checkpoint_url} ({reason}); "
                f"download it by other means and pass the file's path"
            ) from err
        partial.replace(path)
    return path
