"""Stop signals (SIGINT, SIGTERM, SIGHUP) during `rtmo predict` on folders and videos: the run ends
with 128 + the signal's number and keeps what is complete (annotated images, the video up to the
last whole frame, the JSON lines of what was done plus a last line marking the file incomplete);
no temporary file is left behind.

In-process with `ContentModel` and the signal sent from inside the second forward pass; then the
real command in a subprocess, RTMO-t with random weights, signalled from outside.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from test_predictor import ContentModel, content_image
from test_video import write_avi

from rtmo import cli
from rtmo.commands import predict
from rtmo.predictor import RTMO

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


@pytest.fixture
def signal_on_second_batch(monkeypatch, request):
    """predict runs ContentModel; its second forward pass sends `request.param` to this process."""
    calls = []

    class SignallingModel(ContentModel):
        def predict(self, images, **kwargs):
            calls.append(len(images))
            if len(calls) == 2:
                os.kill(os.getpid(), request.param)
            return super().predict(images, **kwargs)

    monkeypatch.setattr(
        predict, "build_predictor", lambda args: RTMO(SignallingModel(), device="cpu")
    )
    return request.param


def assert_no_partial_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".partial-" in p.name]


def assert_marked_incomplete(records: list[dict], signum: int) -> None:
    name = signal.Signals(signum).name
    assert records[-1] == {"incomplete": True, "reason": f"interrupted by {name}"}


@pytest.mark.parametrize("signal_on_second_batch", SIGNALS, indirect=True, ids=lambda s: s.name)
def test_signal_during_a_folder_keeps_the_images_done(tmp_path, signal_on_second_batch, capsys):
    signum = signal_on_second_batch
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"img{i}.png"), content_image(40, 30, seed=i))
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--random-weights", "--out", str(out), "--json"]
    status = cli.main([*argv, "--batch-size", "2"])
    err = capsys.readouterr().err
    assert status == 128 + signum
    assert f"interrupted ({signal.Signals(signum).name})" in err
    assert "Traceback" not in err
    records = read_jsonl(out / "photos.jsonl")
    assert [Path(r["file"]).name for r in records[:-1]] == ["img0.png", "img1.png"]
    assert_marked_incomplete(records, signum)
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "photos.jsonl"]
    assert cv2.imread(str(out / "img1.png")).shape == (30, 40, 3)
    # The handlers of the run are gone: the previous ones are back.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("signal_on_second_batch", SIGNALS, indirect=True, ids=lambda s: s.name)
def test_signal_during_a_video_keeps_the_whole_frames(tmp_path, signal_on_second_batch, capsys):
    signum = signal_on_second_batch
    video = write_avi(tmp_path / "clip.avi", 8)
    out = tmp_path / "out"
    argv = ["predict", str(video), "--random-weights", "--out", str(out), "--json"]
    status = cli.main([*argv, "--batch-size", "3"])
    assert status == 128 + signum
    records = read_jsonl(out / "clip.jsonl")
    assert [r["frame"] for r in records[:-1]] == [0, 1, 2]
    assert_marked_incomplete(records, signum)
    assert frame_count(out / "clip.mp4") == 3
    assert_no_partial_files(out)


def test_signal_while_the_model_loads_leaves_nothing(tmp_path, monkeypatch, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), content_image(40, 30))

    def load_and_get_stopped(args):
        os.kill(os.getpid(), signal.SIGTERM)
        return RTMO(ContentModel(), device="cpu")

    monkeypatch.setattr(predict, "build_predictor", load_and_get_stopped)
    out = tmp_path / "new" / "out"
    status = cli.main(["predict", str(tmp_path / "a.png"), "--random-weights", "--out", str(out)])
    assert status == 128 + signal.SIGTERM
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------------------
# The real command, signalled from outside.


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from checkpoints import write_published_checkpoint

    from rtmo.config import from_name
    from rtmo.model import RTMOModel

    model = RTMOModel(from_name("rtmo-t")).eval()
    return write_published_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "rtmo-t.pth")


def long_video(path: Path, num_frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(num_frames):
        writer.write(content_image(64, 48, seed=i % 7))
    writer.release()
    return path


def start_rtmo(*argv) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        # One torch thread: on a busy machine 2-thread OpenMP regions stall on every barrier.
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "rtmo", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the command made no progress"
        time.sleep(0.05)


def test_sigterm_during_a_video_keeps_the_frames_done(tmp_path, checkpoint):
    video = long_video(tmp_path / "clip.avi", 300)
    out = tmp_path / "out"
    process = start_rtmo("predict", video, "--checkpoint", checkpoint, "--out", out, "--json",
                         "--batch-size", "1", "--max-det", "2")  # fmt: skip
    jsonl = out / f".clip.partial-{process.pid}.jsonl"
    wait_for(lambda: jsonl.exists() and jsonl.read_text().count("\n") >= 2, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err
    assert "Traceback" not in err
    records = read_jsonl(out / "clip.jsonl")
    done = [r["frame"] for r in records[:-1]]
    assert done == list(range(len(done)))
    assert 2 <= len(done) < 300
    assert_marked_incomplete(records, signal.SIGTERM)
    assert frame_count(out / "clip.mp4") == len(done)
    assert_no_partial_files(out)


def test_ctrl_c_during_a_folder_keeps_the_images_done(tmp_path, checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(200):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), content_image(64, 48, seed=i))
    out = tmp_path / "out"
    process = start_rtmo("predict", folder, "--checkpoint", checkpoint, "--out", out, "--json",
                         "--batch-size", "1", "--max-det", "2")  # fmt: skip
    wait_for(lambda: out.exists() and len(list(out.glob("img*.png"))) >= 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, err
    records = read_jsonl(out / "photos.jsonl")
    done = [Path(r["file"]).name for r in records[:-1]]
    assert done == [f"img{i:03d}.png" for i in range(len(done))]
    assert len(done) < 200
    assert_marked_incomplete(records, signal.SIGINT)
    assert sorted(p.name for p in out.glob("img*.png")) == done
    assert_no_partial_files(out)
