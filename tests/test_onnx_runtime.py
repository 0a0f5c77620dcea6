"""The exported graph in onnxruntime against the torch model's own prediction (`RTMOModel.predict`)
on the same input: same people in the same order, boxes and keypoints within 1e-2 px; and the
runner's option and input checks. The test models are calibrated (tests/calibrated.py); each is
exported once per module.
"""

from __future__ import annotations

import copy
import gc

import numpy as np
import onnx
import pytest
import torch
from calibrated import (
    MAX_DET,
    PX_TOL,
    SCORE_TOL,
    assert_same_people,
    calibrated_model,
    float64_predictions,
    noise_images,
)

from rtmo.config import from_name
from rtmo.export import export_onnx
from rtmo.model import RTMOModel
from rtmo.onnx_runtime import OnnxRuntimeModel


@pytest.fixture(scope="module")
def crowded(tmp_path_factory, calibrated_rtmo_t):
    """RTMO-t (K=17) at 160x160; more survivors of the NMS than max_det slots."""
    model, images, truth = calibrated_rtmo_t
    path = export_onnx(model, tmp_path_factory.mktemp("t") / "t.onnx", (160, 160), MAX_DET)
    return model, OnnxRuntimeModel(path, threads=2), images, truth


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """RTMO-s CrowdPose (K=14) at 192x224 (w x h, not square); fewer people than max_det."""
    images = noise_images(3, (192, 224), seed=2)
    model = calibrated_model("rtmo-s-crowd", images, centre_logit=-5.0, seed=1)
    path = export_onnx(model, tmp_path_factory.mktemp("s") / "s.onnx", (192, 224), MAX_DET)
    return model, OnnxRuntimeModel(path, threads=2), images, float64_predictions(model, images)


@pytest.mark.parametrize("batch", [1, 3])
def test_more_people_than_slots_matches_torch(crowded, batch):
    model, runner, images, truth = crowded
    images = images[:batch]
    with torch.no_grad():
        expected = model.predict(images, max_det=MAX_DET)
    actual = runner.predict(images)
    assert all(len(r["scores"]) == MAX_DET for r in expected)  # the slots are the limit
    assert_same_people(expected, actual, truth[:batch])


@pytest.mark.parametrize("batch", [1, 3])
def test_fewer_people_than_slots_matches_torch(sparse, batch):
    model, runner, images, truth = sparse
    images = images[:batch]
    with torch.no_grad():
        expected = model.predict(images, max_det=MAX_DET)
    actual = runner.predict(images)
    counts = [len(r["scores"]) for r in expected]
    assert all(0 < n < MAX_DET for n in counts), counts
    assert actual[0]["keypoints"].shape[1:] == (14, 2)
    assert_same_people(expected, actual, truth[:batch])


def test_nms_acts_in_the_graph(crowded):
    """The calibrated boxes overlap, so suppression changes who is kept: the graph's people are
    those of the torch NMS at 0.65, not the top scores without NMS."""
    model, runner, images, _ = crowded
    with torch.no_grad():
        without_nms = model.predict(images, nms_thr=1.0, max_det=MAX_DET)
    actual = runner.predict(images)
    for unsuppressed, found in zip(without_nms, actual, strict=True):
        assert not torch.allclose(unsuppressed["scores"], found["scores"])


def test_fp16_graph_finds_the_same_people(tmp_path):
    """fp16 network, float32 post-process. fp16 rounding can swap people whose scores are within
    ~1e-2, so people are matched by box. Bounds measured on this model: scores 9e-3, boxes
    2.1 px, median keypoint error 0.7 px (at 160 px; wrong people would be tens of px off)."""
    from torchvision.ops import box_iou

    images = noise_images(3, (160, 160), seed=1)
    model = calibrated_model("rtmo-t", images, centre_logit=0.0)
    runner = OnnxRuntimeModel(
        export_onnx(model, tmp_path / "t16.onnx", (160, 160), MAX_DET, fp16=True), threads=2
    )
    assert runner.fp16
    with torch.no_grad():
        expected = model.predict(images, max_det=MAX_DET)
    for ref, out in zip(expected, runner.predict(images), strict=True):
        assert len(out["scores"]) == len(ref["scores"]) == MAX_DET
        best, match = box_iou(out["boxes"], ref["boxes"]).max(1)
        assert best.min() > 0.9
        assert (out["scores"] - ref["scores"][match]).abs().max() < 2e-2
        assert (out["boxes"] - ref["boxes"][match]).abs().max() < 3.0
        errors = (out["keypoints"] - ref["keypoints"][match]).norm(dim=-1)
        assert errors.median() < 1.0


