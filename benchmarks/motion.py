"""Moving people with known identities, and what a pose detector would report of them.

`make_sequence(scenario, seed)` lays out people walking through a 1280x720 picture at 30 fps and
gives their true COCO-17 keypoints, visibility (2 visible, 1 hidden behind someone nearer, 0
outside the picture), boxes and ids in every frame:

* "crossing": two or three people of similar height cross each other at nearly the same depth
  (their boxes overlap almost fully at the crossing: where IoU-only trackers swap ids);
* "overtaking": one person overtakes another walking the same way, side by side for a while;
* "reenter": a person walks out through the side of the picture, stays out for up to 20 frames
  and walks back in through the same side, while others walk by;
* "crowd": six people walking between random waypoints, crossing in every direction.

A walking person's legs and arms swing with a gait phase that advances with the distance walked,
they are larger the nearer they are (lower feet in the picture), and each has their own build and
arm pose (swinging, one arm raised, hands on hips, a hand at the head).

`detect(sequence, seed)` turns the true poses into detections with the errors of a real detector:
keypoint noise of a given OKS level, hidden keypoints noisier and scoring low, missed people
(often when mostly hidden), person scores that fall with occlusion, boxes with noisy edges and
false positives (mostly low-scoring). `load_coco_sequence(path)` reads a sequence of the
procedural dataset (`rtmo.train.synthetic --frames T --motion`: COCO json with `frame_index`
and `track_id`) into the same form.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtmo.config import COCO_SIGMAS
from rtmo.track.similarity import BOX_TO_AREA

IMAGE_SIZE = (1280, 720)
FPS = 30.0
SCENARIOS = ("crossing", "overtaking", "reenter", "crowd")
K = 17
# A person is in the ground truth of a frame when at least this share of their keypoints is
# visible (inside the picture and not hidden); the detector is not asked to find the others.
MIN_VISIBLE_SHARE = 0.25
_HORIZON = 0.15  # the horizon's height as a share of the picture: people shrink towards it
_WALK_SPEED = 0.022  # person heights per frame: 1.2 m/s for a 1.7 m person at 30 fps
_STRIDE = 0.9  # gait cycles per person height walked


@dataclass
class Frame:
    """The people of one frame. ids (n,), keypoints (n, 17, 2), visibility (n, 17) in {0, 1, 2},
    boxes (n, 4) x1, y1, x2, y2, scores (n,) (1 for the ground truth), keypoint_scores (n, 17)
    (detections only)."""

    ids: np.ndarray
    keypoints: np.ndarray
    visibility: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    keypoint_scores: np.ndarray | None = None


@dataclass
class Sequence:
    """Frames of true people; `ignored`: per frame, boxes (m, 4) of people too hidden to count
    (empty for the built-in scenarios, whose frames leave them out)."""

    name: str
    frames: list[Frame]
    image_size: tuple[int, int] = IMAGE_SIZE
    fps: float = FPS
    ignored: list[np.ndarray] | None = None


@dataclass
class _Walker:
    """A person's build, arm pose and path: waypoints (feet positions) with the frame reached."""

    height_at_bottom: float  # height in pixels with the feet at the picture's bottom edge
    build: np.ndarray  # (4,) shoulder width, hip width, arm length, leg length (x height)
    arms: str
    side_view: float  # 1 walking across the picture (legs swing sideways), 0 towards it
    phase: float
    times: list[float] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)

    def feet(self, t: float) -> tuple[float, float] | None:
        """Feet position at frame t (None before the first or after the last waypoint)."""
        if t < self.times[0] or t > self.times[-1]:
            return None
        return (
            float(np.interp(t, self.times, [p[0] for p in self.points])),
            float(np.interp(t, self.times, [p[1] for p in self.points])),
        )


def _height(walker: _Walker, feet_y: float) -> float:
    horizon = _HORIZON * IMAGE_SIZE[1]
    return walker.height_at_bottom * max(feet_y - horizon, 1.0) / (IMAGE_SIZE[1] - horizon)


