"""The command line's error paths: every subcommand with every bad value gets exit status 2, a
message naming the option and the allowed range, no traceback and no file left behind; outputs
never overwrite inputs; the parser starts without torch; OpenCV's own log lines stay quiet.

In-process (`rtmo.cli.main`) with `ContentModel` in place of the network where a run gets that far.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from test_predictor import ContentModel, content_image
from test_video import write_avi

from rtmo import cli
from rtmo.commands import predict
from rtmo.predictor import RTMO

ROOT = Path(__file__).resolve().parents[1]
GPU = torch.cuda.is_available()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with one image, one video and a text file; the commands run inside it."""
    cv2.imwrite(str(tmp_path / "photo.png"), content_image(64, 48))
    write_avi(tmp_path / "clip.avi", 3)
    (tmp_path / "notes.txt").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fake_predictor(monkeypatch):
    """predict runs ContentModel, whatever --checkpoint / --random-weights say."""
    monkeypatch.setattr(predict, "build_predictor", lambda args: RTMO(ContentModel(), device="cpu"))


def files_under(folder: Path) -> dict[str, str]:
    """Every file below `folder` with the md5 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of `rtmo ARGV` (argparse's errors exit through SystemExit)."""
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A torch.save file whose unpickling would create `marker` through os.system."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    return path