def test_padding_rows_are_zero(sparse):
    _, runner, images, _ = sparse
    dets, keypoints = runner.run(images)
    assert dets.shape == (3, MAX_DET, 5)
    assert keypoints.shape == (3, MAX_DET, 14, 3)
    for image_dets, image_keypoints in zip(dets, keypoints, strict=True):
        n = int((image_dets[:, 4] > 0).sum())
        assert 0 < n < MAX_DET
        assert np.all(np.diff(image_dets[:n, 4]) <= 0)  # descending scores
        assert not image_dets[n:].any()
        assert not image_keypoints[n:].any()


def test_nobody_in_the_image(tmp_path):
    """A very negative cls bias: no candidate, all rows padding, empty results of the right
    shape (downstream tools crash on malformed empty outputs)."""
    torch.manual_seed(0)
    model = RTMOModel(from_name("rtmo-t")).eval()
    with torch.no_grad():
        for conv in model.head.head_module.out_cls:
            conv.bias.fill_(-30.0)
    runner = OnnxRuntimeModel.from_model(
        model, tmp_path / "empty.onnx", input_size=(64, 64), max_det=10
    )
    assert runner.path == tmp_path / "empty.onnx"
    with pytest.raises(
        ValueError, match="outputs 17 keypoints but variant rtmo-s-crowdpose has 14"
    ):
        OnnxRuntimeModel(runner.path, variant="rtmo-s-crowd")
    images = noise_images(2, (64, 64), seed=3)
    dets, keypoints = runner.run(images)
    assert not dets.any()
    assert not keypoints.any()
    for result in runner.predict(images):
        assert result["boxes"].shape == (0, 4)
        assert result["scores"].shape == (0,)
        assert result["keypoints"].shape == (0, 17, 2)
        assert result["keypoint_scores"].shape == (0, 17)


def test_stricter_options_filter_like_torch(crowded):
    model, runner, images, truth = crowded
    with torch.no_grad():
        expected = model.predict(images, score_thr=0.5, max_det=7)
    actual = runner.predict(images, score_thr=0.5, nms_thr=0.65, max_det=7)
    truth = [
        {key: value[(r["scores"] > 0.5).nonzero()[:7, 0]] for key, value in r.items()}
        for r in truth
    ]
    assert_same_people(expected, actual, truth)


def test_metadata(crowded):
    _, runner, _, _ = crowded
    assert runner.config.name == "rtmo-t-body7"
    assert runner.input_size == (160, 160)
    assert (runner.max_det, runner.num_keypoints) == (MAX_DET, 17)
    assert (runner.score_thr, runner.nms_thr, runner.fp16) == (0.1, 0.65, False)
    assert "CPUExecutionProvider" in runner.session.get_providers()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"score_thr": 0.05}, "score_thr=0.05 is below the 0.1"),
        ({"nms_thr": 0.5}, "nms_thr=0.5 differs from the 0.65"),
        ({"max_det": MAX_DET + 1}, r"max_det=21 must be in \[1, 20\]"),
        ({"max_det": 0}, r"max_det=0 must be in \[1, 20\]"),
    ],
)
def test_options_the_graph_cannot_give(crowded, options, match):
    _, runner, images, _ = crowded
    with pytest.raises(ValueError, match=match):
        runner.predict(images, **options)


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.zeros(1, 3, 128, 160), ValueError, r"shape \(B, 3, 160, 160\).*\(1, 3, 128, 160\)"),
        (torch.zeros(3, 160, 160), ValueError, r"got \(3, 160, 160\)"),
        (torch.zeros(0, 3, 160, 160), ValueError, "at least one image"),
        (torch.zeros(1, 3, 160, 160, dtype=torch.uint8), TypeError, "must be float"),
        ([[0.0]], TypeError, "got list"),
    ],
)
def test_bad_images(crowded, images, error, match):
    _, runner, _, _ = crowded
    with pytest.raises(error, match=match):
        runner.predict(images)