def _skeleton(walker: _Walker, feet: tuple[float, float], t: float, heading: float) -> np.ndarray:
    """COCO-17 keypoints (17, 2) in picture pixels of a walker at frame t (y grows downwards)."""
    fx, fy = feet
    h = _height(walker, fy)
    shoulder_w, hip_w, arm, leg = walker.build
    narrowing = 1.0 - 0.55 * walker.side_view  # a body seen from the side is narrower
    walked = _walked(walker, t)
    swing = 0.45 * math.sin(2 * math.pi * _STRIDE * walked / h + walker.phase)
    pts = np.zeros((K, 2))

    def at(x: float, up: float) -> np.ndarray:  # body units (x right, up) -> picture pixels
        return np.array([fx + x * h, fy - up * h])

    def limb(origin: np.ndarray, length: float, angle: float) -> np.ndarray:
        # angle 0 points down; the swing shows sideways in proportion to the side view
        dx = length * h * math.sin(angle) * (walker.side_view * heading + 0.15)
        dy = length * h * math.cos(angle)
        return origin + np.array([dx, dy])

    sw, hw = shoulder_w * narrowing / 2, hip_w * narrowing / 2
    pts[0] = at(0.02 * heading * walker.side_view, 0.935)
    pts[1], pts[2] = at(0.025 * narrowing, 0.95), at(-0.025 * narrowing, 0.95)
    pts[3], pts[4] = at(0.05 * narrowing, 0.94), at(-0.05 * narrowing, 0.94)
    pts[5], pts[6] = at(sw, 0.815), at(-sw, 0.815)
    pts[11], pts[12] = at(hw, 0.52), at(-hw, 0.52)
    for hip, knee, ankle, sign in ((11, 13, 15, 1.0), (12, 14, 16, -1.0)):
        pts[knee] = limb(pts[hip], leg / 2, sign * swing)
        pts[ankle] = limb(pts[knee], leg / 2, sign * swing * 1.3 - 0.15 * abs(swing))
    for shoulder, elbow, wrist, sign in ((5, 7, 9, 1.0), (6, 8, 10, -1.0)):
        upper, lower = _arm_angles(walker.arms, -sign * swing, sign)
        pts[elbow] = pts[shoulder] + arm * 0.55 * h * np.array([math.sin(upper), math.cos(upper)])
        pts[wrist] = pts[elbow] + arm * 0.45 * h * np.array([math.sin(lower), math.cos(lower)])
    return pts


def _arm_angles(style: str, swing: float, sign: float) -> tuple[float, float]:
    """(upper arm, forearm) angles from straight down (positive: towards picture right)."""
    if style == "raised" and sign > 0:
        return math.pi * 0.9, math.pi * 0.95
    if style == "hips":
        return sign * 0.9, -sign * 0.9
    if style == "phone" and sign < 0:
        return -0.5, math.pi * 0.85
    return swing, swing * 1.3


def _walked(walker: _Walker, t: float) -> float:
    """Pixels walked by frame t along the path (drives the gait phase)."""
    total, prev = 0.0, walker.points[0]
    segments = zip(walker.times[:-1], walker.times[1:], walker.points[1:], strict=True)
    for t0, t1, point in segments:
        if t <= t0:
            break
        share = min(1.0, (t - t0) / max(t1 - t0, 1e-9))
        total += share * math.dist(prev, point)
        prev = point
    return total


def _heading(walker: _Walker, t: float) -> float:
    ahead, behind = walker.feet(min(t + 1, walker.times[-1])), walker.feet(max(t - 1, 0))
    if ahead is None or behind is None or abs(ahead[0] - behind[0]) < 1e-6:
        return 1.0
    return 1.0 if ahead[0] > behind[0] else -1.0


def _new_walker(rng: np.random.Generator, height: float) -> _Walker:
    build = np.array([0.23, 0.17, 0.36, 0.48]) * rng.uniform(0.9, 1.1, 4)
    arms = rng.choice(["swing", "swing", "raised", "hips", "phone"])
    return _Walker(height, build, str(arms), rng.uniform(0.4, 1.0), rng.uniform(0, 2 * math.pi))


