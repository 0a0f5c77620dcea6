"""The tracking benchmark's code paths on small inputs: the metrics plumbing (perfect and swapped
tracks), ignored people, the procedural dataset's sequences, and the model run through
`RTMO.track` (random-weight RTMO-t at a small input; its numbers mean nothing)."""

import dataclasses

import numpy as np
import pytest
import torch

from benchmarks import motion, tracking
from rtmo.config import COCO_KEYPOINTS, from_name
from rtmo.model import RTMOModel
from rtmo.predictor import RTMO
from rtmo.results import Poses
from rtmo.train.synthetic import synthesize_sequences


def truth_as_tracks(sequence, swap_after: int | None = None) -> list[Poses]:
    """The true people as tracker output, ids 1 and 2 exchanged from frame `swap_after` on."""
    out = []
    for t, frame in enumerate(sequence.frames):
        ids = frame.ids.copy()
        if swap_after is not None and t >= swap_after:
            ids = np.where(ids == 1, 2, np.where(ids == 2, 1, ids))
        poses = tracking.to_poses(frame, sequence.image_size)
        order = np.argsort(-frame.scores, kind="stable")
        poses.track_ids = ids[order]
        out.append(poses)
    return out


def test_metrics_of_perfect_and_swapped_tracks():
    sequence = motion.make_sequence("crossing", 0, frames=60)
    perfect = tracking.summarize([tracking.accumulate(sequence, truth_as_tracks(sequence))], ["a"])
    assert perfect["a"]["idf1"] == pytest.approx(1.0)
    assert perfect["a"]["mota"] == pytest.approx(1.0)
    assert perfect["a"]["num_switches"] == 0
    swapped = tracking.accumulate(sequence, truth_as_tracks(sequence, swap_after=30))
    row = tracking.summarize([swapped], ["a"])["a"]
    assert row["num_switches"] == 2
    assert row["idf1"] < 0.75


def test_a_track_on_an_ignored_person_is_no_false_positive():
    sequence = motion.make_sequence("crossing", 0, frames=2)
    hidden = np.array([[10.0, 10, 60, 150]])
    sequence.ignored = [hidden, np.zeros((0, 4))]
    tracked = truth_as_tracks(sequence)
    extra = Poses(hidden, [0.9], np.zeros((1, 17, 2)), np.ones((1, 17)), sequence.image_size)
    extra.track_ids = np.array([99])
    for t in (0, 1):
        both = Poses(
            np.concatenate([tracked[t].boxes, extra.boxes]),
            np.concatenate([tracked[t].scores, extra.scores]),
            np.concatenate([tracked[t].keypoints, extra.keypoints]),
            np.concatenate([tracked[t].keypoint_scores, extra.keypoint_scores]),
            sequence.image_size,
            track_ids=np.concatenate([tracked[t].track_ids, extra.track_ids]),
        )
        tracked[t] = both
    row = tracking.summarize([tracking.accumulate(sequence, tracked)], ["a"])["a"]
    assert row["num_false_positives"] == 1  # frame 1 only, where nobody is ignored


def test_tracker_benchmark_and_its_report():
    sequences = tracking.benchmark_sequences([0], frames=40, scenarios=("crossing", "reenter"))
    result = tracking.tracker_benchmark(sequences)
    for row in result["associations"].values():
        assert 0.0 <= row["overall"]["idf1"] <= 1.0
        assert set(row["by_scenario"]) == {"crossing", "reenter"}
    smoothing = result["smoothing"]
    assert smoothing["one-euro"]["jitter_pct"] < smoothing["raw"]["jitter_pct"]
    lines = tracking.markdown_lines({"detections": "d", "scenarios": {"source": "s", **result}})
    assert any(line.startswith("| iou+oks |") for line in lines)


@pytest.fixture
def one_thread():
    """One torch thread: a 64x64 network gains nothing from more, and on a busy machine two
    threads' barrier waits made its convolutions 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_model_benchmark_on_procedural_sequences(tmp_path, one_thread):
    paths = synthesize_sequences(tmp_path / "seq", 1, 4, seed=3, size=(96, 64), fps=10)
    sequence = tracking.procedural_sequences(tmp_path / "seq")[0]
    assert len(sequence.frames) == 4
    assert sequence.fps == 10.0
    assert sequence.image_size == (96, 64)
    assert len(paths) == 1
    torch.manual_seed(0)
    config = dataclasses.replace(from_name("rtmo-t"), input_size=(64, 64))
    model = RTMO(RTMOModel(config), device="cpu", score_thr=0.0, max_det=3)
    result = tracking.model_benchmark(model, tmp_path / "seq", batch_size=2)
    assert set(result["associations"]) == {"iou", "iou+oks"}
    assert set(result["smoothing"]) == {"raw", "one-euro"}
    lines = tracking.markdown_lines({"detections": "d", "model": {"checkpoint": "c", **result}})
    assert lines[2].startswith("Model c through RTMO.track")


def test_load_coco_sequence_reads_frames_ids_and_hidden_people(tmp_path):
    synthesize_sequences(tmp_path / "seq", 1, 6, seed=2, size=(160, 120), fps=25)
    sequence = motion.load_coco_sequence(tmp_path / "seq" / "seq_000.json")
    assert len(sequence.frames) == len(sequence.ignored) == 6
    for frame, ignored in zip(sequence.frames, sequence.ignored, strict=True):
        assert frame.keypoints.shape == (len(frame.ids), 17, 2)
        assert ((frame.visibility == 2).mean(-1) >= motion.MIN_VISIBLE_SHARE).all()
        assert ignored.shape[1] == 4
    assert tracking.to_poses(sequence.frames[0], sequence.image_size).keypoint_names == (
        COCO_KEYPOINTS
    )
