"""`rtmo predict --ray` and `rtmo.distributed.predict_dataset` on a local Ray with 2 CPU workers,
against the single-process `rtmo predict` on the same 40 images (+ 2 corrupt ones) and a short
video with a damaged frame, RTMO-t with random weights.

One Ray for the module; the single-process run and the Ray run are made once and compared by
several tests. Each Ray job starts its workers anew (a few seconds each): the jobs are few.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
from checkpoints import write_published_checkpoint
from test_predictor import content_image
from test_video import damage_frame, write_avi

from rtmo import cli
from rtmo.config import from_name
from rtmo.distributed import predict_dataset
from rtmo.distributed.blocks import plan_blocks
from rtmo.distributed.worker import FAULT_ENV
from rtmo.model import RTMOModel
from rtmo.results import Poses

ROOT = Path(__file__).resolve().parents[1]
# Blocks of 8 images or frames in batches of 4: the batches are those of the single-process run,
# so that the two runs compute the same numbers (a batch's size can change the last bits).
BATCH, BLOCK = "4", "8"
SETTINGS = ["--batch-size", BATCH, "--max-det", "5"]


@pytest.fixture(scope="module")
def local_ray():
    """Ray on this machine for the module; its workers (which inherit this environment) import
    rtmo from this checkout."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    if saved is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(sources, checkpoint): a folder of 40 small images and 2 corrupt ones, and a 12-frame
    video whose frame 5 is damaged; RTMO-t random weights as a published checkpoint."""
    root = tmp_path_factory.mktemp("inputs")
    photos = root / "photos"
    photos.mkdir()
    for i in range(40):
        image = content_image(48 + 4 * (i % 7), 40 + 6 * (i % 5), seed=i)
        cv2.imwrite(str(photos / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"), image)
    (photos / "img03b.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (photos / "img21b.png").write_bytes((photos / "img21.png").read_bytes()[:60])
    video = write_avi(root / "walk.avi", 12)
    damage_frame(video, 5)
    model = RTMOModel(from_name("rtmo-t")).eval()
    checkpoint = write_published_checkpoint(model, root / "rtmo-t.pth")
    return [str(photos), str(video)], checkpoint


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.fixture(scope="module")
def single_process(inputs, tmp_path_factory):
    """The records of `rtmo predict --json` by (source, frame): frame None for images.

    Run on one thread, as each Ray worker with one CPU runs: float32 convolutions sum in an order
    that follows the thread count (on two threads, 3 of the 54 records differed by 0.001 px in
    the last decimal kept)."""
    sources, checkpoint = inputs
    out = tmp_path_factory.mktemp("single")
    argv = ["predict", *sources, "--checkpoint", checkpoint, "--out", out, "--json", "--no-save"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status = cli.main([str(a) for a in [*argv, "--device", "cpu", *SETTINGS]])
    finally:
        torch.set_num_threads(threads)
    assert status == cli.EXIT_FAILED
    records = {}
    for line in (out / "photos.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[(record.pop("file"), None)] = record
    for line in (out / "walk.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[(sources[1], record.pop("frame"))] = record
    return records


def ray_argv(inputs, out) -> list:
    sources, checkpoint = inputs
    return ["predict", *sources, "--checkpoint", checkpoint, "--out", out, "--ray", *SETTINGS]


@pytest.fixture(scope="module")
def ray_run(local_ray, inputs, tmp_path_factory):
    """`rtmo predict --ray` with 2 workers: (exit status, stderr, output folder)."""
    out = tmp_path_factory.mktemp("ray") / "poses"
    argv = [*ray_argv(inputs, out), "--num-workers", "2", "--block-size", BLOCK]
    status = cli.main([str(a) for a in argv])
    return status, out


def parquet_records(folder: Path) -> list[tuple[tuple[str, int | None], dict]]:
    """(source, frame) and the record `rtmo predict --json` writes, for every row of the Parquet
    files in `folder`: the float32 values rounded by `Poses.to_dict`."""
    table = pq.read_table(folder)
    records = []
    for row in table.to_pylist():
        key = (row["source"], row["frame"])
        if row["error"] is not None:
            records.append((key, {"error": row["error"]}))
            continue
        people = row["people"]
        poses = Poses(
            np.array([p["bbox"] for p in people], np.float32).reshape(-1, 4),
            np.array([p["score"] for p in people], np.float32),
            np.array([p["keypoints"] for p in people], np.float32).reshape(len(people), -1, 2),
            np.array([p["keypoint_scores"] for p in people], np.float32).reshape(len(people), -1),
            (row["width"], row["height"]),
        )
        records.append((key, poses.to_dict()))
    return records


def jsonl_records(folder: Path) -> list[tuple[tuple[str, int | None], dict]]:
    records = []
    for path in sorted(folder.glob("part-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            records.append(((record.pop("source"), record.pop("frame")), record))
    return records


def test_rows_are_those_of_a_single_process_run_each_once(ray_run, inputs, single_process):
    status, out = ray_run
    assert status == cli.EXIT_FAILED  # the corrupt images and the damaged frame
    records = parquet_records(out)
    assert len(records) == len(single_process) == 42 + 12
    assert dict(records) == single_process
    # in input order: the files' names sort in block order, each file's rows follow the input
    assert [key for key, _ in records] == list(single_process)
    photos, video = inputs[0]
    errors = [key for key, record in records if "error" in record]
    assert errors == [(f"{photos}/img03b.jpg", None), (f"{photos}/img21b.png", None), (video, 5)]
    assert sum(len(record.get("people", [])) for _, record in records) > 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_rtmo_job.json", *(f"part-{i:08d}.parquet" for i in range(8))]


def test_a_worker_failing_mid_block_still_gives_every_row_once(
    local_ray, inputs, single_process, tmp_path, monkeypatch
):
    video, checkpoint = inputs[0][1], inputs[1]
    marker = tmp_path / "fail-once"
    marker.touch()
    monkeypatch.setenv(FAULT_ENV, str(marker))
    summary = predict_dataset(
        video, checkpoint, tmp_path / "poses", num_workers=2, batch_size=int(BATCH),
        block_size=int(BLOCK), max_det=5, output_format="jsonl",
    )  # fmt: skip
    assert not marker.exists()  # the fault was raised, in the second batch of a block
    records = jsonl_records(tmp_path / "poses")
    assert len(records) == len({key for key, _ in records}) == summary.rows == 12
    assert dict(records) == {key: r for key, r in single_process.items() if key[0] == video}
    assert (summary.written, summary.skipped, summary.errors) == (2, 0, 1)


def test_a_second_run_writes_only_the_missing_blocks(local_ray, ray_run, inputs, tmp_path, capsys):
    _, first = ray_run
    out = tmp_path / "poses"
    shutil.copytree(first, out)
    (out / "part-00000002.parquet").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    status, err = run_main([*ray_argv(inputs, out), "--block-size", BLOCK], capsys)
    assert status == cli.EXIT_FAILED, err  # block 2 holds the corrupt img21b.png
    assert "7 of 8 blocks were already written (skipped)" in err
    assert "8 images/frames in 1 blocks" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in kept} == kept
    assert pq.read_table(out).to_pylist() == pq.read_table(first).to_pylist()


def test_another_job_is_refused_an_output_folder(ray_run, inputs, capsys):
    _, out = ray_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    argv = [*ray_argv(inputs, out), "--block-size", BLOCK, "--score-thr", "0.5"]
    status, err = run_main(argv, capsys)
    assert status == cli.EXIT_USAGE
    assert f"--out {out} holds the output of another job" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_without_ray_the_message_says_how_to_install_it(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    status, err = run_main(ray_argv(inputs, tmp_path / "poses"), capsys)
    assert status == cli.EXIT_USAGE
    assert "--ray: Ray Data is not installed: pip install 'rtmo[ray]'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "poses").exists()


def test_a_cluster_that_cannot_be_reached_is_named(inputs, tmp_path, capsys, monkeypatch):
    def refuse(address=None):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    status, err = run_main([*ray_argv(inputs, tmp_path / "poses"), "--ray-address", "auto"], capsys)
    assert status == cli.EXIT_USAGE
    assert "--ray-address auto: Could not find any running Ray instance." in err


RAY_USAGE_ERRORS = [
    (["--ray", "--num-workers", "0"], "argument --num-workers: must be at least 1, got 0"),
    (["--ray", "--gpus-per-worker", "-1"], "argument --gpus-per-worker: must be in [0, inf)"),
    (["--ray", "--block-size", "x"], "argument --block-size: must be an int >= 1, got 'x'"),
    (["--num-workers", "2"], "--num-workers needs --ray"),
    (["--ray-address", "auto"], "--ray-address needs --ray"),
    (["--ray", "--track"], "--track does not go with --ray"),
    (["--ray", "--csv"], "--csv does not go with --ray"),
    (["--ray", "--device", "cpu"], "--device does not go with --ray"),
    (["--ray", "--dtype", "fp16"], "--dtype fp16 needs GPU workers (--gpus-per-worker > 0)"),
]


@pytest.mark.parametrize(("extra", "message"), RAY_USAGE_ERRORS, ids=lambda v: str(v))
def test_ray_option_errors_exit_2_naming_the_option(inputs, tmp_path, capsys, extra, message):
    sources, checkpoint = inputs
    argv = ["predict", sources[0], "--checkpoint", checkpoint, "--out", tmp_path / "o", *extra]
    status, err = run_main(argv, capsys)
    assert status == cli.EXIT_USAGE
    assert message in err
    assert not (tmp_path / "o").exists()


def test_importing_rtmo_and_building_the_parser_import_no_ray():
    code = (
        "import sys, rtmo, rtmo.distributed, rtmo.distributed.command\n"
        "from rtmo import cli\n"
        "cli.build_parser().parse_args(['predict', 'x', '--ray', '--num-workers', '2'])\n"
        "print(sorted(m for m in ('ray', 'pyarrow', 'torch') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_uri_prefixes_are_listed_like_folders(inputs):
    photos = inputs[0][0]
    local = plan_blocks([photos], 16)
    remote = plan_blocks([f"file://{photos}"], 16)
    assert [len(b.items) for b in remote] == [len(b.items) for b in local] == [16, 16, 10]
    assert [f"file://{item}" for b in local for item in b.items] == [
        item for b in remote for item in b.items
    ]


def test_videos_are_cut_into_frame_ranges(inputs):
    video = inputs[0][1]
    blocks = plan_blocks([video], 5)
    assert [(b.start, b.stop) for b in blocks] == [(0, 5), (5, 10), (10, None)]