def _walk(walker: _Walker, start_frame: float, points: list[tuple[float, float]], speed: float):
    """Sets the path through `points` at `speed` person heights per frame from `start_frame`."""
    walker.times, walker.points = [start_frame], [points[0]]
    for point in points[1:]:
        h = _height(walker, (walker.points[-1][1] + point[1]) / 2)
        walker.times.append(walker.times[-1] + math.dist(walker.points[-1], point) / (speed * h))
        walker.points.append(point)


def _scenario(name: str, rng: np.random.Generator, frames: int, fps: float) -> list[_Walker]:
    w, h = IMAGE_SIZE
    walk_speed = _WALK_SPEED * FPS / fps  # person heights per frame at this frame rate
    walkers = []
    if name == "crossing":
        # Everyone passes the middle of the picture within a few frames of mid-sequence.
        y = rng.uniform(0.75, 0.95) * h
        size = rng.uniform(280, 380)
        for i in range(int(rng.integers(2, 4))):
            walker = _new_walker(rng, size * rng.uniform(0.9, 1.1))
            heading = 1.0 if i % 2 == 0 else -1.0
            feet_y = y + rng.uniform(-0.04, 0.04) * h
            speed = walk_speed * rng.uniform(0.8, 1.6)
            step = speed * _height(walker, feet_y) * heading  # pixels per frame
            middle, when = rng.uniform(0.4, 0.6) * w, rng.uniform(0.45, 0.55) * frames
            start, end = middle - step * when, middle + step * (frames - when)
            _walk(walker, 0.0, [(start, feet_y), (end, feet_y)], speed)
            walkers.append(walker)
    elif name == "overtaking":
        y = rng.uniform(0.75, 0.95) * h
        size = rng.uniform(280, 380)
        # The slow walker starts ahead; the fast one catches up around the middle.
        for start, speed in ((0.35, walk_speed * 0.7), (0.0, walk_speed * 1.5)):
            walker = _new_walker(rng, size * rng.uniform(0.9, 1.1))
            feet_y = y + rng.uniform(-0.03, 0.03) * h
            _walk(walker, 0.0, [(start * w, feet_y), (1.2 * w, feet_y)], speed)
            walkers.append(walker)
    elif name == "reenter":
        size = rng.uniform(250, 350)
        walker = _new_walker(rng, size)
        y = rng.uniform(0.7, 0.95) * h
        # Out through the right edge, turns round off-screen, back in through the same edge
        # 6-22 frames later.
        step = walk_speed * 1.5 * _height(walker, y)
        turn = w + 0.1 * _height(walker, y) + step * rng.uniform(3, 11)
        _walk(walker, 0.0, [(0.55 * w, y), (turn, y), (0.3 * w, y)], walk_speed * 1.5)
        walkers.append(walker)
        for _ in range(int(rng.integers(1, 3))):
            other = _new_walker(rng, rng.uniform(200, 350))
            oy = rng.uniform(0.6, 0.95) * h
            _walk(other, rng.uniform(0, 0.3) * frames, [(-0.1 * w, oy), (0.8 * w, oy)], walk_speed)
            walkers.append(other)
    elif name == "crowd":
        for _ in range(6):
            walker = _new_walker(rng, rng.uniform(220, 380))
            points = [(rng.uniform(0.05, 0.95) * w, rng.uniform(0.55, 0.98) * h) for _ in range(4)]
            _walk(walker, 0.0, points, walk_speed * rng.uniform(0.7, 1.4))
            walkers.append(walker)
    else:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return walkers


def make_sequence(scenario: str, seed: int, frames: int = 150, fps: float = FPS) -> Sequence:
    """The true people of a scenario in every frame (deterministic per seed); the same walks at
    another frame rate take proportionally more frames."""
    rng = np.random.default_rng([SCENARIOS.index(scenario) if scenario in SCENARIOS else 0, seed])
    walkers = _scenario(scenario, rng, frames, fps)
    out = []
    for t in range(frames):
        ids, poses, feet_ys, heights = [], [], [], []
        for i, walker in enumerate(walkers):
            feet = walker.feet(float(t))
            if feet is None:
                continue
            ids.append(i + 1)
            poses.append(_skeleton(walker, feet, float(t), _heading(walker, float(t))))
            feet_ys.append(feet[1])
            heights.append(_height(walker, feet[1]))
        out.append(_frame(np.array(ids), np.array(poses).reshape(-1, K, 2), feet_ys, heights))
    return Sequence(f"{scenario}-{seed}", out, fps=fps)


