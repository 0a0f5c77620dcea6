"""`rtmo train` and `rtmo.train.run.train`: whole runs on tiny data, custom keypoint sets, fine-
tuning with a rebuilt head, and the command line's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rtmo.checkpoint import CheckpointError, load_model
from rtmo.cli import main
from rtmo.config import COCO_KEYPOINTS, from_name
from rtmo.model import RTMOModel
from rtmo.predictor import RTMO
from rtmo.train.run import FINAL_WEIGHTS, build_model, train
from rtmo.train.synthetic import synthesize_dataset

# Five of COCO's keypoints: a custom set with one flip pair less than its names suggest.
FIVE = ("nose", "left_shoulder", "right_shoulder", "left_hip", "right_hip")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny") / "data"
    annotations = synthesize_dataset(folder, 4, 7, size=(256, 192), max_people=4)
    return annotations, folder / "images"


@pytest.fixture(scope="module")
def tiny_five(tiny, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny set relabelled with the five keypoints of FIVE."""
    annotations, images = tiny
    data = json.loads(annotations.read_text())
    keep = [COCO_KEYPOINTS.index(name) for name in FIVE]
    for ann in data["annotations"]:
        values = ann["keypoints"]
        ann["keypoints"] = [v for k in keep for v in values[3 * k : 3 * k + 3]]
        ann["num_keypoints"] = sum(v > 0 for v in ann["keypoints"][2::3])
    data["categories"][0].update(keypoints=list(FIVE), skeleton=[[2, 3], [2, 4], [3, 5]])
    data["categories"][0]["sigmas"] = [0.03, 0.08, 0.08, 0.1, 0.1]
    path = tmp_path_factory.mktemp("five") / "five.json"
    path.write_text(json.dumps(data))
    return path, images


def test_cli_run_writes_checkpoints_that_predict_loads(tiny, tmp_path):
    annotations, images = tiny
    out = tmp_path / "run"
    args = ["train", "--data", str(annotations), "--images", str(images), "--epochs", "1"]
    args += ["--batch-size", "2", "--input-size", "64", "--workers", "0", "--out", str(out)]
    assert main([*args, "--quiet", "--val", str(annotations), "--val-images", str(images)]) == 0
    assert (out / "last.pth").is_file()
    assert (out / FINAL_WEIGHTS).is_file()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "step" in r] == [1, 2]
    assert "val_AP" in records[-1]
    model = RTMO.from_checkpoint(out / FINAL_WEIGHTS)
    assert model.input_size == (64, 64)  # the training input, recorded in the checkpoint
    poses = model(str(next(images.iterdir())))
    assert poses.keypoints.shape[1:] == (17, 2)
    # A second run into the same folder needs --resume; resuming a finished run changes nothing.
    assert main(args) == 2
    assert main([*args, "--resume"]) == 0


def test_custom_keypoints_train_and_predict(tiny_five, tmp_path):
    annotations, images = tiny_five
    summary = train(
        annotations, images, tmp_path, epochs=1, batch_size=2, input_size=(64, 64), workers=0,
        progress=False,
    )  # fmt: skip
    net = load_model(summary["weights"])
    assert net.config.keypoint_names == FIVE
    assert net.config.num_keypoints == 5
    assert net.config.keypoints.flip_pairs == ((1, 2), (3, 4))
    assert net.config.sigmas == (0.03, 0.08, 0.08, 0.1, 0.1)
    poses = RTMO(net)(torch.full((3, 64, 64), 100.0))
    assert poses.keypoints.shape[1:] == (5, 2)
    assert poses.keypoint_names == FIVE


def test_fine_tuning_rebuilds_only_the_keypoint_layers_of_the_head(tiny_five, tmp_path):
    annotations, images = tiny_five
    source = RTMOModel(from_name("rtmo-t"))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "coco.pth")
    summary = train(
        annotations, images, tmp_path / "run", epochs=1, batch_size=2, input_size=(64, 64),
        workers=0, progress=False, checkpoint=tmp_path / "coco.pth",
    )  # fmt: skip
    rebuilt = summary["rebuilt"]
    assert rebuilt
    assert all(key.startswith("head.") for key in rebuilt)
    assert "head.dcc.pos_enc" in rebuilt
    assert "backbone.stem.conv.conv.weight" not in rebuilt


def test_a_checkpoint_of_another_architecture_is_refused(tiny, tmp_path):
    annotations, images = tiny
    torch.save({"state_dict": RTMOModel(from_name("rtmo-s")).state_dict()}, tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="not an rtmo-t checkpoint"):
        train(annotations, images, tmp_path / "run", epochs=1, checkpoint=tmp_path / "s.pth")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-size", "100"], "--input-size: sides must be multiples of 32"),
        (["--epochs", "0"], "--epochs"),
        (["--val", "v.json"], "--val and --val-images go together"),
        (["--resume"], "--resume:"),
        (["--sigmas", "0.1,x"], "--sigmas"),
        (["--lr", "0"], "--lr: must be in (0, inf), got 0"),
        (["--lr", "inf"], "--lr: must be in (0, inf), got inf"),
        (["--batch-size", "64"], "fewer than one batch of 64"),
    ],
)
def test_cli_errors_exit_2_naming_the_option(tiny, tmp_path, capsys, extra, message):
    annotations, images = tiny
    args = ["train", "--data", str(annotations), "--images", str(images), "--epochs", "1"]
    args += ["--out", str(tmp_path / "run"), "--workers", "0", "--quiet"]
    assert _exit_status([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pth").exists()


def test_cli_names_the_annotation_file_that_is_not_coco(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    status = main(["train", "--data", str(bad), "--images", str(tmp_path), "--epochs", "1",
                   "--out", str(tmp_path / "run")])  # fmt: skip
    assert status == 2
    assert f"{bad} is not COCO" in capsys.readouterr().err


def _exit_status(args: list[str]) -> int:
    """main's status, also for errors argparse reports while parsing (SystemExit)."""
    try:
        return main(args)
    except SystemExit as stop:
        return stop.code


def test_a_new_model_starts_at_the_classifier_prior_and_a_loaded_one_keeps_its_weights(tmp_path):
    """mmpose's bias_init_with_prob(0.01) for a run from scratch; a checkpoint's bias is kept."""
    config = from_name("rtmo-t")
    new, _ = build_model(config, None, trust_checkpoint=False)
    for conv in new.head.head_module.out_cls:
        assert torch.sigmoid(conv.bias).item() == pytest.approx(0.01, rel=1e-6)
    trained = RTMOModel(config)
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "t.pth")
    loaded, rebuilt = build_model(config, tmp_path / "t.pth", trust_checkpoint=False)
    assert rebuilt == []
    pairs = zip(loaded.head.head_module.out_cls, trained.head.head_module.out_cls, strict=True)
    for mine, theirs in pairs:
        assert torch.equal(mine.bias, theirs.bias)
