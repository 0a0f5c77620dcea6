"""Procedural people: a COCO-format keypoint dataset, and videos of the same people moving.

Every image shows articulated 2D figures with the 17 COCO keypoints: a head with face, hair and
ears, a torso, tapered limbs, hands and feet, posed from plausible joint-angle ranges (standing,
walking, arms raised, sitting, lying, crouching, free) and seen from any side. Figures are drawn
far to near over backgrounds of noise, gradients and photos that ship inside scikit-image and
matplotlib (none of them shows a person), with occluders (poles, boxes, bushes, boards, seats)
between them, then blurred, noised and JPEG-compressed. Scenes are a close group (1-6 people,
120-600 px tall), a street (4-15 people on a ground plane in perspective) or a crowd (15-30 people,
24-250 px tall, seen from above): heights span 24-600 px.

Layout of `synthesize_dataset(out, n, seed)` (`rtmo data synth --out OUT --images N --seed S`)::

    OUT/images/000001.jpg ...   JPEG, long side 480-800 px (around 640x480), aspect 3:4 to 16:9
    OUT/annotations.json        COCO keypoints; `file_name` is relative to OUT/images

Labels, per person (one COCO annotation each, ids from 1):

- `keypoints`: x, y in pixels where pixel centres sit at integer coordinates (OpenCV's and
  mmpose's convention), v = 2 visible; 1 inside the image but hidden, by a figure or occluder drawn
  later or by the person's own body (the far shoulder in profile, the face seen from behind); 0 when
  outside the image, and then x = y = 0 as COCO writes unlabelled points. A visible keypoint's
  pixel always shows the person's own limb (or head, for the face points).
- `bbox` [x, y, w, h]: the tight box of the whole rendered figure, hidden parts included, clipped
  to the image. Deliberately not the box of the visible pixels: every labelled keypoint (v > 0)
  then lies inside the box, which is what the decoder's box-relative bins need.
- `area`: the figure's visible pixel count (COCO's segmentation area; OKS uses it as the scale).
- `num_keypoints` (v > 0), `iscrowd` 0, `category_id` 1. People with no visible pixel are left out.
- People whose `area` is under 32² px (COCO's "small") carry their box and area but no keypoints
  (all (0, 0, 0), `num_keypoints` 0): COCO's keypoint evaluation has no small range and COCO
  labels keypoints on few such people; COCOeval ignores them and training leaves them out. Half
  the people of a typical image are this small; scoring their keypoints would make OKS decide
  on one-pixel errors (with perfect boxes, keypoints 1 px off score 0.60 AP).
- `categories[0]`: COCO's person with `keypoints` (names), `skeleton` (1-based, as COCO's files)
  and `sigmas` (COCO's OKS sigmas).

Left and right are learnable from the figure alone and survive a horizontal flip with the flip
pairs: the face (eyes, nose, skin) is drawn on the front of the head and hair on the back, feet
point forward, and the far side of the body is drawn darker and behind the near side. No colour is
tied to a side, which a flipped training image would contradict.

`synthesize_sequences(out, m, frames, seed)` (`rtmo data synth --motion --frames T --sequences M`)
writes OUT/seq_000.mp4 (MPEG-4 Part 2, fourcc mp4v: the encoder opencv-python-headless ships) and
OUT/seq_000.json per sequence: a fixed camera over a ground plane and static occluders, people
walking with a gait on smooth paths (turn rate limited), crossing each other, leaving the frame and
coming back, or standing. The json is COCO with one image per frame (`frame_index` from 0,
`video_id`, `video_name`, `file_name` the mp4) and a `videos` entry (fps, size, frames);
annotations carry the person's `track_id` (from 1, kept while the person is out of view).

Canonical sets (images depend only on (seed, index), so a longer set starts with a shorter one):

- training: `--images 4000 --seed 0` (TRAIN_SEED)
- validation, for benchmarks and the trained model: `--images 200 --seed 1` (VAL_SEED, VAL_IMAGES)
- tracking: `--motion --sequences 4 --frames 150 --seed 2` (SEQUENCE_SEED)

The validation set: 52 group, 94 street and 54 crowd scenes; 2055 people, 10.3 per image (1 to 30,
median 8); standing heights 27 / 47 / 89 / 166 / 368 px at the 5/25/50/75/95th percentiles; keypoint
visibility 0 / 1 / 2 for 11.4 / 29.1 / 59.5 % of keypoints; half the people are COCO-"small" (area
under 32^2) and 25 have no labelled keypoint. COCOeval's keypoint default of 20 detections per
image is below the 30 people of the largest crowds: evaluate with maxDets of 30 or more.

Deterministic: the same seed writes the same json bytes, and the same images for the same
versions of numpy, OpenCV and scikit-image. Speed: 40 images/s of CPU time (the 200 validation
images, JPEG encoding and writing included; ~25 ms per image, 14 ms per 640x480 video frame),
measured on a busy shared 2-core machine where the wall clock gave 10-17 images/s: a quiet machine
is needed for a wall-clock figure (benchmarks/test_bench_synthetic_data.py measures it).
"""

from __future__ import annotations

import colorsys
import contextlib
import importlib.util
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from rtmo.config import COCO_KEYPOINTS, COCO_SIGMAS, COCO_SKELETON

TRAIN_SEED, VAL_SEED, SEQUENCE_SEED = 0, 1, 2
VAL_IMAGES = 200
MIN_HEIGHT, MAX_HEIGHT = 24, 600  # standing height in pixels
FORMAT_VERSION = 1

NUM_KEYPOINTS = len(COCO_KEYPOINTS)
BACKGROUND, OCCLUDER = -1, -2  # values of the owner map that are not a person's index

# Points of the body model after the 17 keypoints.
(
    HEAD,
    NECK_BASE,
    NECK_TOP,
    L_HAND_TIP,
    R_HAND_TIP,
    L_TOE,
    R_TOE,
    HEAD_UP,
    HEAD_SIDE,
    HEAD_FRONT,
) = range(17, 27)
TORSO_HULL = slice(27, 35)  # 8 corners: shoulders and hips, front and back
NUM_POINTS = 35

# Drawn part ids (0 is empty). Keypoints are looked up in the part map to decide self-occlusion.
(TORSO, NECK, HAIR, FACE, EYE, NOSE, EAR, HAT, DRESS) = range(1, 10)
L_UPPER, R_UPPER, L_FORE, R_FORE, L_HAND, R_HAND = range(10, 16)
L_THIGH, R_THIGH, L_SHIN, R_SHIN, L_FOOT, R_FOOT = range(16, 22)
NUM_PART_IDS = 22
HEAD_PARTS = frozenset({HAIR, FACE, EYE, NOSE, EAR, HAT})

# The parts on which each keypoint may be seen, and for the surfaces among them (torso, dress,
# head) how far behind the surface's centre, in standing heights, the keypoint may lie and still
# be seen: the far shoulder of a figure turned more than ~50 degrees is hidden by its chest, a
# nose turned away by the back of the head.
_FACE_DEPTH_MARGIN = 0.008  # 0.15 of the head's half depth
_SHOULDER_DEPTH_MARGIN = 0.08  # 0.7 of half the shoulder width
_HIP_DEPTH_MARGIN = 0.05
_KEYPOINT_PARTS: tuple[frozenset[int], ...] = (
    *(HEAD_PARTS,) * 5,
    frozenset({TORSO, NECK, L_UPPER}),
    frozenset({TORSO, NECK, R_UPPER}),
    frozenset({L_UPPER, L_FORE}),
    frozenset({R_UPPER, R_FORE}),
    frozenset({L_FORE, L_HAND}),
    frozenset({R_FORE, R_HAND}),
    frozenset({TORSO, DRESS, L_THIGH}),
    frozenset({TORSO, DRESS, R_THIGH}),
    frozenset({L_THIGH, L_SHIN, DRESS}),
    frozenset({R_THIGH, R_SHIN, DRESS}),
    frozenset({L_SHIN, L_FOOT}),
    frozenset({R_SHIN, R_FOOT}),
)
_KEYPOINT_MARGINS = (
    (_FACE_DEPTH_MARGIN,) * 5
    + (_SHOULDER_DEPTH_MARGIN,) * 2
    + (math.inf,) * 4
    + (_HIP_DEPTH_MARGIN,) * 4
    + (math.inf,) * 2
)

# Backgrounds: photos that ship in the pinned packages, none showing a person (scikit-image's
# astronaut, camera and grace_hopper are left out: an unlabelled person would teach misses; page
# is left out because libpng prints a warning about its colour profile on every read).
_SKIMAGE_PHOTOS = (
    "brick.png", "chelsea.png", "chessboard_RGB.png", "coffee.png", "coins.png", "color.png",
    "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png",
    "moon.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg",
    "rocket.jpg", "text.png", "cell.png", "clock_motion.png",
)  # fmt: skip
_MATPLOTLIB_PHOTOS = ("Minduka_Present_Blue_Pack.png", "logo2.png")
_FLOOR_PHOTOS = ("brick.png", "grass.png", "gravel.png", "moon.png")


# ------------------------------------------------------------------------------------ body model


@dataclass(frozen=True)
class Body:
    """Proportions of one person in standing heights (sole to head top = 1); `girth` scales the
    thickness of limbs and torso (build and loose clothes)."""

    shoulder_half: float = 0.11
    hip_half: float = 0.065
    torso: float = 0.29  # pelvis centre to the shoulder line
    neck: float = 0.055
    head: tuple[float, float, float] = (0.047, 0.066, 0.056)  # half extents: side, up, front
    upper_arm: float = 0.186
    forearm: float = 0.146
    hand: float = 0.085
    thigh: float = 0.235
    shin: float = 0.245
    foot: float = 0.11
    chest_half_depth: float = 0.065
    pelvis_half_depth: float = 0.06
    girth: float = 1.0