PREDICT = ["predict", "photo.png", "--random-weights"]
EXPORT = ["export", "--checkpoint", "model.pth", "--out", "model.onnx"]
BAD_VALUES = [
    # (argv, message)
    ([*PREDICT, "--score-thr", "-1"], "argument --score-thr: must be in [0, 1), got -1"),
    ([*PREDICT, "--score-thr", "1"], "argument --score-thr: must be in [0, 1), got 1"),
    ([*PREDICT, "--score-thr", "nan"], "argument --score-thr: must be in [0, 1), got nan"),
    ([*PREDICT, "--score-thr", "high"], "argument --score-thr: must be a number in [0, 1)"),
    ([*PREDICT, "--nms-thr", "-0.5"], "argument --nms-thr: must be in (0, 1], got -0.5"),
    ([*PREDICT, "--kpt-thr", "-3"], "argument --kpt-thr: must be in [0, 1], got -3"),
    ([*PREDICT, "--max-det", "0"], "argument --max-det: must be at least 1, got 0"),
    ([*PREDICT, "--batch-size", "-2"], "argument --batch-size: must be at least 1, got -2"),
    ([*PREDICT, "--batch-size", "2.5"], "argument --batch-size: must be an int >= 1, got '2.5'"),
    ([*PREDICT, "--model", "rtmo-zz"], "argument --model: unknown RTMO variant 'rtmo-zz'"),
    ([*PREDICT, "--device", "gpu"], "argument --device: must be cpu, cuda or cuda:N, got 'gpu'"),
    ([*PREDICT, "--dtype", "fp64"], "argument --dtype: invalid choice: 'fp64'"),
    (
        [*PREDICT, "--backend", "bogus"],
        "--backend must be one of auto, reference, cpu, cuda, triton, got 'bogus'",
    ),
    ([*EXPORT, "--opset", "11"], "--opset must be at least 14, got 11"),
    ([*EXPORT, "--score-thr", "-1"], "argument --score-thr: must be in [0, 1), got -1"),
    ([*EXPORT, "--nms-thr", "1.5"], "argument --nms-thr: must be in (0, 1], got 1.5"),
    ([*EXPORT, "--max-det", "0"], "argument --max-det: must be at least 1, got 0"),
    ([*EXPORT, "--input-size", "100"], "sides must be positive multiples of 32, got '100'"),
    ([*EXPORT, "--model", "rtmo-zz"], "argument --model: unknown RTMO variant 'rtmo-zz'"),
    (["export", "--out", "model.onnx"], "the following arguments are required: --checkpoint"),
    (["info", "--verbose"], "unrecognized arguments: --verbose"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
]
if not GPU:
    BAD_VALUES += [
        ([*PREDICT, "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
        ([*PREDICT, "--backend", "cuda"], "--backend cuda is not available here"),
    ]


# A CPU without native bfloat16 (the features torch reports are replaced in the test).
CPU_PRECISION_ERRORS = [
    ([*PREDICT, "--device", "cpu", "--dtype", "fp16"], "--dtype fp16 runs on a CUDA device only"),
    ([*PREDICT, "--device", "cpu", "--dtype", "bf16"], "--dtype bf16: this CPU has no native"),
]


@pytest.mark.parametrize(("argv", "message"), CPU_PRECISION_ERRORS)
def test_cpu_precision_errors_exit_2_naming_dtype(workdir, capsys, monkeypatch, argv, message):
    from rtmo import precision

    monkeypatch.setattr(precision, "cpu_features", lambda: frozenset({"avx2"}))
    status, err = run_main(argv, capsys)
    assert status == cli.EXIT_USAGE, err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_option_values_exit_2_naming_the_option(workdir, capsys, argv, message):
    (workdir / "model.pth").write_bytes(b"\x80\x02 not loaded: the option check comes first")
    before = files_under(workdir)
    status, err = run_main(argv, capsys)
    assert status == cli.EXIT_USAGE, err
    assert message in err
    assert "Traceback" not in err
    assert "run with --debug" not in err
    assert files_under(workdir) == before


def test_python_names_are_not_used_on_the_command_line(workdir, capsys):
    _, err = run_main([*PREDICT, "--score-thr", "-1"], capsys)
    assert "score_thr" not in err


@pytest.mark.parametrize("kind", ["image", "video"])
def test_output_into_the_input_folder_never_overwrites_the_input(workdir, capsys, kind):
    source = "photo.png" if kind == "image" else "clip.mp4"
    if kind == "video":
        (workdir / "clip.avi").rename(workdir / "clip.mp4")
    before = files_under(workdir)
    status, err = run_main(["predict", source, "--random-weights", "--out", "."], capsys)
    assert status == cli.EXIT_USAGE
    assert f"would overwrite the input {source}" in err
    assert files_under(workdir) == before


def test_the_same_folder_is_fine_when_nothing_is_overwritten(workdir, capsys, fake_predictor):
    status, err = run_main(["predict", "photo.png", "--random-weights", "--out", ".", "--no-save",
                            "--json"], capsys)  # fmt: skip
    assert status == cli.EXIT_OK, err
    assert json.loads((workdir / "photo.jsonl").read_text())["file"] == "photo.png"


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("notes.txt", "--out notes.txt: cannot use it as the output folder (notes.txt exists and "
         "is not a folder)"),
        ("/proc/rtmo-out", "--out /proc/rtmo-out: cannot use it as the output folder"),
        ("notes.txt/sub", "--out notes.txt/sub: cannot use it as the output folder"),
    ],
)  # fmt: skip
def test_unusable_output_folder_is_named_before_loading(workdir, capsys, monkeypatch, out, message):
    loads = []
    monkeypatch.setattr(predict, "build_predictor", lambda args: loads.append(args))
    before = files_under(workdir)
    status, err = run_main([*PREDICT, "--out", out], capsys)
    assert status == cli.EXIT_USAGE
    assert message in err
    assert loads == []
    assert files_under(workdir) == before


def test_unopenable_video_leaves_no_output_folder(workdir, capsys, monkeypatch):
    (workdir / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    loads = []
    monkeypatch.setattr(predict, "build_predictor", lambda args: loads.append(args))
    status, err = run_main(["predict", "broken.mp4", "--random-weights", "--out", "a/b"], capsys)
    assert status == cli.EXIT_USAGE
    assert "broken.mp4: cannot open video" in err
    assert loads == []
    assert not (workdir / "a").exists()


def test_a_failed_load_leaves_no_output_folder(workdir, capsys):
    (workdir / "model.pth").write_bytes(b"PK\x03\x04 not a zip")
    argv = ["predict", "photo.png", "--checkpoint", "model.pth", "--out", "deep/out"]
    status, err = run_main(argv, capsys)
    assert status == cli.EXIT_USAGE
    assert "model.pth is truncated or corrupt" in err
    assert not (workdir / "deep").exists()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_pickled_code_is_refused_naming_the_global_and_the_option(workdir, capsys, command):
    marker = workdir / "pwned"
    malicious_checkpoint(workdir / "model.pth", marker)
    argv = {
        "predict": ["predict", "photo.png", "--checkpoint", "model.pth"],
        "export": ["export", "--checkpoint", "model.pth", "--out", "m.onnx"],
    }[command]
    status, err = run_main(argv, capsys)
    assert status == cli.EXIT_USAGE
    assert "contains pickled objects other than tensors and numpy arrays" in err
    assert "refused: posix.system" in err
    assert "--trust-checkpoint" in err
    assert not marker.exists()
    assert "Traceback" not in err


def test_trust_checkpoint_is_an_option_of_every_loading_command():
    parser = cli.build_parser()
    for argv in (["predict", "x.png"], ["export", "--checkpoint", "m.pth", "--out", "m.onnx"]):
        assert parser.parse_args([*argv, "--trust-checkpoint"]).trust_checkpoint is True


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ("missing.pth", "--checkpoint missing.pth: no such checkpoint file"),
        ("rtmo-s", "--checkpoint rtmo-s: that is a model name, not a file. Download its "
         "checkpoint from https://download.openmmlab.com/"),
    ],
)  # fmt: skip
def test_checkpoint_that_is_not_a_file(workdir, capsys, checkpoint, message):
    status, err = run_main(["predict", "photo.png", "--checkpoint", checkpoint], capsys)
    assert status == cli.EXIT_USAGE
    assert message in err