def _frame(ids: np.ndarray, keypoints: np.ndarray, feet_ys: list[float], heights: list[float]):
    w, h = IMAGE_SIZE
    inside = (keypoints >= 0).all(-1) & (keypoints[..., 0] < w) & (keypoints[..., 1] < h)
    hidden = _hidden(keypoints, np.asarray(feet_ys), np.asarray(heights))
    visibility = np.where(inside, np.where(hidden, 1, 2), 0)
    boxes = _boxes(keypoints, np.asarray(heights), IMAGE_SIZE)
    keep = (visibility == 2).mean(-1) >= MIN_VISIBLE_SHARE if len(ids) else np.zeros(0, bool)
    return Frame(ids[keep], keypoints[keep], visibility[keep], boxes[keep], np.ones(keep.sum()))


_LIMBS = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (5, 12),
          (6, 11), (5, 6), (11, 12), (0, 5), (0, 6))  # fmt: skip


def _hidden(keypoints: np.ndarray, feet_ys: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """(n, 17) whether each keypoint lies on the body of a nearer person (lower feet)."""
    hidden = np.zeros(keypoints.shape[:2], bool)
    for i in range(len(keypoints)):
        for j in np.flatnonzero(feet_ys > feet_ys[i]):
            a = keypoints[j, [s for s, _ in _LIMBS]]  # (L, 2) segment starts
            b = keypoints[j, [e for _, e in _LIMBS]]
            p = keypoints[i][:, None]  # (17, 1, 2)
            ab = b - a
            along = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab**2).sum(-1), 1e-9), 0, 1)
            distance = np.linalg.norm(p - (a + along[..., None] * ab), axis=-1).min(-1)
            hidden[i] |= distance < 0.08 * heights[j]  # limbs about 0.16 person heights thick
    return hidden


