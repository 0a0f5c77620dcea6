"""`rtmo predict` with several sources and globs, --track / --smooth, --csv, --save-crops, --show
without a display, the summary line and the output codec; `rtmo models`; the usage errors of
these options (exit status 2)."""

import csv
import json

import cv2
import pytest
from test_predictor import ContentModel, content_image
from test_stream import ColourModel, crossing_frame, crossing_video

from rtmo import cli
from rtmo.commands import predict
from rtmo.predictor import RTMO


@pytest.fixture
def colour_predictor(monkeypatch):
    """predict runs ColourModel (one person per colour), whatever the weights options say."""
    monkeypatch.setattr(predict, "build_predictor", lambda args: RTMO(ColourModel(), device="cpu"))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_several_sources_and_globs_in_one_call(tmp_path, colour_predictor, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.png"), crossing_frame(i))
    video = crossing_video(tmp_path / "walk.avi", 6)
    out = tmp_path / "out"
    argv = ["predict", str(photos / "*.png"), str(video), "--random-weights", "--out", str(out)]
    status = cli.main([*argv, "--json", "--csv", "--save-crops", "--batch-size", "4"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_OK, err
    assert sorted(p.name for p in out.iterdir()) == [
        "crops", "p0.png", "p1.png", "photos.csv", "photos.jsonl", "walk.csv", "walk.jsonl",
        "walk.mp4",
    ]  # fmt: skip
    assert [r["frame"] for r in read_jsonl(out / "walk.jsonl")] == list(range(6))
    rows = list(csv.reader((out / "walk.csv").open()))
    assert rows[0][:7] == ["frame", "person", "score", "x1", "y1", "x2", "y2"]
    assert rows[0][7:10] == ["a_x", "a_y", "a_score"]
    assert len(rows) == 1 + 12  # two people in each of 6 frames
    assert len(list((out / "crops" / "walk").iterdir())) == 12
    assert "video codec" in err
    summary = [line for line in err.splitlines() if "processed in" in line][-1]
    assert "8 processed" in summary
    assert "images/s; per image: preprocess" in summary
    assert "inference" in summary
    assert "postprocess" in summary


def test_track_gives_ids_in_jsonl_csv_crops_and_video(tmp_path, colour_predictor, capsys):
    video = crossing_video(tmp_path / "walk.avi", 30)
    out = tmp_path / "out"
    argv = ["predict", str(video), "--random-weights", "--out", str(out), "--json", "--csv"]
    argv += ["--track", "--track-buffer", "10", "--smooth", "one-euro", "--save-crops"]
    assert cli.main([*argv, "--smooth-min-cutoff", "0.5", "--smooth-beta", "2"]) == cli.EXIT_OK
    records = read_jsonl(out / "walk.jsonl")
    assert len(records) == 30
    ids = [sorted(p["track_id"] for p in r["people"]) for r in records]
    assert ids == [[1, 2]] * 30
    rows = list(csv.reader((out / "walk.csv").open()))
    assert rows[0][:3] == ["frame", "person", "track_id"]
    assert {row[2] for row in rows[1:]} == {"1", "2"}
    crops = sorted(p.name for p in (out / "crops" / "walk").iterdir())
    assert crops[:2] == ["000000_id1.jpg", "000000_id2.jpg"]
    assert cv2.VideoCapture(str(out / "walk.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 30


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--smooth", "one-euro"], "--smooth needs --track"),
        (["--track-buffer", "5"], "--track-buffer needs --track"),
        (["--track", "--smooth-beta", "1"], "--smooth-beta needs --smooth one-euro"),
        (["--track", "--track-buffer", "-1"], "--track-buffer: must be at least 0"),
        (["--track", "--smooth", "kalman"], "--smooth: invalid choice"),
        (["--track", "--smooth", "one-euro", "--smooth-min-cutoff", "0"], "--smooth-min-cutoff"),
    ],
)
def test_tracking_options_are_checked(tmp_path, capsys, options, message):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), content_image(8, 8))
    try:
        status = cli.main(["predict", str(image), "--random-weights", *options])
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert message in err
    assert "Traceback" not in err


def test_a_pattern_matching_nothing_and_a_dead_camera_exit_2(tmp_path, monkeypatch, capsys):
    built = []
    monkeypatch.setattr(
        predict, "build_predictor", lambda args: built.append(1) or RTMO(ContentModel())
    )
    status = cli.main(["predict", str(tmp_path / "*.jpg"), "--random-weights"])
    assert status == cli.EXIT_USAGE
    assert "*.jpg: no file matches this pattern" in capsys.readouterr().err
    assert built == []  # refused before any model is built
    status = cli.main(["predict", "99", "--random-weights", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert "99: cannot open camera" in err
    assert "Traceback" not in err
    assert built == []  # the camera is opened before the model loads


def test_show_without_a_display_is_skipped(tmp_path, colour_predictor, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    video = crossing_video(tmp_path / "walk.avi", 3)
    status = cli.main(["predict", str(video), "--random-weights", "--no-save", "--show"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_OK
    assert "--show skipped: no display" in err
    assert "3 processed" in err


def test_models_lists_every_variant(capsys):
    assert cli.main(["models"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "rtmo-t-body7" in out
    assert "6.8 M" in out  # RTMO-t's parameters
    assert "416x416" in out
    assert "14 (CrowdPose)" in out
    assert "rtmo-l_16xb16-700e_body7-crowdpose-640x640-5bafdc11_20231219.pth" in out