# (start, end) radii of the tapered parts, in standing heights at girth 1.
_RADII = {
    "neck": (0.03, 0.03),
    "upper_arm": (0.036, 0.028),
    "forearm": (0.027, 0.02),
    "hand": (0.02, 0.014),
    "thigh": (0.058, 0.038),
    "shin": (0.038, 0.025),
    "foot": (0.022, 0.017),
}
_MIN_RADIUS_PX = 1.0  # every joint's cap covers at least its own pixel


def _cos_sin(deg: float) -> tuple[float, float]:
    return math.cos(math.radians(deg)), math.sin(math.radians(deg))


def _rot_x(deg: float) -> np.ndarray:
    c, s = _cos_sin(deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(deg: float) -> np.ndarray:
    c, s = _cos_sin(deg)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(deg: float) -> np.ndarray:
    c, s = _cos_sin(deg)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_DOWN = np.array([0.0, -1.0, 0.0])
_CORNERS = ((1, 1), (1, -1), (-1, 1), (-1, -1))  # (side, front) signs of the torso's corners


def _limb_frame(flex: float, abduct: float, twist: float, side: int) -> np.ndarray:
    """Orientation of an arm or leg: forward swing, then sideways outward (side +1 left, -1
    right), then twist about the limb; the limb points along frame @ down."""
    return _rot_x(-flex) @ _rot_z(side * abduct) @ _rot_y(side * twist)


def skeleton(pose: dict[str, float], body: Body) -> np.ndarray:
    """Body points (NUM_POINTS, 3) of a pose: x to the person's left, y up, z forward, in standing
    heights with the pelvis centre at the origin. Angles of `pose` are in degrees."""
    pts = np.zeros((NUM_POINTS, 3))
    torso = _rot_z(pose["torso_roll"]) @ _rot_x(pose["torso_pitch"]) @ _rot_y(pose["torso_twist"])
    neck_base = torso @ np.array([0.0, body.torso, 0.0])
    pts[NECK_BASE] = neck_base
    pts[NECK_TOP] = neck_base + torso @ np.array([0.0, body.neck, 0.01])
    head = torso @ _rot_y(pose["head_yaw"]) @ _rot_x(pose["head_pitch"])
    head = head @ _rot_z(pose["head_roll"])
    rx, ry, rz = body.head
    centre = pts[NECK_TOP] + head @ np.array([0.0, 0.9 * ry, 0.012])
    pts[HEAD] = centre
    pts[HEAD_SIDE], pts[HEAD_UP], pts[HEAD_FRONT] = centre + (head * np.array([rx, ry, rz])).T
    pts[0] = centre + head @ np.array([0.0, -0.3 * ry, 0.95 * rz])  # inside the head
    for side, eye, ear in ((1, 1, 3), (-1, 2, 4)):
        pts[eye] = centre + head @ np.array([side * 0.42 * rx, 0.12 * ry, 0.8 * rz])
        pts[ear] = centre + head @ np.array([side * 0.98 * rx, -0.02 * ry, -0.08 * rz])
    for side, prefix, (shoulder, elbow, wrist, hip, knee, ankle), hand, toe in (
        (1, "l_", (5, 7, 9, 11, 13, 15), L_HAND_TIP, L_TOE),
        (-1, "r_", (6, 8, 10, 12, 14, 16), R_HAND_TIP, R_TOE),
    ):
        pts[shoulder] = neck_base + torso @ np.array([side * body.shoulder_half, -0.015, 0.0])
        arm = torso @ _limb_frame(
            pose[prefix + "shoulder_flex"],
            pose[prefix + "shoulder_abduct"],
            pose[prefix + "arm_twist"],
            side,
        )
        pts[elbow] = pts[shoulder] + arm @ _DOWN * body.upper_arm
        fore = arm @ _rot_x(-pose[prefix + "elbow"]) @ _DOWN
        pts[wrist] = pts[elbow] + fore * body.forearm
        pts[hand] = pts[wrist] + fore * body.hand
        pts[hip] = np.array([side * body.hip_half, 0.0, 0.0])
        leg = _limb_frame(
            pose[prefix + "hip_flex"], pose[prefix + "hip_abduct"], pose[prefix + "leg_twist"], side
        )
        pts[knee] = pts[hip] + leg @ _DOWN * body.thigh
        shin = leg @ _rot_x(pose[prefix + "knee"])
        pts[ankle] = pts[knee] + shin @ _DOWN * body.shin
        pts[toe] = pts[ankle] + shin @ _rot_x(pose[prefix + "ankle"] - 90.0) @ _DOWN * body.foot
    wide = body.shoulder_half + 0.6 * _RADII["upper_arm"][0] * body.girth
    chest = body.chest_half_depth * body.girth
    hips = body.hip_half + 0.5 * _RADII["thigh"][0] * body.girth
    pelvis = body.pelvis_half_depth * body.girth
    corners = [neck_base + torso @ np.array([sx * wide, -0.02, sz * chest]) for sx, sz in _CORNERS]
    corners += [np.array([sx * hips, -0.03, sz * pelvis]) for sx, sz in _CORNERS]
    pts[TORSO_HULL] = corners
    return pts


# ----------------------------------------------------------------------------------------- poses

POSE_KINDS = ("standing", "walking", "arms_raised", "sitting", "lying", "crouching", "free")
_POSE_WEIGHTS = (0.27, 0.25, 0.12, 0.12, 0.08, 0.06, 0.10)

# Ranges in degrees: (shoulder flex, shoulder abduct, arm twist, elbow).
_ARM_STYLES = {
    "down": ((-15, 25), (3, 25), (-20, 20), (0, 40)),
    "bent": ((-10, 60), (5, 45), (-40, 40), (40, 130)),
    "forward": ((50, 110), (0, 40), (-30, 30), (0, 60)),
    "raised_side": ((-10, 40), (100, 175), (-30, 30), (0, 90)),
    "raised_front": ((120, 175), (0, 40), (-30, 30), (0, 90)),
    "free": ((-40, 170), (0, 170), (-90, 90), (0, 150)),
}
# (hip flex, hip abduct, leg twist, knee, ankle).
_LEG_STYLES = {
    "stand": ((-8, 12), (0, 12), (-10, 25), (0, 12), (-5, 10)),
    "sit": ((70, 100), (0, 20), (-10, 20), (70, 110), (-10, 15)),
    "squat": ((90, 125), (10, 35), (0, 30), (110, 145), (-20, 0)),
    "kneel": ((-10, 20), (0, 15), (-10, 20), (90, 120), (20, 50)),
    "free": ((-30, 120), (-5, 60), (-30, 40), (0, 140), (-20, 30)),
}
_ARM_KEYS = ("shoulder_flex", "shoulder_abduct", "arm_twist", "elbow")
_LEG_KEYS = ("hip_flex", "hip_abduct", "leg_twist", "knee", "ankle")


def _set_limb(pose: dict, rng: np.random.Generator, prefix: str, keys, ranges) -> None:
    for key, (low, high) in zip(keys, ranges, strict=True):
        pose[prefix + key] = float(rng.uniform(low, high))


def _base_pose(rng: np.random.Generator) -> dict[str, float]:
    """Torso and head of an upright person; limbs are set by the pose kind."""
    looks_aside = rng.random() < 0.3
    return {
        "torso_pitch": float(rng.uniform(-5, 10)),
        "torso_roll": float(rng.uniform(-6, 6)),
        "torso_twist": float(rng.uniform(-12, 12)),
        "head_yaw": float(rng.uniform(-70, 70) if looks_aside else rng.uniform(-15, 15)),
        "head_pitch": float(rng.uniform(-20, 25)),
        "head_roll": float(rng.uniform(-12, 12)),
    }


def walking_pose(phase: float, stride: float = 25.0, arm_swing: float = 25.0) -> dict[str, float]:
    """Limb angles of a walking gait at `phase` (radians; one cycle = two steps): hips swing by
    ±stride degrees, the swinging leg's knee bends up to ~60, arms swing against the legs."""
    pose = {}
    for prefix, shift in (("l_", 0.0), ("r_", math.pi)):
        p = phase + shift
        pose[prefix + "hip_flex"] = 4.0 + stride * math.sin(p)
        pose[prefix + "hip_abduct"] = 3.0
        pose[prefix + "leg_twist"] = 8.0
        pose[prefix + "knee"] = 6.0 + 55.0 * max(0.0, math.cos(p)) ** 2
        pose[prefix + "ankle"] = 8.0 * math.sin(p)
        pose[prefix + "shoulder_flex"] = -arm_swing * math.sin(p)
        pose[prefix + "shoulder_abduct"] = 8.0
        pose[prefix + "arm_twist"] = 0.0
        pose[prefix + "elbow"] = 12.0 + 25.0 * max(0.0, -math.sin(p))
    return pose


def sample_pose(rng: np.random.Generator, kind: str | None = None) -> tuple[str, dict[str, float]]:
    """A pose of `kind` (one of POSE_KINDS; random by default): the kind and its angles."""
    if kind is None:
        kind = str(rng.choice(POSE_KINDS, p=_POSE_WEIGHTS))
    pose = _base_pose(rng)
    arm_styles, leg_style = ["down"] * 6 + ["bent"] * 3 + ["forward", "raised_side"], "stand"
    if kind == "walking":
        pose.update(walking_pose(rng.uniform(0, 2 * math.pi), rng.uniform(15, 32)))
        pose["torso_pitch"] = float(rng.uniform(0, 8))
        return kind, pose
    if kind == "arms_raised":
        arm_styles = ["raised_side", "raised_front"]
    elif kind == "sitting":
        leg_style, arm_styles = "sit", ["down", "bent", "bent", "forward"]
    elif kind == "crouching":
        leg_style, arm_styles = str(rng.choice(["squat", "kneel"])), ["bent", "forward", "down"]
        pose["torso_pitch"] = float(rng.uniform(10, 45))
    elif kind == "free":
        leg_style, arm_styles = "free", ["free"]
        pose["torso_pitch"] = float(rng.uniform(-20, 60))
    elif kind == "lying":
        leg_style, arm_styles = "stand", ["down", "raised_side", "raised_front", "free", "bent"]
    both_arms_same = kind == "arms_raised" and rng.random() < 0.5
    shared = str(rng.choice(arm_styles))
    for prefix in ("l_", "r_"):
        style = shared if both_arms_same else str(rng.choice(arm_styles))
        _set_limb(pose, rng, prefix, _ARM_KEYS, _ARM_STYLES[style])
        _set_limb(pose, rng, prefix, _LEG_KEYS, _LEG_STYLES[leg_style])
    if kind == "lying":
        for prefix in ("l_", "r_"):
            pose[prefix + "knee"] = float(rng.uniform(0, 50))
    return kind, pose


def sample_body(rng: np.random.Generator, child: bool = False) -> Body:
    """Proportions with the variation between adults (a few percent per segment)."""
    body = Body()
    limbs = rng.normal(1.0, 0.03, size=6)
    head = rng.normal(1.0, 0.05) * (1.22 if child else 1.0)
    legs = 0.93 if child else 1.0
    return replace(
        body,
        shoulder_half=body.shoulder_half * rng.normal(1.0, 0.07),
        hip_half=body.hip_half * rng.normal(1.0, 0.08),
        head=tuple(r * head for r in body.head),
        upper_arm=body.upper_arm * limbs[0],
        forearm=body.forearm * limbs[1],
        thigh=body.thigh * limbs[2] * legs,
        shin=body.shin * limbs[3] * legs,
        torso=body.torso * limbs[4],
        neck=body.neck * limbs[5],
        girth=float(rng.uniform(0.85, 1.35)),
    )


# ------------------------------------------------------------------------------------ appearance

_SKIN_LIGHT, _SKIN_DARK = np.array([185, 205, 240.0]), np.array([40, 60, 95.0])  # BGR
_HAIR = ((25, 25, 30), (30, 45, 70), (40, 70, 115), (110, 170, 215), (165, 165, 170), (35, 70, 160))


@dataclass(frozen=True)
class Appearance:
    """Colours and cloth texture of one person. colors (NUM_PART_IDS, 3) float32 BGR."""

    colors: np.ndarray
    cloth_texture: float  # amplitude of the low-frequency shading of the clothes
    stripes: tuple[float, float, float] | None  # angle (deg), period (standing heights), dark
    dress: bool
    hat: bool
    texture_seed: int  # the cloth pattern, the same in every frame of a video


def _random_color(rng: np.random.Generator, saturation=(0.0, 1.0), value=(0.1, 1.0)) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array([b, g, r]) * 255.0


def sample_appearance(rng: np.random.Generator) -> Appearance:
    skin = _SKIN_LIGHT + rng.random() * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0, 8, 3)
    hair = np.array(_HAIR[rng.integers(len(_HAIR))], float) if rng.random() < 0.9 else skin * 0.9
    shirt = _random_color(rng)
    pants_kind = rng.random()
    if pants_kind < 0.4:  # denim
        pants = np.array([rng.uniform(110, 170), rng.uniform(70, 110), rng.uniform(30, 70)])
    elif pants_kind < 0.7:
        pants = np.full(3, rng.uniform(20, 120))
    else:
        pants = _random_color(rng)
    shoes = np.full(3, rng.uniform(15, 70)) if rng.random() < 0.7 else _random_color(rng)
    sleeves = rng.choice(["long", "short", "none"], p=[0.55, 0.35, 0.1])
    dress = bool(rng.random() < 0.1)
    shorts = bool(rng.random() < 0.2) or dress
    colors = np.zeros((NUM_PART_IDS, 3))
    colors[[NECK, FACE, EAR, L_HAND, R_HAND]] = skin
    colors[NOSE] = skin * 0.85
    colors[EYE] = (30, 25, 25)
    colors[HAIR] = hair
    colors[HAT] = _random_color(rng)
    colors[TORSO] = shirt
    colors[[L_UPPER, R_UPPER]] = skin if sleeves == "none" else shirt
    colors[[L_FORE, R_FORE]] = shirt if sleeves == "long" else skin
    colors[[L_THIGH, R_THIGH]] = skin if dress else pants
    colors[[L_SHIN, R_SHIN]] = skin if shorts else pants
    colors[DRESS] = _random_color(rng)
    colors[[L_FOOT, R_FOOT]] = shoes
    stripes = None
    if rng.random() < 0.2:
        stripes = (rng.uniform(0, 180), rng.uniform(0.02, 0.08), rng.uniform(0.55, 0.85))
    return Appearance(
        colors=np.clip(colors, 0, 255).astype(np.float32),
        cloth_texture=float(rng.uniform(0.0, 0.35)),
        stripes=stripes,
        dress=dress,
        hat=bool(rng.random() < 0.12),
        texture_seed=int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------------------- placing and drawing


@dataclass(frozen=True)
class Person:
    """One figure to draw: pose, body, appearance and where it stands in the image.

    yaw: degrees the person is turned from facing the camera (90: facing image right).
    height: pixels per standing height. anchor: image point (x, y) under the soles, or of the body
    centre when `lying`. roll: in-plane rotation in degrees. camera_pitch: degrees the camera looks
    down at the person.
    """

    pose: dict[str, float]
    body: Body
    appearance: Appearance
    yaw: float
    height: float
    anchor: tuple[float, float]
    roll: float = 0.0
    camera_pitch: float = 0.0
    lying: bool = False
    track_id: int | None = None


@dataclass(frozen=True)
class Occluder:
    """A non-person shape in front of whatever was drawn before it: a convex polygon (N, 2) or an
    ellipse ((cx, cy), (ax, ay), angle)."""

    color: tuple[float, float, float]
    polygon: np.ndarray | None = None
    ellipse: tuple | None = None
    texture: float = 0.2
    texture_seed: int = 0


def project(person: Person) -> tuple[np.ndarray, np.ndarray]:
    """Image points (NUM_POINTS, 2) and depths (NUM_POINTS,) of a person's body points. Depth is
    in standing heights, larger is nearer the camera."""
    pts = skeleton(person.pose, person.body)
    c, s = _cos_sin(person.yaw)
    x = pts[:, 0] * c + pts[:, 2] * s
    depth = -pts[:, 0] * s + pts[:, 2] * c
    cp, sp = _cos_sin(person.camera_pitch)
    # Looking down tilts height into depth too; depth stays that of a level view, so that what
    # faces the camera (and so what hides what within one figure) does not depend on the tilt.
    up = pts[:, 1] * cp - depth * sp
    cr, sr = _cos_sin(person.roll)
    x, up = x * cr - up * sr, x * sr + up * cr
    xy = np.stack([x, -up], axis=1) * person.height
    if person.lying:
        ref = 0.5 * (xy[NECK_BASE] + xy[11] * 0.5 + xy[12] * 0.5)
    else:
        # The sole is about a foot's radius below the lowest of the knees, ankles and toes.
        sole = xy[[13, 14, 15, 16, L_TOE, R_TOE], 1].max() + 0.02 * person.height
        ref = np.array([0.5 * (xy[11, 0] + xy[12, 0]), sole])
    return xy - ref + np.asarray(person.anchor), depth


# (part id, start point, end point, radii, depth bias) of the tapered parts. The bias puts a
# limb in front of the torso when both are at the same depth (arms hanging at the sides).
_LIMBS = (
    (NECK, NECK_BASE, NECK_TOP, "neck", 0.005),
    (L_UPPER, 5, 7, "upper_arm", 0.01),
    (R_UPPER, 6, 8, "upper_arm", 0.01),
    (L_FORE, 7, 9, "forearm", 0.01),
    (R_FORE, 8, 10, "forearm", 0.01),
    (L_HAND, 9, L_HAND_TIP, "hand", 0.012),
    (R_HAND, 10, R_HAND_TIP, "hand", 0.012),
    (L_THIGH, 11, 13, "thigh", 0.01),
    (R_THIGH, 12, 14, "thigh", 0.01),
    (L_SHIN, 13, 15, "shin", 0.01),
    (R_SHIN, 14, 16, "shin", 0.01),
    (L_FOOT, 15, L_TOE, "foot", 0.012),
    (R_FOOT, 16, R_TOE, "foot", 0.012),
)
_LIMB_IDS = [limb[0] for limb in _LIMBS]
_LIMB_STARTS = np.array([limb[1] for limb in _LIMBS])
_LIMB_ENDS = np.array([limb[2] for limb in _LIMBS])
_LIMB_RADII = np.array([_RADII[limb[3]] for limb in _LIMBS])
_LIMB_BIAS = np.array([limb[4] for limb in _LIMBS])

_SHIFT = 4  # OpenCV fixed-point bits: sub-pixel positions at 1/16 px
_ONE = 1 << _SHIFT


def _fixed(p) -> np.ndarray:
    return np.round(np.asarray(p) * _ONE).astype(np.int32)


def _part_list(
    person: Person, xy: np.ndarray, depth: np.ndarray, origin: np.ndarray
) -> list[tuple]:
    """(depth, order, part id, shape, geometry) of every part in drawing order, far to near;
    geometry in OpenCV fixed point relative to `origin` (the crop's top-left corner)."""
    local = xy - origin
    parts: list[tuple] = [(float(depth[TORSO_HULL].mean()), 0, TORSO, "hull",
                           cv2.convexHull(_fixed(local[TORSO_HULL])))]  # fmt: skip
    start, end = local[_LIMB_STARTS], local[_LIMB_ENDS]
    radii = np.maximum(_LIMB_RADII * (person.body.girth * person.height), _MIN_RADIUS_PX)
    direction = end - start
    length = np.hypot(direction[:, 0], direction[:, 1])
    normal = (
        np.stack([-direction[:, 1], direction[:, 0]], axis=1) / np.maximum(length, 1e-6)[:, None]
    )
    r0, r1 = radii[:, :1], radii[:, 1:]
    quads = _fixed(np.stack([start + normal * r0, end + normal * r1, end - normal * r1,
                             start - normal * r0], axis=1))  # fmt: skip
    caps = _fixed(np.stack([start, end], axis=1)).tolist()
    cap_radii = _fixed(radii).tolist()
    depths = 0.5 * (depth[_LIMB_STARTS] + depth[_LIMB_ENDS]) + _LIMB_BIAS
    for i, pid in enumerate(_LIMB_IDS):
        quad = quads[i] if length[i] > 1e-6 else None
        geometry = (quad, tuple(caps[i][0]), cap_radii[i][0], tuple(caps[i][1]), cap_radii[i][1])
        parts.append((float(depths[i]), i + 1, pid, "limb", geometry))
    if person.appearance.dress:
        hull = local[[11, 12, 13, 14]]
        flare = (hull - hull.mean(axis=0)) * 1.25 + hull.mean(axis=0)
        dress = cv2.convexHull(_fixed(np.vstack([hull, flare])))
        parts.append((_dress_depth(depth), len(parts), DRESS, "hull", dress))
    parts.extend(_head_parts(person, local, depth, len(parts)))
    return sorted(parts, key=lambda part: (part[0], part[1]))


def _ellipse(centre: np.ndarray, axes: tuple[float, float], angle: float) -> tuple:
    """cv2.ellipse's centre and axes in fixed point, and the angle."""
    return tuple(_fixed(centre).tolist()), (round(axes[0] * _ONE), round(axes[1] * _ONE)), angle


def _outline(axes: Sequence[np.ndarray]) -> tuple[tuple[float, float], float]:
    """Semi-axes and angle (degrees) of the outline of an ellipsoid whose projected semi-axis
    vectors are `axes` (2-vectors): exact for an orthographic view."""
    spread = sum(np.outer(a, a) for a in axes)
    a, b, c = spread[0, 0], spread[0, 1], spread[1, 1]
    mean, radius = 0.5 * (a + c), math.hypot(0.5 * (a - c), b)
    major, minor = math.sqrt(mean + radius), math.sqrt(max(mean - radius, 0.0))
    angle = 0.5 * math.degrees(math.atan2(2 * b, a - c))
    return (max(major, _MIN_RADIUS_PX), max(minor, _MIN_RADIUS_PX)), angle


def _head_parts(person: Person, xy: np.ndarray, depth: np.ndarray, order: int) -> list[tuple]:
    """Hair, face, ears, eyes, nose and hat: drawn together, after whatever is behind the head.
    A face keypoint turned away is not drawn but a hair-coloured dot at it keeps its pixel on
    the head where it grazes the outline."""
    h = person.height
    centre = xy[HEAD]
    up, side, front = xy[HEAD_UP] - centre, xy[HEAD_SIDE] - centre, xy[HEAD_FRONT] - centre
    rx, ry, rz = person.body.head
    axes, angle = _outline((side, up, front))
    d = float(depth[HEAD]) + 0.02
    parts = [(d, order, HAIR, "ellipse", _ellipse(centre, axes, angle))]
    facing = (depth[HEAD_FRONT] - depth[HEAD]) / rz  # 1 facing the camera, -1 facing away
    if facing > -0.3:
        face_axes = (0.8 * axes[0], 0.8 * axes[1])
        face = _ellipse(centre + 0.2 * front - 0.15 * up, face_axes, angle)
        parts.append((d, order + 1, FACE, "ellipse", face))
    dot = round(max(0.1 * rx * h, _MIN_RADIUS_PX) * _ONE)
    ear_axes = (max(0.2 * rx * h, 1.0), max(0.3 * ry * h, 1.0))
    up_angle = math.degrees(math.atan2(up[0], -up[1]))
    for k in range(5):
        spot = (tuple(_fixed(xy[k]).tolist()), round(_MIN_RADIUS_PX * _ONE))
        if depth[k] - depth[HEAD] < -_FACE_DEPTH_MARGIN:
            parts.append((d, order, HAIR, "circle", spot))  # under the face, if any
        elif k in (3, 4):
            parts.append((d, order + 2, EAR, "ellipse", _ellipse(xy[k], ear_axes, up_angle)))
        else:
            parts.append((d, order + 3, EYE if k else NOSE, "circle", (spot[0], dot)))
    if person.appearance.hat:
        brim = _ellipse(centre + 0.75 * up, (1.1 * max(axes), 0.4 * max(axes)), up_angle)
        parts.append((d, order + 4, HAT, "ellipse", brim))
    return parts


def _draw_part(canvas: np.ndarray, pid: int, shape: str, geometry: tuple) -> None:
    """Draws one part of `_part_list` with value `pid` into a uint8 part map."""
    if shape == "limb":
        quad, start, r0, end, r1 = geometry
        if quad is not None:
            cv2.fillConvexPoly(canvas, quad, pid, cv2.LINE_8, _SHIFT)
        cv2.circle(canvas, start, r0, pid, -1, cv2.LINE_8, _SHIFT)
        cv2.circle(canvas, end, r1, pid, -1, cv2.LINE_8, _SHIFT)
    elif shape == "hull":
        cv2.fillConvexPoly(canvas, geometry, pid, cv2.LINE_8, _SHIFT)
    elif shape == "ellipse":
        centre, axes, angle = geometry
        cv2.ellipse(canvas, centre, axes, angle, 0, 360, pid, -1, cv2.LINE_8, _SHIFT)
    else:  # circle
        centre, radius = geometry
        cv2.circle(canvas, centre, radius, pid, -1, cv2.LINE_8, _SHIFT)


@dataclass
class Rendered:
    """A drawn person. keypoints (17, 3): x, y, v as COCO; bbox [x, y, w, h] of the whole figure
    (clipped to the image); area: visible pixels; mask (h, w) bool of the whole figure and its
    part map (uint8 part ids) at `origin` (x, y) in the image; self_visible (17,) bool: not hidden
    by the person's own body."""

    person: Person
    keypoints: np.ndarray
    bbox: list[float]
    area: int
    origin: tuple[int, int]
    part_map: np.ndarray
    self_visible: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.part_map > 0


def _crop_box(xy: np.ndarray, height: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    pad = 0.12 * height + 3
    x0, y0 = np.floor(xy.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(xy.max(axis=0) + pad).astype(int) + 1
    return max(x0, 0), max(y0, 0), min(x1, size[0]), min(y1, size[1])


def _self_visibility(
    part_map: np.ndarray, origin: np.ndarray, xy: np.ndarray, depth: np.ndarray
) -> np.ndarray:
    """Whether each keypoint's pixel shows one of its own parts, from the side the keypoint is on
    when that part is a surface (torso, dress, head) rather than the limb the keypoint ends."""
    surface_depth = dict.fromkeys((TORSO, NECK), float(depth[TORSO_HULL].mean()))
    surface_depth[DRESS] = _dress_depth(depth)
    surface_depth.update(dict.fromkeys(HEAD_PARTS, float(depth[HEAD])))
    visible = np.zeros(NUM_KEYPOINTS, bool)
    h, w = part_map.shape
    pixels = np.rint(xy[:NUM_KEYPOINTS] - origin).astype(int)
    for k, (px, py) in enumerate(pixels):
        if not (0 <= px < w and 0 <= py < h):
            continue
        pid = int(part_map[py, px])
        if pid not in _KEYPOINT_PARTS[k]:
            continue
        visible[k] = pid not in surface_depth or (
            depth[k] - surface_depth[pid] >= -_KEYPOINT_MARGINS[k]
        )
    return visible


def _dress_depth(depth: np.ndarray) -> float:
    """In front of both thighs: a skirt covers them however the legs swing."""
    return max(float(depth[[11, 13]].mean()), float(depth[[12, 14]].mean())) + 0.02


def _shade(person: Person, parts: list, torso_depth: float) -> np.ndarray:
    """Colour of each part id: the far side of the body darker, as lit from the camera side."""
    colors = person.appearance.colors.copy()
    for d, _, pid, _, _ in parts:
        if pid in HEAD_PARTS or pid in (TORSO, DRESS):
            continue
        nearness = min(max(0.5 + (d - torso_depth) / 0.22, 0.0), 1.0)
        colors[pid] *= 0.68 + 0.32 * nearness
    if person.height * person.body.head[0] < 3:  # eyes of a tiny head: a dark blob reads as hair
        colors[EYE] = colors[FACE]
    return colors


def _low_frequency(
    rng: np.random.Generator, shape: tuple[int, int], cells: int = 5, channels: int = 1
) -> np.ndarray:
    """Smooth noise in [-1, 1] of `shape` (and `channels` > 1 as a last axis), from a cells x
    cells grid upsampled bicubically."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells, channels)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


_SHIRT_PARTS = (TORSO, L_UPPER, R_UPPER, L_FORE, R_FORE)


def _texture(person: Person, part_map: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Per-pixel brightness factor (h, w, 1) of the crop at `origin`: cloth shading, stripes and
    light falloff fixed to the person's frame (so they move with the person in a video, without
    shimmering), and darker outlines between parts."""
    look = person.appearance
    rng = np.random.default_rng(look.texture_seed)
    h, w = part_map.shape
    # Pixel offsets from the top of the person's standing box (head top above the anchor).
    top_left = np.asarray(person.anchor) - (0.6 * person.height, 1.05 * person.height)
    offset = origin - top_left
    factor = 1.0 + look.cloth_texture * _anchored_noise(rng, offset, (h, w), 1.2 * person.height)
    top, bottom = 1.0 + 0.1 * rng.random(), 1.0 - 0.15 * rng.random()
    rows = (np.arange(h, dtype=np.float32) + offset[1]) / person.height
    factor *= (top + (bottom - top) * np.clip(rows, 0.0, 1.0))[:, None]
    if look.stripes is not None:
        angle, period, dark = look.stripes
        c, s = _cos_sin(angle)
        across = (np.arange(w) + offset[0]) * c
        phase = across[None, :] + ((np.arange(h) + offset[1]) * s)[:, None]
        stripe = (phase // max(period * person.height, 2.0)) % 2 == 1
        shirt = [p for p in _SHIRT_PARTS if np.array_equal(look.colors[p], look.colors[TORSO])]
        factor[stripe & np.isin(part_map, shirt)] *= dark
    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= part_map[:, 1:] != part_map[:, :-1]
    edge[1:, :] |= part_map[1:, :] != part_map[:-1, :]
    factor[edge] *= 0.72 if person.height > 60 else 0.88
    return factor[..., None]


def _anchored_noise(
    rng: np.random.Generator, offset: np.ndarray, shape: tuple[int, int], box: float, cells: int = 6
) -> np.ndarray:
    """The window at `offset` (x, y), of `shape`, of smooth noise in about [-1, 1] spread over a
    box x box square: a cells x cells grid interpolated bicubically, only where the window is."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    k = (cells - 1) / box  # grid steps per pixel
    to_grid = np.array([[k, 0.0, offset[0] * k], [0.0, k, offset[1] * k]])
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(grid, to_grid, (shape[1], shape[0]), flags=flags,
                          borderMode=cv2.BORDER_REFLECT)  # fmt: skip


def _draw_person(
    person: Person, canvas: np.ndarray, owner: np.ndarray, index: int
) -> tuple[np.ndarray, tuple[int, int], np.ndarray, np.ndarray]:
    """Draws a person into canvas and owner; returns image points (NUM_POINTS, 2), the origin and
    part map of its crop, and self-visibility (17,)."""
    xy, depth = project(person)
    size = (canvas.shape[1], canvas.shape[0])
    x0, y0, x1, y1 = _crop_box(xy, person.height, size)
    if x1 <= x0 or y1 <= y0:
        return xy, (0, 0), np.zeros((0, 0), np.uint8), np.zeros(NUM_KEYPOINTS, bool)
    origin = np.array([x0, y0], float)
    parts = _part_list(person, xy, depth, origin)
    part_map = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for _, _, pid, shape, geometry in parts:
        _draw_part(part_map, pid, shape, geometry)
    self_visible = _self_visibility(part_map, origin, xy, depth)
    colors = _shade(person, parts, float(depth[TORSO_HULL].mean()))
    layer = cv2.convertScaleAbs(colors[part_map] * _texture(person, part_map, origin))
    _paste(canvas, owner, (x0, y0), layer, part_map > 0, index)
    return xy, (x0, y0), part_map, self_visible


def _paste(
    canvas: np.ndarray,
    owner: np.ndarray,
    origin: tuple[int, int],
    layer: np.ndarray,
    mask: np.ndarray,
    index: int,
) -> None:
    """Copies layer (h, w, 3) uint8 into canvas and `index` into owner where mask (h, w) is set."""
    x0, y0 = origin
    h, w = mask.shape
    cv2.copyTo(layer, mask.view(np.uint8), canvas[y0 : y0 + h, x0 : x0 + w])
    owner[y0 : y0 + h, x0 : x0 + w][mask] = index


def _draw_occluder(occluder: Occluder, canvas: np.ndarray, owner: np.ndarray) -> None:
    height, width = owner.shape
    if occluder.polygon is not None:
        corners = occluder.polygon
    else:
        (cx, cy), (ax, ay), _ = occluder.ellipse
        corners = np.array([[cx, cy]]) + np.array([[-1, -1], [1, 1]]) * max(ax, ay)
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 1, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(corners[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return
    offset = np.array([x0, y0], float)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    if occluder.polygon is not None:
        cv2.fillConvexPoly(mask, _fixed(occluder.polygon - offset), 1, cv2.LINE_8, _SHIFT)
    else:
        _draw_part(
            mask, 1, "ellipse", _ellipse(np.array([cx, cy]) - offset, (ax, ay), occluder.ellipse[2])
        )
    texture_rng = np.random.default_rng(occluder.texture_seed)
    shading = 1.0 + occluder.texture * _low_frequency(texture_rng, mask.shape, cells=7)
    layer = cv2.convertScaleAbs(np.asarray(occluder.color, np.float32) * shading[..., None])
    _paste(canvas, owner, (x0, y0), layer, mask.astype(bool), OCCLUDER)


def render_scene(
    background: np.ndarray, elements: Sequence[Person | Occluder]
) -> tuple[np.ndarray, np.ndarray, list[Rendered]]:
    """Draws `elements` in order (later ones in front) over a copy of `background` (H, W, 3) uint8.

    Returns the image, the owner map (H, W) int16 (index of the person each pixel shows, in the
    order of the persons among `elements`, or BACKGROUND / OCCLUDER) and every person, labelled.
    """
    canvas = background.copy()
    height, width = canvas.shape[:2]
    owner = np.full((height, width), BACKGROUND, np.int16)
    drawn = []
    for element in elements:
        if isinstance(element, Occluder):
            _draw_occluder(element, canvas, owner)
        else:
            drawn.append((element, *_draw_person(element, canvas, owner, len(drawn))))
    counts = np.bincount(owner.ravel() + 2, minlength=len(drawn) + 2)[2:]
    people = []
    for index, (person, xy, origin, part_map, self_visible) in enumerate(drawn):
        keypoints = _label_keypoints(xy, owner, index, self_visible)
        people.append(
            Rendered(
                person=person,
                keypoints=keypoints,
                bbox=_figure_box(part_map, origin),
                area=int(counts[index]),
                origin=origin,
                part_map=part_map,
                self_visible=self_visible,
            )
        )
    return canvas, owner, people


def _label_keypoints(
    xy: np.ndarray, owner: np.ndarray, index: int, self_visible: np.ndarray
) -> np.ndarray:
    """(17, 3) x, y, v: v 2 when the keypoint's pixel shows the person's own part, 1 when it is
    inside the image but covered, 0 (at 0, 0) outside."""
    height, width = owner.shape
    keypoints = np.zeros((NUM_KEYPOINTS, 3))
    for k, (x, y) in enumerate(xy[:NUM_KEYPOINTS]):
        if not (0.0 <= x <= width - 1 and 0.0 <= y <= height - 1):
            continue
        shown = owner[int(np.rint(y)), int(np.rint(x))] == index and self_visible[k]
        keypoints[k] = (x, y, 2 if shown else 1)
    return keypoints


def _figure_box(part_map: np.ndarray, origin: tuple[int, int]) -> list[float]:
    """[x, y, w, h] of the figure's pixels (COCO's convention for masks: w = last - first + 1)."""
    rows, cols = np.nonzero(part_map.any(axis=1))[0], np.nonzero(part_map.any(axis=0))[0]
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x, y = origin[0] + cols[0], origin[1] + rows[0]
    return [float(x), float(y), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


# ----------------------------------------------------------------------------------- backgrounds


@cache
def _photos() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, BGR image) of every background photo, read once per process."""
    found = []
    for package, names in (("skimage", _SKIMAGE_PHOTOS), ("matplotlib", _MATPLOTLIB_PHOTOS)):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ImportError(
                f"{package} is needed for the background photos (see requirements.txt)"
            )
        root = Path(spec.origin).parent
        folder = root / "data" if package == "skimage" else root / "mpl-data" / "sample_data"
        for name in names:
            image = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"{folder / name}: background photo missing")
            found.append((name, image))
    return tuple(found)


def _photo_crop(rng: np.random.Generator, size: tuple[int, int], names=None) -> np.ndarray:
    photos = [p for p in _photos() if names is None or p[0] in names]
    image = photos[rng.integers(len(photos))][1]
    h, w = image.shape[:2]
    scale = rng.uniform(0.45, 1.0)
    ch, cw = max(int(h * scale), 8), max(int(w * scale), 8)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = cv2.resize(image[y : y + ch, x : x + cw], size, interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    tint = rng.uniform(0.7, 1.15, size=3).astype(np.float32)
    return np.clip(crop * tint, 0, 255).astype(np.uint8)


def _gradient(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Two colours blended along a random direction, with a little smooth noise; made on an 8 x 8
    grid and upsampled (linear interpolation keeps a linear ramp linear)."""
    angle = rng.uniform(0, 2 * math.pi)
    grid = np.linspace(0.0, 1.0, 8)
    ramp = grid[None, :] * math.cos(angle) + grid[:, None] * math.sin(angle)
    ramp = ((ramp - ramp.min()) / np.ptp(ramp))[..., None]
    small = _random_color(rng) * (1 - ramp) + _random_color(rng) * ramp
    small *= 1.0 + 0.15 * rng.uniform(-1, 1, size=(8, 8, 1))
    small = np.clip(small, 0, 255).astype(np.float32)
    return cv2.resize(small, size, interpolation=cv2.INTER_LINEAR).astype(np.uint8)


def _noise_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Colour noise at three scales, from coarse blotches to fine grain."""
    shape = (size[1], size[0])
    image = rng.uniform(60, 190, size=3).astype(np.float32)
    for cells, weight in ((3, 90.0), (12, 45.0), (48, 20.0)):
        image = image + weight * _low_frequency(rng, shape, cells, channels=3)
    return cv2.convertScaleAbs(image)


def sample_background(
    rng: np.random.Generator, size: tuple[int, int], horizon: float | None = None
) -> np.ndarray:
    """A (H, W, 3) uint8 background of `size` (W, H): a photo, a wall over a floor split at
    `horizon`, a gradient or noise; with a few clutter shapes drawn over it."""
    w, h = size
    kind = rng.choice(["photo", "floor", "gradient", "noise"], p=[0.4, 0.25, 0.15, 0.2])
    if kind == "floor" and horizon is not None and 4 < horizon < h - 4:
        image = _photo_crop(rng, size) if rng.random() < 0.5 else _gradient(rng, size)
        split = int(horizon)
        floor = _photo_crop(rng, (w, h - split), _FLOOR_PHOTOS)
        image[split:] = (floor * rng.uniform(0.5, 1.0)).astype(np.uint8)
    elif kind in ("photo", "floor"):
        image = _photo_crop(rng, size)
    elif kind == "gradient":
        image = _gradient(rng, size)
    else:
        image = _noise_background(rng, size)
    _clutter(image, rng)
    return image


def _clutter(image: np.ndarray, rng: np.random.Generator) -> None:
    """Lines, boxes, discs and polylines: person-free shapes the model must learn to ignore."""
    h, w = image.shape[:2]
    for _ in range(rng.integers(0, 12)):
        color = tuple(float(c) for c in _random_color(rng))
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        extent = int(rng.uniform(0.02, 0.25) * max(w, h))
        shape = rng.integers(4)
        if shape == 0:
            q = (
                p[0] + int(rng.integers(-extent, extent)),
                p[1] + int(rng.integers(-extent, extent)),
            )
            cv2.line(image, p, q, color, int(rng.integers(1, 8)), cv2.LINE_AA)
        elif shape == 1:
            q = (p[0] + int(rng.integers(1, extent)), p[1] + int(rng.integers(1, extent)))
            cv2.rectangle(image, p, q, color, -1 if rng.random() < 0.6 else 2)
        elif shape == 2:
            cv2.circle(image, p, max(extent // 3, 1), color, -1, cv2.LINE_AA)
        else:
            pts = np.array(p) + rng.integers(-extent, extent + 1, size=(int(rng.integers(3, 7)), 2))
            cv2.polylines(image, [pts.astype(np.int32)], False, color, int(rng.integers(1, 5)))


# ----------------------------------------------------------------------------------- degradation


@cache
def _noise_tile() -> np.ndarray:
    """A fixed 1024 x 1024 x 3 tile of unit Gaussian noise (int8, x16), cut at random offsets:
    drawing fresh normals for every 640x480 image took ~15 ms of the ~25 ms budget."""
    tile = np.random.default_rng(12345).standard_normal((1024, 1024, 3), dtype=np.float32)
    return np.clip(tile * 16, -127, 127).astype(np.int8)


@dataclass(frozen=True)
class Degradation:
    """Camera effects: gain and offset, Gaussian blur sigma, motion blur (length px, angle deg),
    noise sigma (grey levels), JPEG quality."""

    gain: float = 1.0
    offset: float = 0.0
    blur: float = 0.0
    motion: tuple[int, float] | None = None
    noise: float = 0.0
    jpeg_quality: int = 90


def sample_degradation(rng: np.random.Generator) -> Degradation:
    motion = None
    if rng.random() < 0.1:
        motion = (int(rng.integers(3, 10)), float(rng.uniform(0, 180)))
    return Degradation(
        gain=float(rng.uniform(0.75, 1.2)),
        offset=float(rng.uniform(-20, 20)),
        blur=float(rng.uniform(0.3, 1.5)) if rng.random() < 0.5 else 0.0,
        motion=motion,
        noise=float(rng.uniform(2, 10)) if rng.random() < 0.6 else 0.0,
        jpeg_quality=int(rng.integers(70, 96)),
    )


def degrade(image: np.ndarray, effects: Degradation, rng: np.random.Generator) -> np.ndarray:
    """The image as a camera would spoil it (new array; `rng` picks where the noise is cut)."""
    lut = np.clip(np.arange(256) * effects.gain + effects.offset, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, lut)
    if effects.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), effects.blur)
    if effects.motion is not None:
        length, angle = effects.motion
        kernel = np.zeros((length, length), np.float32)
        c = (length - 1) / 2
        dx, dy = c * math.cos(math.radians(angle)), c * math.sin(math.radians(angle))
        cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
        image = cv2.filter2D(image, -1, kernel / kernel.sum())
    if effects.noise > 0:
        h, w = image.shape[:2]
        tile = _noise_tile()
        if h <= tile.shape[0] and w <= tile.shape[1]:
            y, x = rng.integers(0, tile.shape[0] - h + 1), rng.integers(0, tile.shape[1] - w + 1)
            noise = tile[y : y + h, x : x + w].astype(np.float32) * (effects.noise / 16)
        else:
            noise = rng.standard_normal((h, w, 3), dtype=np.float32) * effects.noise
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image


# ---------------------------------------------------------------------------------------- scenes

_SIZES = ((640, 480), (480, 640), (640, 427), (640, 360), (512, 512), (800, 600), (427, 640))
_SIZE_WEIGHTS = (0.35, 0.15, 0.15, 0.12, 0.08, 0.1, 0.05)
SCENE_KINDS = ("group", "street", "crowd")
_SCENE_WEIGHTS = (0.25, 0.45, 0.30)


def sample_size(rng: np.random.Generator) -> tuple[int, int]:
    w, h = _SIZES[rng.choice(len(_SIZES), p=_SIZE_WEIGHTS)]
    jitter = rng.uniform(0.85, 1.0)
    return int(w * jitter), int(h * jitter)


def _sample_yaw(rng: np.random.Generator) -> float:
    """Facing direction: the camera-facing views of photos are the most common."""
    u = rng.random()
    if u < 0.4:
        return float(rng.uniform(-35, 35))
    if u < 0.55:
        return float(rng.uniform(145, 215))
    return float(rng.uniform(0, 360))


def sample_person(
    rng: np.random.Generator,
    height: float,
    anchor: tuple[float, float],
    camera_pitch: float = 0.0,
    kind: str | None = None,
) -> tuple[Person, str]:
    """A random person `height` px tall standing (or sitting, lying...) at `anchor`."""
    kind, pose = sample_pose(rng, kind)
    body = sample_body(rng, child=rng.random() < 0.08)
    lying = kind == "lying"
    roll = float(rng.choice([-1, 1]) * rng.uniform(70, 110)) if lying else float(rng.normal(0, 3))
    person = Person(
        pose=pose,
        body=body,
        appearance=sample_appearance(rng),
        yaw=_sample_yaw(rng),
        height=float(height),
        anchor=(float(anchor[0]), float(anchor[1] - (0.12 * height if lying else 0.0))),
        roll=roll,
        camera_pitch=camera_pitch,
        lying=lying,
    )
    return person, kind


def _seat(person: Person, rng: np.random.Generator) -> Occluder | None:
    """A box under a sitting person's thighs, drawn just before the person."""
    xy, _ = project(person)
    hips, knees, feet = xy[[11, 12]], xy[[13, 14]], xy[[15, 16]]
    top = float(max(hips[:, 1].max(), knees[:, 1].max())) + 0.04 * person.height
    bottom = float(feet[:, 1].max())
    if bottom - top < 3:
        return None
    xs = np.concatenate([hips[:, 0], knees[:, 0]])
    left, right = float(xs.min()) - 0.06 * person.height, float(xs.max()) + 0.06 * person.height
    quad = np.array([[left, top], [right, top], [right, bottom], [left, bottom]])
    color = tuple(float(c) for c in _random_color(rng, value=(0.15, 0.9)))
    return Occluder(color, polygon=quad, texture_seed=int(rng.integers(2**31)))


def _occluder(rng: np.random.Generator, ground_y: float, ref: float, width: int) -> Occluder:
    """A pole, box, bush or board standing at `ground_y`, sized relative to a person `ref` px
    tall there."""
    x = rng.uniform(-0.05, 1.05) * width
    color = tuple(float(c) for c in _random_color(rng, value=(0.15, 0.9)))
    seed = int(rng.integers(2**31))
    kind = rng.integers(4)
    if kind in (0, 1):  # a pole, or a box: a car, table or bench
        half, tall = ((0.02, 0.07), (1.2, 3.0)) if kind == 0 else ((0.2, 0.8), (0.25, 0.7))
        half, top = rng.uniform(*half) * ref, ground_y - rng.uniform(*tall) * ref
        box = np.array(
            [[x - half, top], [x + half, top], [x + half, ground_y], [x - half, ground_y]]
        )
        return Occluder(color, polygon=box, texture=0.15 if kind == 0 else 0.3, texture_seed=seed)
    if kind == 2:  # bush
        axes = (rng.uniform(0.25, 0.6) * ref, rng.uniform(0.15, 0.35) * ref)
        bush = ((x, ground_y - 0.6 * axes[1]), axes, 0.0)
        return Occluder(color, ellipse=bush, texture=0.5, texture_seed=seed)
    centre = np.array([x, ground_y - rng.uniform(0.5, 1.5) * ref])  # board or sign
    half = np.array([rng.uniform(0.15, 0.5), rng.uniform(0.1, 0.4)]) * ref
    c, s = _cos_sin(rng.uniform(-30, 30))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    board = corners @ np.array([[c, s], [-s, c]]) + centre
    return Occluder(color, polygon=board, texture=0.2, texture_seed=seed)


@dataclass
class _Layout:
    """Where people stand: ground-plane perspective (height = k * (foot y - horizon))."""

    horizon: float | None
    k: float  # height in px per px of foot below the horizon
    camera_pitch: float
    count: int
    clustered: bool


def _sample_layout(rng: np.random.Generator, kind: str, size: tuple[int, int]) -> _Layout:
    h = size[1]
    if kind == "group":
        return _Layout(None, 0.0, 0.0, int(rng.integers(1, 7)), rng.random() < 0.5)
    if kind == "street":
        return _Layout(h * rng.uniform(-0.1, 0.45), rng.uniform(0.6, 1.3), rng.uniform(0, 10),
                       int(rng.integers(4, 16)), rng.random() < 0.3)  # fmt: skip
    return _Layout(h * rng.uniform(-0.3, 0.25), rng.uniform(0.22, 0.55), rng.uniform(10, 30),
                   int(rng.integers(15, 31)), rng.random() < 0.5)  # fmt: skip


def _stand_points(
    rng: np.random.Generator, layout: _Layout, size: tuple[int, int]
) -> list[tuple[float, float, float]]:
    """(x, foot y, height) of each person, heights within MIN_HEIGHT..MAX_HEIGHT."""
    w, h = size
    centres = rng.uniform([0.1 * w, 0.0], [0.9 * w, 1.0], size=(3, 2))
    points = []
    for _ in range(layout.count):
        if layout.horizon is None:
            height = math.exp(rng.uniform(math.log(120), math.log(min(MAX_HEIGHT, 1.3 * h))))
            # At most a third cut off at the top, half (the legs) at the bottom.
            top_limit, bottom_limit = max(0.5 * h, 0.67 * height), h + 0.5 * height
            foot = rng.uniform(top_limit, max(bottom_limit, top_limit + 1))
            x = rng.uniform(0.05, 0.95) * w
        else:
            near = MAX_HEIGHT / layout.k
            far = MIN_HEIGHT / layout.k
            lowest = min(1.15 * h - layout.horizon, near)
            below = math.exp(rng.uniform(math.log(far), math.log(max(lowest, far * 1.01))))
            if layout.clustered and rng.random() < 0.6:
                cx, cy = centres[rng.integers(len(centres))]
                below = min(max(below * (0.8 + 0.4 * cy), far), max(lowest, far))
                x = cx + rng.normal(0, 0.08 * w)
            else:
                x = rng.uniform(-0.1, 1.1) * w
            foot = layout.horizon + below
            height = layout.k * below * rng.normal(1.0, 0.06)
        points.append((float(x), float(foot), float(np.clip(height, MIN_HEIGHT, MAX_HEIGHT))))
    return points


def sample_scene(
    rng: np.random.Generator, size: tuple[int, int], max_people: int = 30
) -> tuple[np.ndarray, list[Person | Occluder], str]:
    """A background, the people and occluders to draw on it far to near, and the scene kind."""
    kind = str(rng.choice(SCENE_KINDS, p=_SCENE_WEIGHTS))
    layout = _sample_layout(rng, kind, size)
    layout.count = min(layout.count, max_people)
    background = sample_background(rng, size, layout.horizon)
    entries: list[tuple[float, int, Person | Occluder]] = []  # (nearness, order, element)
    for x, foot, height in _stand_points(rng, layout, size):
        person, pose_kind = sample_person(rng, height, (x, foot), layout.camera_pitch)
        # People in a group photo stand in loose rows, not strictly by foot position.
        nearness = foot + (rng.normal(0, 0.1 * size[1]) if kind == "group" else 0.0)
        seat = _seat(person, rng) if pose_kind == "sitting" and rng.random() < 0.7 else None
        if seat is not None:
            entries.append((nearness, len(entries), seat))
        entries.append((nearness, len(entries), person))
    for _ in range(rng.integers(0, {"group": 2, "street": 4, "crowd": 3}[kind])):
        foot = rng.uniform(0.3, 1.1) * size[1]
        ref = layout.k * (foot - layout.horizon) if layout.horizon is not None else 250.0
        if ref >= MIN_HEIGHT:
            entries.append((foot, len(entries), _occluder(rng, foot, ref, size[0])))
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    return background, [entry[2] for entry in entries], kind


# ------------------------------------------------------------------------------------------- coco


def categories() -> list[dict]:
    """COCO's person category with keypoint names, the 1-based skeleton and OKS sigmas."""
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(COCO_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON],
            "sigmas": list(COCO_SIGMAS),
        }
    ]


# People under this area (COCO's small/medium boundary) get no keypoint labels (module doc).
KEYPOINT_MIN_AREA = 32**2


def coco_annotation(person: Rendered, annotation_id: int, image_id: int) -> dict:
    keypoints = person.keypoints
    if person.area < KEYPOINT_MIN_AREA:
        keypoints = np.zeros_like(keypoints)
    flat = []
    for x, y, v in keypoints:
        flat += [round(float(x), 2), round(float(y), 2), int(v)]
    annotation = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": flat,
        "num_keypoints": int((keypoints[:, 2] > 0).sum()),
        "bbox": person.bbox,
        "area": float(person.area),
        "iscrowd": 0,
    }
    if person.person.track_id is not None:
        annotation["track_id"] = person.person.track_id
    return annotation


def render_image(
    seed: int, index: int, size: tuple[int, int] | None = None, max_people: int = 30
) -> tuple[np.ndarray, list[Rendered], Degradation]:
    """Image `index` of the dataset of `seed`: the degraded image (H, W, 3) BGR uint8, its people
    (those with visible pixels, far to near) and the camera effects (with the JPEG quality)."""
    rng = np.random.default_rng([seed, index])
    size = sample_size(rng) if size is None else size
    background, elements, _ = sample_scene(rng, size, max_people)
    image, _, people = render_scene(background, elements)
    effects = sample_degradation(rng)
    return degrade(image, effects, rng), [p for p in people if p.area > 0], effects


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("cannot encode a JPEG image")
    return data.tobytes()


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_size(size: tuple[int, int] | None) -> None:
    if size is None:
        return
    if len(size) != 2 or any(not isinstance(v, int) or not 32 <= v <= 4096 for v in size):
        raise ValueError(f"size must be (width, height) with each in 32..4096, got {size!r}")


@contextlib.contextmanager
def _staged_output(out_dir: Path) -> Iterator[Path]:
    """A fresh folder beside `out_dir` to write into, renamed to `out_dir` when the block ends
    without error (removed otherwise): the output is complete or absent. `out_dir` may be an
    empty folder; a non-empty one is refused."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def _info(seed: int, **settings) -> dict:
    return {
        "description": "rtmo procedural people",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        **settings,
    }


def synthesize_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int = TRAIN_SEED,
    *,
    size: tuple[int, int] | None = None,
    max_people: int = 30,
    progress: bool = False,
) -> Path:
    """Writes `num_images` images and their COCO keypoint annotations to `out_dir` (created; an
    existing non-empty folder is refused). size: (width, height) of every image, else varied
    around 640x480. Returns the annotation file, out_dir/annotations.json."""
    _check_count("num_images", num_images, 1)
    _check_count("seed", seed, 0)
    _check_count("max_people", max_people, 1)
    _check_size(size)
    out_dir = Path(out_dir)
    images, annotations = [], []
    with _staged_output(out_dir) as staging:
        (staging / "images").mkdir()
        for index in _progress(range(num_images), progress, "images"):
            image, people, effects = render_image(seed, index, size, max_people)
            image_id = index + 1
            name = f"{image_id:06d}.jpg"
            (staging / "images" / name).write_bytes(_encode_jpeg(image, effects.jpeg_quality))
            h, w = image.shape[:2]
            images.append({"id": image_id, "file_name": name, "width": w, "height": h})
            for person in people:
                annotations.append(coco_annotation(person, len(annotations) + 1, image_id))
        data = {
            "info": _info(seed, images=num_images, size=size, max_people=max_people),
            "images": images,
            "annotations": annotations,
            "categories": categories(),
        }
        _write_json(staging / "annotations.json", data)
    return out_dir / "annotations.json"


def _progress(items, enabled: bool, unit: str):
    if not enabled:
        return items
    import sys

    from tqdm import tqdm

    return tqdm(items, unit=unit.rstrip("s"), file=sys.stderr)


# ---------------------------------------------------------------------------------------- motion


@dataclass
class _Walker:
    """A person moving on the ground plane (metres; x right, z away from the camera)."""

    person: Person
    stature: float  # metres
    position: np.ndarray
    heading: float  # radians; 0 walks right, pi/2 walks away from the camera
    speed: float  # m/s, 0 for a person standing still
    goals: list[np.ndarray]
    phase: float = 0.0
    stride: float = 25.0
    sway: np.ndarray = field(default_factory=lambda: np.zeros(4))  # idle arm motion phases


@dataclass(frozen=True)
class _Camera:
    """Pinhole camera over flat ground: focal length (px), height (m), horizon row (px)."""

    focal: float
    height: float
    horizon: float
    size: tuple[int, int]

    def foot(self, position: np.ndarray) -> tuple[float, float]:
        x, z = position
        return self.size[0] / 2 + self.focal * x / z, self.horizon + self.focal * self.height / z

    def half_width(self, z: float) -> float:
        """Half the visible ground width (m) at distance z."""
        return self.size[0] / 2 * z / self.focal


_MAX_TURN = math.radians(100)  # per second: smooth turns (a person turns ~90 deg in a second)


def _sample_camera(rng: np.random.Generator, size: tuple[int, int]) -> tuple[_Camera, float, float]:
    """The camera and the range of distances (m) where people walk in view."""
    w, h = size
    camera = _Camera(w * rng.uniform(0.8, 1.1), rng.uniform(2.5, 5.0), h * rng.uniform(0.1, 0.3),
                     size)  # fmt: skip
    near = camera.focal * camera.height / (0.98 * h - camera.horizon)
    far = min(camera.focal * 1.7 / 40.0, 4.0 * near)  # people at least ~40 px tall
    return camera, near, max(far, near * 1.5)


def _walker(
    rng: np.random.Generator, camera: _Camera, near: float, far: float, role: str, track_id: int
) -> _Walker:
    """A person of `role`: "wander" (random goals in view), "cross" (from one side out the other),
    "return" (out of view and back again) or "idle" (standing)."""
    z = rng.uniform(near, far)
    edge = camera.half_width(z)
    x = rng.uniform(-0.8, 0.8) * edge
    goals = [
        np.array([rng.uniform(-0.9, 0.9) * camera.half_width(gz), gz])
        for gz in rng.uniform(near, far, size=6)
    ]
    if role == "cross":
        side = rng.choice([-1.0, 1.0])
        x = side * (edge + 1.0)
        goals = [np.array([-side * (camera.half_width(z) + 3.0), z + rng.uniform(-1, 1)])]
    elif role == "return":
        side = rng.choice([-1.0, 1.0])
        # Out by a body width past the edge (~3 s), then back in along a U-turn.
        x = side * rng.uniform(0.6, 0.85) * edge
        back = np.array([side * 0.3 * edge, z + rng.uniform(-1.0, 1.0)])
        goals = [np.array([side * (edge + 0.8), z]), back, *goals[:2]]
    stature = float(rng.normal(1.7, 0.08) if rng.random() > 0.05 else rng.uniform(1.1, 1.4))
    kind = "standing" if role == "idle" else "walking"
    person, _ = sample_person(rng, 100.0, (0.0, 0.0), float(rng.uniform(0, 10)), kind)
    heading = math.atan2(goals[0][1] - z, goals[0][0] - x)
    return _Walker(
        person=replace(person, track_id=track_id),
        stature=stature,
        position=np.array([x, z]),
        heading=heading,
        speed=0.0 if role == "idle" else float(rng.uniform(1.0, 1.6)),
        goals=goals,
        phase=float(rng.uniform(0, 2 * math.pi)),
        stride=float(rng.uniform(18, 30)),
        sway=rng.uniform(0, 2 * math.pi, size=4),
    )


def _step(walker: _Walker, dt: float) -> None:
    """Moves a walker one frame towards its next goal, turning at most _MAX_TURN per second."""
    if walker.speed == 0:
        return
    if walker.goals and np.hypot(*(walker.goals[0] - walker.position)) < 0.5:
        walker.goals.pop(0)
    if walker.goals:
        target = walker.goals[0] - walker.position
        wanted = math.atan2(target[1], target[0])
        turn = (wanted - walker.heading + math.pi) % (2 * math.pi) - math.pi
        walker.heading += max(-_MAX_TURN * dt, min(_MAX_TURN * dt, turn))
    distance = walker.speed * dt
    walker.position = walker.position + distance * np.array(
        [math.cos(walker.heading), math.sin(walker.heading)]
    )
    walker.position[1] = max(walker.position[1], 1.0)
    walker.phase += 2 * math.pi * distance / (0.8 * walker.stature)  # a gait cycle is 2 steps


def _posed(walker: _Walker, camera: _Camera, time: float) -> Person:
    """The walker's figure at this frame: gait or idle motion, facing its heading."""
    pose = dict(walker.person.pose)
    if walker.speed > 0:
        pose.update(walking_pose(walker.phase, walker.stride))
        # Walking right (heading 0) shows the right profile: yaw 90; walking at the camera: yaw 0.
        yaw = math.degrees(math.atan2(math.cos(walker.heading), -math.sin(walker.heading)))
    else:
        a = walker.sway
        for prefix, offset in (("l_", 0), ("r_", 2)):
            pose[prefix + "shoulder_flex"] += 15 * math.sin(0.7 * time + a[offset])
            pose[prefix + "elbow"] = 40 + 35 * math.sin(0.5 * time + a[offset + 1])
        yaw = walker.person.yaw + 25 * math.sin(0.3 * time + a[0])
    pose["head_yaw"] = 30 * math.sin(0.4 * time + walker.sway[3])
    return replace(
        walker.person,
        pose=pose,
        yaw=yaw,
        height=camera.focal * walker.stature / walker.position[1],
        anchor=camera.foot(walker.position),
    )


def _static_occluders(
    rng: np.random.Generator, camera: _Camera, near: float, far: float
) -> list[tuple[float, Occluder]]:
    """(distance, occluder) of 1-3 fixed objects that people walk behind."""
    items = []
    for _ in range(rng.integers(1, 4)):
        z = rng.uniform(near, far)
        ref = camera.focal * 1.7 / z
        occluder = _occluder(rng, camera.foot(np.array([0.0, z]))[1], ref, camera.size[0])
        items.append((float(z), occluder))
    return items


def render_sequence(
    seed: int, index: int, num_frames: int, size: tuple[int, int] = (640, 480), fps: float = 25.0
) -> Iterator[tuple[np.ndarray, list[Rendered]]]:
    """Frames of sequence `index` of `seed`: (image (H, W, 3) BGR uint8, people in view)."""
    rng = np.random.default_rng([seed, index, 1])
    camera, near, far = _sample_camera(rng, size)
    roles = ["cross", "return", "cross"] + [
        str(rng.choice(["wander", "cross", "idle"], p=[0.5, 0.3, 0.2]))
        for _ in range(rng.integers(2, 9))
    ]
    walkers = [_walker(rng, camera, near, far, role, i + 1) for i, role in enumerate(roles)]
    occluders = _static_occluders(rng, camera, near, far)
    background = sample_background(rng, size, camera.horizon)
    effects = replace(sample_degradation(rng), motion=None)
    for frame in range(num_frames):
        time = frame / fps
        elements = [(w.position[1], _posed(w, camera, time)) for w in walkers]
        elements += occluders
        elements.sort(key=lambda e: -e[0])  # far to near
        image, _, people = render_scene(background, [e[1] for e in elements])
        yield degrade(image, effects, rng), [p for p in people if p.area > 0]
        for walker in walkers:
            _step(walker, 1.0 / fps)


def synthesize_sequences(
    out_dir: str | os.PathLike,
    num_sequences: int,
    num_frames: int,
    seed: int = SEQUENCE_SEED,
    *,
    size: tuple[int, int] = (640, 480),
    fps: float = 25.0,
    progress: bool = False,
) -> list[Path]:
    """Writes `num_sequences` videos of moving people, out_dir/seq_NNN.mp4, each with its COCO
    json out_dir/seq_NNN.json (one image per frame, annotations with `track_id`). Returns the
    json paths."""
    from rtmo.video import video_writer

    _check_count("num_sequences", num_sequences, 1)
    _check_count("num_frames", num_frames, 1)
    _check_count("seed", seed, 0)
    _check_size(size)
    if not (isinstance(fps, int | float) and 1 <= fps <= 240):
        raise ValueError(f"fps must be a number in 1..240, got {fps!r}")
    out_dir = Path(out_dir)
    written = []
    with _staged_output(out_dir) as staging:
        for index in _progress(range(num_sequences), progress, "sequences"):
            name = f"seq_{index:03d}"
            images, annotations = [], []
            with video_writer(staging / f"{name}.mp4", fps) as writer:
                frames = render_sequence(seed, index, num_frames, size, fps)
                for frame_index, (image, people) in enumerate(frames):
                    writer.write(image)
                    image_id = frame_index + 1
                    images.append({
                        "id": image_id, "file_name": f"{name}.mp4", "width": size[0],
                        "height": size[1], "frame_index": frame_index, "video_id": index + 1,
                        "video_name": name,
                    })  # fmt: skip
                    for person in people:
                        annotations.append(coco_annotation(person, len(annotations) + 1, image_id))
            video = {"id": index + 1, "name": name, "file_name": f"{name}.mp4", "fps": fps,
                     "width": size[0], "height": size[1], "num_frames": num_frames}  # fmt: skip
            data = {
                "info": _info(seed, sequence=index, frames=num_frames, size=list(size), fps=fps),
                "videos": [video],
                "images": images,
                "annotations": annotations,
                "categories": categories(),
            }
            _write_json(staging / f"{name}.json", data)
            written.append(out_dir / f"{name}.json")
    return written
