"""ByteTrack-style association of people across frames (Zhang et al., ECCV 2022), with poses.

Each frame, the people of the previous frames (tracks, their boxes moved by a Kalman filter and
their keypoints carried along) are matched to the people detected now, in three rounds:

1. confirmed tracks (seen last frame, or lost for at most `track_buffer` frames) against the
   confident detections (score >= `high_thr`);
2. the confirmed tracks still unmatched against the doubtful detections (`low_thr` <= score <
   `high_thr`): a person partly hidden by another often scores low, and this round keeps their id
   instead of dropping them; doubtful detections no track claims are dropped. Unlike ByteTrack,
   tracks lost in earlier frames take part too: a person coming out from behind another scores
   low at first (IDF1 0.879 -> 0.893, misses -9 % on the procedural dataset's tuning sequences);
3. tracks born last frame (not yet confirmed) against the confident detections left; a new track
   is confirmed, and gets its id, when it is found again in the next frame (on the tracker's first
   frame, at once), so a one-frame false detection never takes an id.

Confident detections left over start new tracks (score >= `new_track_thr`). Each round is an
optimal assignment (Hungarian) on a similarity that combines box IoU with pose OKS
(`oks_weight`); `oks_weight=0` is IoU-only, as in ByteTrack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from rtmo.results import Poses
from rtmo.track import kalman
from rtmo.track.similarity import box_iou, combined_similarity, pose_oks

# A box side within this many pixels of the picture's edge is taken to be cut by it.
EDGE_MARGIN = 1.0


@dataclass
class Track:
    """One person followed over frames.

    mean (8,), covariance (8, 8): Kalman state of the box (centre, size, their velocities).
    box (4,), keypoints (K, 2), keypoint_scores (K,), score: the last detection matched to it.
    track_id: None until confirmed. last_frame: the frame of that detection.
    """

    mean: np.ndarray
    covariance: np.ndarray
    box: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    score: float
    last_frame: int
    track_id: int | None = None

    def predicted_keypoints(self) -> np.ndarray:
        """The last keypoints (K, 2) carried to the predicted box: moved with its centre and
        scaled with its size."""
        last = kalman.xyxy_to_cxcywh(self.box)[0]
        now = self.mean[:4]
        scale = np.maximum(now[2:], 1.0) / np.maximum(last[2:], 1.0)
        return (self.keypoints - last[:2]) * scale + now[:2]


class ByteTracker:
    """Gives each person a `track_id` that stays the same from frame to frame.

    sigmas (K,): OKS sigmas of the keypoint set (`RTMOConfig.sigmas`).
    high_thr, low_thr: the person scores that split confident and doubtful detections; below
        `low_thr` a detection is ignored.
    new_track_thr: the least score of a detection that starts a track.
    track_buffer: frames a track that is no longer seen keeps its id, waiting for the person to
        come back (30 = 1 s at 30 fps).
    oks_weight: weight of pose OKS in the similarity (1 - w) * IoU + w * OKS; 0 is IoU only.
    kpt_thr: keypoints scoring below this are left out of the OKS.
    match_thr, low_match_thr, unconfirmed_match_thr: the least similarity of a match in rounds
        1, 2 and 3 (in rounds 1 and 3 the similarity is multiplied by the detection score first).

    `update(poses)` takes each frame's people, in order, and returns the tracked ones with their
    `track_ids`.
    """

    def __init__(
        self,
        sigmas: Sequence[float],
        *,
        high_thr: float = 0.5,
        low_thr: float = 0.1,
        new_track_thr: float = 0.6,
        track_buffer: int = 30,
        oks_weight: float = 0.5,
        kpt_thr: float = 0.3,
        match_thr: float = 0.2,
        low_match_thr: float = 0.5,
        unconfirmed_match_thr: float = 0.3,
    ) -> None:
        self.sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if self.sigmas.size == 0 or not (self.sigmas > 0).all():
            raise ValueError(f"sigmas must be positive, one per keypoint, got {list(sigmas)}")
        if isinstance(track_buffer, bool) or not isinstance(track_buffer, (int, np.integer)):
            raise TypeError(f"track_buffer must be an int (frames), got {track_buffer!r}")
        if track_buffer < 0:
            raise ValueError(f"track_buffer must be >= 0 frames, got {track_buffer}")
        for name, value in {
            "high_thr": high_thr,
            "low_thr": low_thr,
            "new_track_thr": new_track_thr,
            "oks_weight": oks_weight,
            "kpt_thr": kpt_thr,
            "match_thr": match_thr,
            "low_match_thr": low_match_thr,
            "unconfirmed_match_thr": unconfirmed_match_thr,
        }.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if low_thr > high_thr:
            raise ValueError(f"low_thr ({low_thr}) must not exceed high_thr ({high_thr})")
        self.high_thr, self.low_thr, self.new_track_thr = high_thr, low_thr, new_track_thr
        self.track_buffer = int(track_buffer)
        self.oks_weight, self.kpt_thr = oks_weight, kpt_thr
        self.match_thr, self.low_match_thr = match_thr, low_match_thr
        self.unconfirmed_match_thr = unconfirmed_match_thr
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forgets every track (a new video); ids given later still never repeat earlier ones."""
        self.tracks: list[Track] = []
        self.frame: int | None = None  # the last frame seen
        self.previous_frame = -1  # the frame before the current one (-1 before the first)
        self.frame_count = 0  # frames seen since the reset

    def update(self, poses: Poses, frame: int | None = None) -> Poses:
        """Matches one frame's people to the tracks; returns the tracked people, in the order of
        `poses`, with `track_ids` (n,) int64 set.

        frame: the frame's index; frames skipped since the last call (unreadable ones) are
        predicted through. Default: the frame after the last one.
        """
        if poses.num_keypoints != self.sigmas.size:
            raise ValueError(
                f"poses have {poses.num_keypoints} keypoints but the tracker has "
                f"{self.sigmas.size} sigmas"
            )
        frame = self._advance(frame, poses)
        scores = poses.scores.astype(np.float64)
        first_frame = self.frame_count == 1
        high = np.flatnonzero(scores >= self.high_thr)
        low = np.flatnonzero((scores >= self.low_thr) & (scores < self.high_thr))
        confirmed = [t for t in self.tracks if t.track_id is not None]
        unconfirmed = [t for t in self.tracks if t.track_id is None]
        owner: dict[int, Track] = {}  # detection index -> track

        pairs, left_tracks, left_high = self._match(confirmed, high, poses, self.match_thr, True)
        owner.update(pairs)
        pairs, _, _ = self._match(left_tracks, low, poses, self.low_match_thr, False)
        owner.update(pairs)
        pairs, dropped, left_high = self._match(
            unconfirmed, left_high, poses, self.unconfirmed_match_thr, True
        )
        owner.update(pairs)
        for track in pairs.values():
            self._confirm(track)
        self._correct(owner, poses, frame)

        born = [i for i in left_high if scores[i] >= self.new_track_thr]
        new_tracks = self._start(born, poses, frame)
        for i, track in zip(born, new_tracks, strict=True):
            if first_frame:
                self._confirm(track)
                owner[i] = track
        dropped_ids = {id(t) for t in dropped}
        self.tracks = [
            t
            for t in self.tracks
            if id(t) not in dropped_ids and frame - t.last_frame <= self.track_buffer
        ] + new_tracks
        return _tracked_people(poses, owner)

    # -- per-frame steps --------------------------------------------------------------------------

    def _advance(self, frame: int | None, poses: Poses) -> int:
        """Moves the tracks' states to `frame`; returns it."""
        if frame is None:
            frame = 0 if self.frame is None else self.frame + 1
        frame = int(frame)
        if self.frame is not None and frame <= self.frame:
            raise ValueError(f"frame {frame} does not come after the last frame {self.frame}")
        steps = 1 if self.frame is None else frame - self.frame
        self.previous_frame = frame - 1 if self.frame is None else self.frame
        self.frame_count = 1 if self.frame is None else self.frame_count + 1
        self.frame = frame
        if self.tracks:
            self._predict(steps, poses.image_size)
        return frame

    def _predict(self, steps: int, image_size: tuple[int, int]) -> None:
        mean = np.stack([t.mean for t in self.tracks])
        covariance = np.stack([t.covariance for t in self.tracks])
        lost = np.array([t.last_frame < self.previous_frame for t in self.tracks])
        for step in range(steps):
            # A person not seen keeps walking at their last velocity (slowing them down instead
            # gave 3 -> 6 id switches at 0.97 per frame, 17 at 0.8, in the tracking benchmark),
            # but their size stops changing.
            mean[lost | (step > 0), 6:] = 0.0
            mean, covariance = kalman.predict(mean, covariance)
        # A person who walked out of the picture is waited for at its border, not beyond.
        width, height = image_size
        mean[:, 0] = np.clip(mean[:, 0], 0.0, width)
        mean[:, 1] = np.clip(mean[:, 1], 0.0, height)
        for track, m, c in zip(self.tracks, mean, covariance, strict=True):
            track.mean, track.covariance = m, c

    def _similarity(
        self, tracks: list[Track], detections: np.ndarray, poses: Poses
    ) -> tuple[np.ndarray, np.ndarray]:
        """(T, D) similarity of tracks and the detections with indices `detections`, and their
        (T, D) box IoU."""
        predicted = kalman.boxes_of(np.stack([t.mean for t in tracks]))
        # Detected boxes end at the picture's edge: so must the predicted ones they are compared
        # with, or a person coming back into the picture would overlap little with their track.
        width, height = poses.image_size
        predicted = np.clip(predicted, 0.0, [width, height, width, height])
        iou = box_iou(predicted, poses.boxes[detections])
        if self.oks_weight == 0.0:
            return iou, iou
        oks = pose_oks(
            np.stack([t.predicted_keypoints() for t in tracks]),
            np.stack([t.keypoint_scores >= self.kpt_thr for t in tracks]),
            predicted,
            poses.keypoints[detections],
            poses.keypoint_scores[detections] >= self.kpt_thr,
            self.sigmas,
        )
        return combined_similarity(iou, oks, self.oks_weight), iou

    def _match(
        self,
        tracks: list[Track],
        detections: np.ndarray | list[int],
        poses: Poses,
        min_similarity: float,
        weigh_by_score: bool,
    ) -> tuple[dict[int, Track], list[Track], list[int]]:
        """Optimal one-to-one matches with similarity >= `min_similarity`.

        Returns {detection index: track}, the tracks left and the detection indices left.
        """
        detections = np.asarray(detections, dtype=np.int64)
        if not tracks or detections.size == 0:
            return {}, list(tracks), detections.tolist()
        similarity, iou = self._similarity(tracks, detections, poses)
        # OKS ranks the candidates but never vetoes a pair whose boxes alone would match: after
        # frames without its person a track's pose is stale (the limbs moved on), and gating on
        # it lost people coming out from behind others (8 -> 14 id switches in the crowd scenes
        # of the tracking benchmark).
        gate = np.maximum(similarity, iou)
        if weigh_by_score:
            weights = poses.scores[detections].astype(np.float64)[None]
            similarity, gate = similarity * weights, gate * weights
        allowed = gate >= min_similarity
        rows, cols = linear_sum_assignment(np.where(allowed, -similarity, 1e6))
        good = allowed[rows, cols]
        pairs = {int(detections[c]): tracks[r] for r, c in zip(rows[good], cols[good], strict=True)}
        matched_rows = set(rows[good].tolist())
        left_tracks = [t for i, t in enumerate(tracks) if i not in matched_rows]
        left_detections = [int(d) for d in detections if int(d) not in pairs]
        return pairs, left_tracks, left_detections

    def _correct(self, owner: dict[int, Track], poses: Poses, frame: int) -> None:
        """Kalman update of every matched track with its detection; keeps the detection's pose."""
        if not owner:
            return
        indices = list(owner)
        tracks = [owner[i] for i in indices]
        predicted = np.stack([t.mean for t in tracks])
        boxes = _whole_boxes(poses.boxes[indices], predicted[:, 2:4], poses.image_size)
        mean, covariance = kalman.update(predicted, np.stack([t.covariance for t in tracks]), boxes)
        for i, track, m, c in zip(indices, tracks, mean, covariance, strict=True):
            track.mean, track.covariance = m, c
            track.box = poses.boxes[i].astype(np.float64)
            track.keypoints = poses.keypoints[i].astype(np.float64)
            track.keypoint_scores = poses.keypoint_scores[i].astype(np.float64)
            track.score = float(poses.scores[i])
            track.last_frame = frame

    def _start(self, detections: list[int], poses: Poses, frame: int) -> list[Track]:
        if not detections:
            return []
        mean, covariance = kalman.initiate(poses.boxes[detections])
        return [
            Track(
                mean=m,
                covariance=c,
                box=poses.boxes[i].astype(np.float64),
                keypoints=poses.keypoints[i].astype(np.float64),
                keypoint_scores=poses.keypoint_scores[i].astype(np.float64),
                score=float(poses.scores[i]),
                last_frame=frame,
            )
            for i, m, c in zip(detections, mean, covariance, strict=True)
        ]

    def _confirm(self, track: Track) -> None:
        track.track_id = self._next_id
        self._next_id += 1


