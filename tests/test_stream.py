"""`RTMO.stream` and `RTMO.track`: every source kind, lazily and in order, batched; damaged frames
in their place; ids through a crossing in a video; flat memory over a long video."""

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from test_predictor import ContentModel, content_image
from test_video import damage_frame, drop_frame, write_avi

from rtmo.predictor import RTMO
from rtmo.sources import SourceError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model():
    """ContentModel's one person per image, with OKS sigmas for its 3 keypoints to track them."""
    network = ContentModel()
    network.config.sigmas = (0.08, 0.08, 0.05)
    return RTMO(network, device="cpu")


def test_a_video_streams_in_order_in_batches(model, tmp_path):
    video = write_avi(tmp_path / "clip.avi", 10)
    frames = list(model.stream(video, batch_size=4))
    assert [f.index for f, _ in frames] == list(range(10))
    first = frames[0][0]
    assert (first.kind, first.source, first.path, first.fps) == ("video", str(video), video, 10.0)
    assert first.image.shape == (48, 64, 3)
    assert all(len(poses) == 1 for _, poses in frames)
    assert [c["shape"][0] for c in model.model.calls] == [4, 4, 2]
    np.testing.assert_allclose(frames[7][0].time, 0.7)


def test_globs_lists_folders_and_arrays_in_one_call(model, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"{i}.png"), content_image(40 + i, 30, seed=i))
    (photos / "notes.txt").write_text("ignored")
    video = write_avi(tmp_path / "clip.avi", 3)
    array = content_image(20, 10)
    frames = list(model.stream([str(photos / "*.png"), str(video), array, photos]))
    kinds = [(f.source_index, f.kind, f.index) for f, _ in frames]
    assert kinds == [
        (0, "image", 0), (0, "image", 1), (0, "image", 2),
        (1, "video", 0), (1, "video", 1), (1, "video", 2),
        (2, "array", 0),
        (3, "image", 0), (3, "image", 1), (3, "image", 2),
    ]  # fmt: skip
    assert [p.image_size for _, p in frames[:3]] == [(40, 30), (41, 30), (42, 30)]
    assert frames[6][1].image_size == (20, 10)


def test_sources_are_checked_before_any_frame(model, tmp_path):
    with pytest.raises(SourceError, match=r"nothing/\*\.png: no file matches"):
        model.stream(str(tmp_path / "nothing" / "*.png"))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SourceError, match="none is an image or a video"):
        model.stream(str(tmp_path / "*.txt"))
    cv2.imwrite(str(tmp_path / "ok.png"), content_image(20, 10))
    with pytest.raises(SourceError, match=r"missing\.mp4: no such file"):
        model.track([str(tmp_path / "ok.png"), str(tmp_path / "missing.mp4")])
    with pytest.raises(ValueError, match="on_error"):
        list(model.stream(tmp_path / "ok.png", on_error="x"))
    with pytest.raises(ValueError, match="batch_size"):
        list(model.stream(tmp_path / "ok.png", batch_size=0))


def test_damaged_frames_are_named_with_their_position(model, tmp_path):
    video = write_avi(tmp_path / "clip.avi", 10)
    damage_frame(video, 7)
    drop_frame(video, 4)
    frames = list(model.stream(video, batch_size=3, on_error="yield"))
    assert [f.index for f, _ in frames] == list(range(10))
    errors = {f.index: f.error for f, p in frames if p is None}
    assert errors == {i: f"{video}: frame {i} cannot be decoded" for i in (4, 7)}
    for frame, _ in frames:  # the frames after a damaged one are themselves
        if frame.error is None:
            assert abs(float(frame.image.mean()) - 20 * frame.index) < 3
    with pytest.warns(UserWarning, match="frame [47] cannot be decoded") as warned:
        assert len(list(model.stream(video))) == 8
    assert [str(w.message).split(": ")[-1] for w in warned] == [
        f"frame {i} cannot be decoded; skipped" for i in (4, 7)
    ]
    with pytest.raises(SourceError, match="frame 4 cannot be decoded"):
        list(model.stream(video, on_error="raise"))


def reading_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rtmo-prefetch"]