def test_numpy_input_and_float64(crowded):
    _, runner, images, _ = crowded
    expected = runner.predict(images[:1])
    actual = runner.predict(images[:1].double().numpy())
    torch.testing.assert_close(actual[0]["keypoints"], expected[0]["keypoints"])


def test_missing_file_and_foreign_graph(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        OnnxRuntimeModel(tmp_path / "missing.onnx")
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="not an RTMO pose-detection graph"):
        OnnxRuntimeModel(path)


def test_predictor_on_onnxruntime_matches_torch(tmp_path):
    """`RTMO(..., runtime="onnxruntime")` and `RTMO.from_onnx` give the torch predictor's Poses:
    same letterbox, same people, mapped back to the image the same way."""
    from rtmo import RTMO

    images = noise_images(2, (416, 416), seed=4)
    model = calibrated_model("rtmo-t", images, centre_logit=-2.0)
    image = images[0].permute(1, 2, 0).round().to(torch.uint8).numpy()[40:360]  # 416x320 BGR
    exported = RTMO(copy.deepcopy(model), runtime="onnxruntime", max_det=MAX_DET)
    assert exported.model.path.is_file()
    from_file = RTMO.from_onnx(exported.model.path)
    assert (from_file.max_det, from_file.score_thr, from_file.nms_thr) == (MAX_DET, 0.1, 0.65)
    assert from_file.input_size == (416, 416)
    expected = RTMO(model, device="cpu", max_det=MAX_DET)(image)
    assert 0 < len(expected) <= MAX_DET
    for poses in (exported(image), from_file(image)):
        assert len(poses) == len(expected)
        assert poses.image_size == expected.image_size
        assert poses.keypoint_names == expected.keypoint_names
        np.testing.assert_allclose(poses.scores, expected.scores, rtol=0, atol=SCORE_TOL)
        np.testing.assert_allclose(poses.boxes, expected.boxes, rtol=0, atol=PX_TOL)
        # The runner-level tests hold keypoints to the float64 policy; here 5x PX_TOL covers
        # this 416 px network's float32 noise (1.5e-2 px measured) and catches any mapping error.
        np.testing.assert_allclose(poses.keypoints, expected.keypoints, rtol=0, atol=5 * PX_TOL)


def test_predictor_runtime_errors(crowded):
    from rtmo import RTMO

    _, runner, _, _ = crowded
    with pytest.raises(ValueError, match="runtime must be one of"):
        RTMO(runner.path, runtime="tensorrt")
    with pytest.raises(ValueError, match=r"max_det=21 must be in \[1, 20\]"):
        RTMO.from_onnx(runner.path, max_det=MAX_DET + 1)(np.zeros((64, 64, 3), np.uint8))


def test_cli_export(tmp_path):
    from checkpoints import write_published_checkpoint

    from rtmo.cli import main

    torch.manual_seed(0)
    checkpoint = write_published_checkpoint(RTMOModel(from_name("rtmo-t")), tmp_path / "t.pth")
    out = tmp_path / "t.onnx"
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--input-size", "64"]
    argv += ["--max-det", "10"]
    assert main(argv) == 0
    assert OnnxRuntimeModel(out).input_size == (64, 64)
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(out)]) == 2


def test_temporary_export_is_removed_with_the_runner():
    torch.manual_seed(0)
    model = RTMOModel(from_name("rtmo-t")).eval()
    runner = OnnxRuntimeModel.from_model(model, input_size=(64, 64), max_det=4)
    folder = runner.path.parent
    assert runner.path.is_file()
    del runner
    gc.collect()
    assert not folder.exists()