def _whole_boxes(boxes: np.ndarray, sizes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Boxes (n, 4) cut by the picture's edge, extended beyond it to their track's predicted
    width and height (n, 2) from their inner edge; other boxes unchanged.

    A person walking out of the picture keeps their whole size in their track, so their box stays
    comparable with theirs when they come back (a track that learned the cut boxes shrank to a
    sliver and lost the person coming back in the tracking benchmark).
    """
    boxes = np.asarray(boxes, dtype=np.float64).copy()
    width, height = image_size
    for axis, limit in ((0, width), (1, height)):
        low, high = boxes[:, axis], boxes[:, axis + 2]
        size = np.maximum(sizes[:, axis], high - low)
        at_low = (low <= EDGE_MARGIN) & (high < limit - EDGE_MARGIN)
        at_high = (high >= limit - EDGE_MARGIN) & (low > EDGE_MARGIN)
        boxes[at_low, axis] = high[at_low] - size[at_low]
        boxes[at_high, axis + 2] = low[at_high] + size[at_high]
    return boxes


def _tracked_people(poses: Poses, owner: dict[int, Track]) -> Poses:
    """The people of `poses` that belong to a confirmed track, in their order, with their ids."""
    indices = sorted(i for i, t in owner.items() if t.track_id is not None)
    tracked = poses[np.asarray(indices, dtype=np.int64)]
    tracked.track_ids = np.asarray([owner[i].track_id for i in indices], dtype=np.int64)
    return tracked