def test_batches_are_letterboxed_ahead_on_the_reading_thread(model, tmp_path, monkeypatch):
    """The next batch is read and letterboxed on the reading thread while the network runs on
    the current one: the first batch's network call waits until the second batch is prepared
    (without prefetching it would wait forever), and the frames come out in order."""
    video = write_avi(tmp_path / "clip.avi", 9)
    prepared, waited, second_ready = [], [], threading.Event()
    prepare, run = model._prepare, model._predict_prepared

    def recording_prepare(images):
        out = prepare(images)
        prepared.append((threading.current_thread().name, len(images)))
        if len(prepared) == 2:
            second_ready.set()
        return out

    def waiting_run(batch, *thresholds):
        waited.append(second_ready.wait(timeout=30))
        return run(batch, *thresholds)

    monkeypatch.setattr(model, "_prepare", recording_prepare)
    monkeypatch.setattr(model, "_predict_prepared", waiting_run)
    frames = list(model.stream(video, batch_size=4))
    assert [f.index for f, _ in frames] == list(range(9))
    assert waited == [True, True, True]
    assert prepared == [("rtmo-prefetch", 4), ("rtmo-prefetch", 4), ("rtmo-prefetch", 1)]
    assert all(poses.image_size == (64, 48) for _, poses in frames)
    assert not reading_threads()


def test_an_error_while_preparing_comes_after_the_batches_before_it(model):
    """A bad image in the third batch: the first two batches come out, then its error."""
    good = [content_image(20, 10, seed=i) for i in range(4)]
    sources = [*good[:2], np.zeros((8, 8, 3)), *good[2:]]  # float64: refused by the letterbox
    frames = model.stream(sources, batch_size=1)
    assert [next(frames)[0].source_index for _ in range(2)] == [0, 1]
    with pytest.raises(TypeError, match="uint8 or uint16, got float64"):
        next(frames)
    assert not reading_threads()


def test_stopping_early_stops_the_reading_thread(model, tmp_path):
    video = write_avi(tmp_path / "clip.avi", 12)
    with contextlib.closing(model.stream(video, batch_size=2)) as frames:
        assert [next(frames)[0].index for _ in range(3)] == [0, 1, 2]
        assert len(reading_threads()) == 1
    assert not reading_threads()
    for _ in model.stream(video, batch_size=2):
        break  # the loop drops the generator, which closes it
    assert not reading_threads()


def test_a_camera_that_cannot_open_is_named(model):
    frames = model.stream(99)
    with pytest.raises(SourceError, match="99: cannot open camera"):
        next(frames)


class ColourModel(torch.nn.Module):
    """predict(): one person per colour: the box around the pixels that are bright in the red,
    and in the green channel; keypoints its top-left and bottom-right corners and centre. The red
    person scores 0.9 on even frames and 0.7 on odd ones, so the people swap places in the score
    order from frame to frame."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(
            name="colours", input_size=(128, 128), num_keypoints=3, sigmas=(0.08, 0.08, 0.05),
            keypoint_names=("a", "b", "c"), skeleton=(), limb_colors=(),
            keypoint_colors=((0, 255, 0),) * 3,
        )  # fmt: skip
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.frames = 0

    def predict(self, images, score_thr=0.1, nms_thr=0.65, max_det=100, backend="auto"):
        out = []
        for image in images:
            found = []
            for channel, score in ((2, 0.9 if self.frames % 2 == 0 else 0.7), (1, 0.8)):
                ys, xs = torch.nonzero(image[channel] > 160, as_tuple=True)
                if ys.numel():
                    box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
                    kpts = torch.stack([box[:2], box[2:], (box[:2] + box[2:]) / 2])
                    found.append((score, box, kpts))
            found.sort(key=lambda f: -f[0])
            self.frames += 1
            out.append(
                {
                    "boxes": torch.stack([f[1] for f in found]).reshape(-1, 4),
                    "scores": torch.tensor([f[0] for f in found]),
                    "keypoints": torch.stack([f[2] for f in found]).reshape(-1, 3, 2),
                    "keypoint_scores": torch.ones(len(found), 3),
                }
            )
        return out


def crossing_frame(t: int) -> np.ndarray:
    """Frame t (128x64) of two 16x40 people, red from the left and green from the right,
    crossing in the middle at t = 16."""
    frame = np.zeros((64, 128, 3), np.uint8)
    red_x, green_x = 8 + 3 * t, 104 - 3 * t
    frame[12:52, red_x : red_x + 16, 2] = 255
    frame[12:52, green_x : green_x + 16, 1] = 255
    return frame


def crossing_video(path: Path, frames: int = 30) -> Path:
    """The first `frames` frames of `crossing_frame` as an MJPG AVI at 25 fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 64))
    for t in range(frames):
        writer.write(crossing_frame(t))
    writer.release()
    return path


