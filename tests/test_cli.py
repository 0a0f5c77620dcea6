"""The `rtmo` command: predict on images, folders and videos, JSON lines, info, and error paths.

In-process tests call `rtmo.cli.main` with `ContentModel` (tests/test_predictor.py) in place of the
network; the subprocess tests at the end run the real command on RTMO-t with random weights.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_predictor import ContentModel, content_image
from test_video import damage_frame, write_avi

from rtmo import cli
from rtmo.commands import predict
from rtmo.predictor import RTMO


@pytest.fixture
def fake_predictor(monkeypatch):
    """predict runs ContentModel, whatever --checkpoint / --random-weights say."""
    built = []

    def build(args):
        built.append(args)
        return RTMO(ContentModel(), device="cpu", score_thr=args.score_thr)

    monkeypatch.setattr(predict, "build_predictor", build)
    return built


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_with_a_corrupt_file_processes_the_rest(tmp_path, fake_predictor, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, size in enumerate([(64, 48), (30, 90), (120, 80)]):
        cv2.imwrite(str(folder / f"img{i}.png"), content_image(*size, seed=i))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "notes.txt").write_text("not an image, ignored")
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--random-weights", "--out", str(out), "--json"]
    status = cli.main([*argv, "--batch-size", "2"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_FAILED
    assert "broken.jpg: cannot decode image" in err
    assert "3 processed" in err
    assert "1 failed" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "img0.png",
        "img1.png",
        "img2.png",
        "photos.jsonl",
    ]
    assert cv2.imread(str(out / "img1.png")).shape == (90, 30, 3)
    records = read_jsonl(out / "photos.jsonl")
    assert [Path(r["file"]).name for r in records] == [
        "broken.jpg",
        "img0.png",
        "img1.png",
        "img2.png",
    ]
    assert "error" in records[0]
    for record in records[1:]:
        assert set(record) == {"file", "width", "height", "people"}
        assert len(record["people"]) == 1
        person = record["people"][0]
        assert set(person) == {"bbox", "score", "keypoints", "keypoint_scores"}
        assert np.asarray(person["keypoints"]).shape == (3, 2)
    assert (records[2]["width"], records[2]["height"]) == (30, 90)


def test_video_keeps_frame_order_and_reports_damaged_frames(tmp_path, fake_predictor, capsys):
    video = write_avi(tmp_path / "clip.avi", 6)
    damage_frame(video, 2)
    out = tmp_path / "out"
    status = cli.main(
        [
            "predict",
            str(video),
            "--random-weights",
            "--out",
            str(out),
            "--json",
            "--batch-size",
            "4",
        ]
    )
    err = capsys.readouterr().err
    assert status == cli.EXIT_FAILED
    assert "frame 2 cannot be decoded" in err
    records = read_jsonl(out / "clip.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4, 5]  # the error in its place
    assert [i for i, r in enumerate(records) if "error" in r] == [2]
    written = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl", "clip.mp4"]


def test_interrupted_video_keeps_the_frames_done(tmp_path, fake_predictor, monkeypatch, capsys):
    video = write_avi(tmp_path / "clip.avi", 6)
    calls = []

    def interrupt_on_second_batch(self, prepared, *thresholds):
        calls.append(len(prepared.letterboxes))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, prepared, *thresholds)

    # Streams run the network on batches their reading thread prepared.
    original = RTMO._predict_prepared
    monkeypatch.setattr(RTMO, "_predict_prepared", interrupt_on_second_batch)
    out = tmp_path / "out"
    status = cli.main(
        [
            "predict",
            str(video),
            "--random-weights",
            "--out",
            str(out),
            "--json",
            "--batch-size",
            "2",
        ]
    )
    assert status == cli.EXIT_INTERRUPTED
    assert "interrupted (SIGINT)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl", "clip.mp4"]
    records = read_jsonl(out / "clip.jsonl")
    assert [r.get("frame") for r in records[:-1]] == [0, 1]
    assert records[-1] == {"incomplete": True, "reason": "interrupted by SIGINT"}
    written = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 2


class FakeCamera:
    """A webcam that delivers frames until it is closed."""

    def __init__(self, source):
        assert source == 7
        self.fps, self.frame_count, self.unreadable = 15.0, None, []

    def __iter__(self):
        i = 0
        while True:
            yield i, content_image(64, 48, seed=i)
            i += 1

    def close(self):
        pass


def test_ctrl_c_ends_a_webcam_stream_and_keeps_the_recording(
    tmp_path, fake_predictor, monkeypatch, capsys
):
    import rtmo.stream
    import rtmo.video

    calls = []
    original = RTMO._predict_prepared

    def ctrl_c_on_third_frame(self, prepared, *thresholds):
        calls.append(len(prepared.letterboxes))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, prepared, *thresholds)

    monkeypatch.setattr(rtmo.stream, "VideoReader", FakeCamera)
    monkeypatch.setattr(rtmo.video, "VideoReader", FakeCamera)  # the camera is opened up front
    monkeypatch.setattr(RTMO, "_predict_prepared", ctrl_c_on_third_frame)
    out = tmp_path / "out"
    argv = ["predict", "7", "--random-weights", "--out", str(out), "--json", "--batch-size", "2"]
    status = cli.main(argv)
    assert status == cli.EXIT_OK, capsys.readouterr().err
    assert calls == [1, 1, 1]  # a live stream goes frame by frame, whatever --batch-size
    assert [r["frame"] for r in read_jsonl(out / "webcam7.jsonl")] == [0, 1]
    written = cv2.VideoCapture(str(out / "webcam7.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 2


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda d: d / "missing.jpg", "missing.jpg: no such file or directory"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "folder has no images"),
        (
            lambda d: (d / "data.csv").write_text("a,b") and d / "data.csv",
            "unsupported source '.csv'",
        ),
    ],
)
def test_unusable_sources_are_named_without_traceback(tmp_path, capsys, make_source, message):
    status = cli.main(["predict", str(make_source(tmp_path)), "--random-weights"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert message in err
    assert "Traceback" not in err


def test_predict_without_checkpoint_says_where_to_get_one(tmp_path, capsys):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), content_image(8, 8))
    assert cli.main(["predict", str(image)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "no --checkpoint given" in err
    assert "https://download.openmmlab.com/mmpose/v1/projects/rtmo/" in err
    assert "--random-weights" in err
    status = cli.main(["predict", str(image), "--checkpoint", "x.pth", "--random-weights"])
    assert status == cli.EXIT_USAGE
    assert "not both" in capsys.readouterr().err


def test_missing_checkpoint_is_named(tmp_path, capsys):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), content_image(8, 8))
    status = cli.main(["predict", str(image), "--checkpoint", str(tmp_path / "none.pth")])
    err = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert "none.pth: no such checkpoint file" in err
    assert "Traceback" not in err


def test_output_folder_may_not_be_the_source_folder(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), content_image(8, 8))
    status = cli.main(["predict", str(tmp_path), "--random-weights", "--out", str(tmp_path)])
    assert status == cli.EXIT_USAGE
    assert "would overwrite the input" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    from rtmo.sources import SourceError

    with pytest.raises(SourceError):
        cli.main(["--debug", "predict", str(tmp_path / "missing.jpg"), "--random-weights"])
    with pytest.raises(SourceError):
        cli.main(["predict", str(tmp_path / "missing.jpg"), "--random-weights", "--debug"])


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", "x.jpg", "--batch-size", "0"])
    assert exc.value.code == cli.EXIT_USAGE
    assert "must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([])


def test_info_lists_versions_backends_and_devices(capsys):
    assert cli.main(["info"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    for expected in (
        "rtmo 0.1.0",
        "torch ",
        "kernel backends:",
        "reference",
        "triton",
        "rtmo_kernels._C built",
        "devices:",
        "cpu:",
    ):
        assert expected in out


def test_subcommands_come_from_the_registry():
    names = [c.name for c in cli.COMMANDS]
    assert names[:2] == ["predict", "info"]
    parser = cli.build_parser()
    assert parser.parse_args(["info"]).run is cli.COMMANDS[1].run


# ------------------------------------------------------------------------------------------------
# The real command in a subprocess (each one imports torch: keep them few), RTMO-t random weights.


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from checkpoints import write_published_checkpoint

    from rtmo.config import from_name
    from rtmo.model import RTMOModel

    model = RTMOModel(from_name("rtmo-t")).eval()
    return write_published_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "rtmo-t.pth")


def run_rtmo(*argv):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "rtmo", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )


def test_command_on_an_image(tmp_path, checkpoint):
    from matplotlib import cbook

    photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    out = tmp_path / "out"
    done = run_rtmo(
        "predict", photo, "--checkpoint", checkpoint, "--out", out, "--json", "--max-det", "3"
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["grace_hopper.jpg", "grace_hopper.jsonl"]
    assert cv2.imread(str(out / "grace_hopper.jpg")).shape == cv2.imread(str(photo)).shape
    (record,) = read_jsonl(out / "grace_hopper.jsonl")
    assert record["file"] == str(photo)
    assert (record["width"], record["height"]) == (512, 600)
    assert 1 <= len(record["people"]) <= 3
    for person in record["people"]:
        assert np.asarray(person["keypoints"]).shape == (17, 2)
        assert len(person["keypoint_scores"]) == 17
        assert len(person["bbox"]) == 4


def test_command_on_a_folder_with_a_corrupt_file(tmp_path, checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), content_image(64, 48))
    cv2.imwrite(str(folder / "b.jpg"), content_image(40, 90))
    (folder / "c.jpg").write_bytes(b"\xff\xd8\xff truncated")
    out = tmp_path / "out"
    done = run_rtmo(
        "predict",
        folder,
        "--checkpoint",
        checkpoint,
        "--out",
        out,
        "--json",
        "--batch-size",
        "2",
        "--max-det",
        "2",
    )
    assert done.returncode == cli.EXIT_FAILED
    assert "Traceback" not in done.stderr
    assert "c.jpg: cannot decode image" in done.stderr
    assert "2 processed" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg", "in.jsonl"]
    assert [Path(r["file"]).name for r in read_jsonl(out / "in.jsonl")] == [
        "a.png",
        "b.jpg",
        "c.jpg",
    ]


def test_command_on_a_video(tmp_path, checkpoint):
    video = write_avi(tmp_path / "walk.avi", 5)
    out = tmp_path / "out"
    done = run_rtmo(
        "predict",
        video,
        "--checkpoint",
        checkpoint,
        "--out",
        out,
        "--json",
        "--batch-size",
        "3",
        "--max-det",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert [r["frame"] for r in read_jsonl(out / "walk.jsonl")] == [0, 1, 2, 3, 4]
    written = cv2.VideoCapture(str(out / "walk.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (
        int(written.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(written.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    ) == (64, 48)