def _boxes(keypoints: np.ndarray, heights: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Person boxes (n, 4): the keypoints' extent reaching the top of the head and the soles,
    clipped to the picture."""
    if len(keypoints) == 0:
        return np.zeros((0, 4))
    pad = heights[:, None]
    low, high = keypoints.min(1), keypoints.max(1)
    boxes = np.concatenate(
        [low - pad * np.array([0.05, 0.09]), high + pad * np.array([0.05, 0.03])], axis=1
    )
    w, h = image_size
    return np.clip(boxes, 0, [w, h, w, h])


def detect(
    sequence: Sequence,
    seed: int,
    oks_level: float = 0.8,
    miss_rate: float = 0.03,
    false_positives_per_frame: float = 0.25,
) -> list[Frame]:
    """What a detector of mean keypoint OKS `oks_level` reports of the sequence, frame by frame
    (ids of the returned frames are the true ids, -1 for false positives; trackers do not see
    them).

    Keypoint noise: Gaussian, per axis std = a * sqrt(area) * 2 * sigma_k with a chosen so that
    E[OKS] = oks_level (E[exp(-d^2 / (2 A (2 sigma)^2))] = 1 / (1 + a^2)); doubled for hidden
    keypoints. Missed: with probability miss_rate + 0.6 * (hidden share)^2. Score: N(0.85, 0.07)
    times (0.3 + 0.7 * visible share), so a mostly hidden person scores low. Box edges: noise of
    3 % of the box size. False positives: Poisson(false_positives_per_frame) per frame, a random
    person-sized pose anywhere, scoring 0.1-0.55 (one in ten 0.55-0.75).
    """
    rng = np.random.default_rng([seed, 7])
    spread = math.sqrt(1.0 / oks_level - 1.0)
    sigmas = 2.0 * np.asarray(COCO_SIGMAS)
    w, h = sequence.image_size
    out = []
    for truth in sequence.frames:
        n = len(truth.ids)
        visible_share = (truth.visibility == 2).mean(-1) if n else np.zeros(0)
        found = rng.random(n) >= miss_rate + 0.6 * (1.0 - visible_share) ** 2
        size = truth.boxes[:, 2:] - truth.boxes[:, :2]
        area = BOX_TO_AREA * size.prod(-1)
        std = spread * np.sqrt(area)[:, None] * sigmas[None] * np.where(truth.visibility == 2, 1, 2)
        keypoints = truth.keypoints + rng.normal(size=truth.keypoints.shape) * std[..., None]
        boxes = truth.boxes + rng.normal(size=(n, 4)) * 0.03 * np.tile(size, 2)
        scores = np.clip(rng.normal(0.85, 0.07, n), 0.5, 0.99) * (0.3 + 0.7 * visible_share)
        keypoint_scores = np.select(
            [truth.visibility == 2, truth.visibility == 1],
            [rng.uniform(0.6, 1.0, (n, K)), rng.uniform(0.05, 0.5, (n, K))],
            rng.uniform(0.0, 0.3, (n, K)),
        )
        fp = _false_positives(rng, rng.poisson(false_positives_per_frame), sequence.image_size)
        count = len(fp[0])
        out.append(
            Frame(
                np.concatenate([truth.ids[found], -np.ones(count, np.int64)]),
                np.concatenate([keypoints[found], fp[0]]),
                np.concatenate([truth.visibility[found], np.full((count, K), 2)]),
                np.clip(np.concatenate([boxes[found], fp[1]]), 0, [w, h, w, h]),
                np.concatenate([scores[found], fp[2]]),
                np.concatenate([keypoint_scores[found], rng.uniform(0.2, 0.9, (count, K))]),
            )
        )
    return out


def _false_positives(rng: np.random.Generator, count: int, image_size: tuple[int, int]):
    """`count` random person-shaped detections: keypoints (c, 17, 2), boxes (c, 4), scores (c,)."""
    w, h = image_size
    scale = h / IMAGE_SIZE[1]
    keypoints, heights = [], []
    for _ in range(count):
        walker = _new_walker(rng, rng.uniform(150, 350) * scale)
        feet = (rng.uniform(0.05, 0.95) * w, rng.uniform(0.4, 1.0) * h / scale)
        walker.times, walker.points = [0.0, 1.0], [feet, feet]
        keypoints.append(_skeleton(walker, feet, 0.0, 1.0))
        heights.append(_height(walker, feet[1]))
    keypoints = np.array(keypoints).reshape(-1, K, 2)
    scores = np.where(
        rng.random(count) < 0.1, rng.uniform(0.55, 0.75, count), rng.uniform(0.1, 0.55, count)
    )
    return keypoints, _boxes(keypoints, np.asarray(heights), image_size), scores


def load_coco_sequence(path: str | Path) -> Sequence:
    """A sequence of the procedural dataset: a COCO keypoint json whose images are the frames of
    one video (`frame_index`) and whose annotations carry the person's `track_id`.

    People with fewer than MIN_VISIBLE_SHARE of their keypoints visible are not in the frames'
    ground truth (as in `make_sequence`); their boxes are in `Sequence.ignored`, so that a tracker
    following them is neither rewarded nor punished.
    """
    data = json.loads(Path(path).read_text())
    images = sorted(data["images"], key=lambda image: image["frame_index"])
    if not images:
        raise ValueError(f"{path}: no frames")
    by_image: dict[int, list[dict]] = {image["id"]: [] for image in images}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    frames, ignored = [], []
    for image in images:
        anns = by_image[image["id"]]
        kpts = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, K, 3)
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        counted = (kpts[..., 2] == 2).mean(-1) >= MIN_VISIBLE_SHARE
        ids = np.array([a["track_id"] for a in anns], dtype=np.int64)
        frames.append(
            Frame(
                ids[counted],
                kpts[counted, :, :2],
                kpts[counted, :, 2].astype(np.int64),
                boxes[counted],
                np.ones(int(counted.sum())),
            )
        )
        ignored.append(boxes[~counted])
    size = (int(images[0]["width"]), int(images[0]["height"]))
    videos = data.get("videos") or [{}]
    fps = float(videos[0].get("fps", data.get("info", {}).get("fps", FPS)))
    return Sequence(Path(path).stem, frames, size, fps, ignored)