def test_ids_follow_two_people_crossing_in_a_video(tmp_path):
    video = crossing_video(tmp_path / "crossing.avi")
    model = RTMO(ColourModel(), device="cpu")
    by_colour: dict[str, set[int]] = {"red": set(), "green": set()}
    count = 0
    for frame, people in model.track(video, smooth="one-euro", batch_size=4):
        count += 1
        assert frame.kind == "video"
        for box, track_id in zip(people.boxes, people.track_ids, strict=True):
            centre = frame.image[int(box[1] + box[3]) // 2, int(box[0] + box[2]) // 2]
            colour = "red" if centre[2] > 160 and centre[1] < 160 else "green"
            if centre[2] > 160 and centre[1] > 160:
                continue  # both at once: the frames where they overlap
            by_colour[colour].add(int(track_id))
    assert count == 30
    assert by_colour == {"red": {1}, "green": {2}}
    record = json.loads(json.dumps(people.to_dict()))
    assert [p["track_id"] for p in record["people"]] == people.track_ids.tolist()


def test_frame_by_frame_tracking_persists_between_calls(model):
    image = content_image(64, 48)
    assert model.track(image).track_ids.tolist() == [1]
    assert model.track(image).track_ids.tolist() == [1]
    # Other settings, or persist=False: a new tracker, ids from 1 again (and the first frame of
    # a tracker gives its people ids at once).
    assert model.track(image, track_buffer=5).track_ids.tolist() == [1]
    model.track(image, persist=False)
    assert model._tracking is None
    with pytest.raises(ValueError, match="no OKS sigmas"):
        RTMO(ContentModel(), device="cpu").track(image)


def test_each_video_starts_without_tracks(tmp_path):
    first = crossing_video(tmp_path / "a.avi", 4)
    second = crossing_video(tmp_path / "b.avi", 4)
    model = RTMO(ColourModel(), device="cpu")
    ids = [set(p.track_ids.tolist()) for _, p in model.track([first, second])]
    assert ids[:4] == [{1, 2}] * 4
    assert ids[4:] == [{3, 4}] * 4  # new people (ids never repeat)


RSS_SCRIPT = textwrap.dedent(
    """
    import dataclasses, resource, sys
    import cv2, numpy as np, torch
    torch.set_num_threads(1)
    from rtmo.config import from_name
    from rtmo.model import RTMOModel
    from rtmo.predictor import RTMO

    path = sys.argv[1]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for t in range(1000):
        frame = np.full((48, 64, 3), t % 200, np.uint8)
        frame[10:40, t % 48 : t % 48 + 12] = 255
        writer.write(frame)
    writer.release()
    torch.manual_seed(0)
    config = dataclasses.replace(from_name("rtmo-t"), input_size=(32, 32))
    model = RTMO(RTMOModel(config), device="cpu", score_thr=0.0, max_det=5)
    peaks = {}
    for frame, people in model.track(path, smooth="one-euro", batch_size=32):
        if frame.index + 1 in (100, 1000):
            peaks[frame.index + 1] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(peaks[100], peaks[1000], frame.index)
    """
)


def test_memory_stays_flat_over_a_long_video(tmp_path):
    """Peak RSS after 1000 frames within 50 MB of the peak after 100 (random-weight RTMO-t at a
    32x32 input, 5 people per frame tracked and smoothed; a process of its own, so nothing else
    moves its peak)."""
    script = tmp_path / "rss.py"
    script.write_text(RSS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "long.avi")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    after_100, after_1000, last = (int(v) for v in result.stdout.split())
    assert last == 999
    assert (after_1000 - after_100) / 1024 < 50  # ru_maxrss is in KiB on Linux