def test_folder_jsonl_keeps_input_order_with_errors_inside_a_batch(workdir, capsys, fake_predictor):
    folder = workdir / "photos"
    folder.mkdir()
    for name in ("a.png", "c.png", "e.png"):
        cv2.imwrite(str(folder / name), content_image(40, 30))
    for name in ("b.jpg", "d.jpg"):
        (folder / name).write_bytes(b"\xff\xd8\xff broken")
    argv = ["predict", "photos", "--random-weights", "--json", "--batch-size", "5"]
    status, _ = run_main(argv, capsys)
    assert status == cli.EXIT_FAILED
    lines = [json.loads(line) for line in Path("rtmo-output/photos.jsonl").read_text().splitlines()]
    assert [Path(r["file"]).name for r in lines] == ["a.png", "b.jpg", "c.png", "d.jpg", "e.png"]
    assert ["error" in r for r in lines] == [False, True, False, True, False]


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_help_version_and_the_parsers_import_no_torch():
    done = run_python(
        "import sys, contextlib, io\n"
        "from rtmo import cli\n"
        "for argv in (['--help'], ['--version'], ['predict', '--help'], ['info', '--help'],\n"
        "             ['export', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            cli.main(argv)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (argv, e.code)\n"
        "    assert out.getvalue(), argv\n"
        "parser = cli.build_parser()\n"
        "parser.parse_args(['predict', 'x.png', '--model', 'rtmo-s', '--score-thr', '0.5'])\n"
        "print(sorted(m for m in ('torch', 'cv2', 'numpy') if m in sys.modules))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_version():
    done = run_python("from rtmo import cli; cli.main(['--version'])")
    assert done.stdout.strip() == f"rtmo {__import__('rtmo').__version__}"


def test_opencv_log_lines_are_silenced_where_we_report_the_error(tmp_path):
    """A camera that does not exist and an mp4 without its index: OpenCV and FFmpeg would print
    "[ WARN:0@0.01] ... can't open camera by index" and "moov atom not found" before our message."""
    writer = cv2.VideoWriter(str(tmp_path / "ok.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 32))
    for level in range(3):
        writer.write(content_image(32, 32, seed=level))
    writer.release()
    data = (tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "no_index.mp4").write_bytes(data[: data.find(b"moov") - 4])
    done = run_python(
        "import sys\n"
        "from rtmo.sources import SourceError, read_image\n"
        "from rtmo.video import VideoReader\n"
        f"for source in (97, {str(tmp_path / 'no_index.mp4')!r}):\n"
        "    try:\n"
        "        VideoReader(source)\n"
        "    except SourceError as err:\n"
        "        print(err, file=sys.stderr)\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["97: cannot open camera", f"{tmp_path / 'no_index.mp4'}: cannot open video"]
