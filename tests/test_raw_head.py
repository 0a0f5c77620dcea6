"""Raw-head export: the dense network in onnxruntime or OpenVINO, the post-process on our kernels
(`rtmo.Postprocessor`), against the torch model's own prediction on the same input; thresholds
chosen at call time; fp16 and bf16; the post-process on NumPy and torch outputs; the sidecar's
checks and the errors for outputs of the wrong shape; export from the predictor.

The test models are calibrated (tests/calibrated.py) RTMO-t at 160x160, exported once per module
(~1 s each).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil

import numpy as np
import pytest
import torch
from calibrated import (
    MAX_DET,
    PX_TOL,
    SCORE_TOL,
    assert_same_people,
    float64_predictions,
    noise_images,
)

from rtmo.config import from_name
from rtmo.export import export_onnx
from rtmo.model import RTMOModel
from rtmo.onnx_runtime import OnnxRuntimeModel
from rtmo.openvino_runtime import OpenVinoModel, cpu_has_bf16
from rtmo.postprocessor import RAW_OUTPUT_NAMES, Postprocessor, sidecar_path, write_sidecar
from rtmo.preprocess import letterbox_params

SIZE = (160, 160)
PRIORS = 10 * 10 + 5 * 5  # strides 16 and 32 at 160x160


@pytest.fixture(scope="module")
def crowded(tmp_path_factory, calibrated_rtmo_t):
    """RTMO-t (K=17) at 160x160, more NMS survivors than MAX_DET (conftest.py), its raw-head
    export (dynamic batch) and the float64 reference prediction."""
    model, images, truth = calibrated_rtmo_t
    path = export_onnx(model, tmp_path_factory.mktemp("raw") / "t.onnx", SIZE, head="raw")
    return model, path, images, truth


# A lower score threshold, another NMS IoU and more slots than the default export's: options a
# full-head graph bakes in or refuses.
CALL_TIME_OPTIONS = {"score_thr": 0.08, "nms_thr": 0.5, "max_det": 30}


@pytest.fixture(scope="module")
def expected(crowded):
    """The torch model's predictions: at MAX_DET slots, and with CALL_TIME_OPTIONS together with
    their float64 reference."""
    model, _, images, _ = crowded
    with torch.no_grad():
        default = model.predict(images, max_det=MAX_DET)
        options = model.predict(images, **CALL_TIME_OPTIONS)
    return default, options, float64_predictions(model, images, **CALL_TIME_OPTIONS)


@pytest.mark.parametrize("runner_class", [OnnxRuntimeModel, OpenVinoModel])
@pytest.mark.parametrize("batch", [1, 3])
def test_dense_runtime_and_kernels_match_torch(crowded, expected, runner_class, batch):
    """Same people in the same order as the torch predictor, within the tolerance policy
    (assert_same_people: keypoint error against float64 at most 2x torch float32's, or PX_TOL);
    one dynamic-batch file for both batch sizes."""
    _, path, images, truth = crowded
    runner = runner_class(path, threads=2)
    assert (runner.head, runner.config.name, runner.input_size) == ("raw", "rtmo-t-body7", SIZE)
    assert runner.max_det is None  # chosen per call
    reference = expected[0][:batch]
    assert all(len(r["scores"]) == MAX_DET for r in reference)
    actual = runner.predict(images[:batch], max_det=MAX_DET)
    assert_same_people(reference, actual, truth[:batch])


@pytest.mark.parametrize("runner_class", [OnnxRuntimeModel, OpenVinoModel])
def test_thresholds_are_chosen_at_call_time(crowded, expected, runner_class):
    _, path, images, _ = crowded
    _, reference, truth = expected
    actual = runner_class(path, threads=2).predict(images, **CALL_TIME_OPTIONS)
    assert_same_people(reference, actual, truth)
    assert max(len(r["scores"]) for r in actual) > MAX_DET


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_openvino_bf16_within_policy(crowded):
    """bf16 network: each dense output's error against float64 at most twice torch's own bf16
    run of the same network (plus a floor of 1e-6), and the same number of people found.
    bf16 keeps 8 mantissa bits: on this calibrated random network torch bf16 itself is 60 px off
    on the worst box (median 1.9 px), so people are not compared one by one."""
    from rtmo.export import prepare_model
    from rtmo.model.postprocess import decode_dense

    model, path, images, _ = crowded
    net = prepare_model(model, SIZE)
    with torch.no_grad():
        exact = decode_dense(copy.deepcopy(net).double()(images.double()))
        dense = copy.deepcopy(net).bfloat16()(images.bfloat16())
        torch_bf16 = decode_dense(
            dense._replace(
                **{
                    k: getattr(dense, k).float()
                    for k in ("cls_logits", "bbox_preds", "kpt_vis_logits", "pose_vecs")
                }
            )
        )
    runner = OpenVinoModel(path, "bf16", threads=2)
    for name, ours, theirs, truth in zip(
        RAW_OUTPUT_NAMES, runner.run(images), torch_bf16, exact, strict=True
    ):
        ours_error = (torch.from_numpy(ours).double() - truth).abs().max().item()
        torch_error = (theirs.double() - truth).abs().max().item()
        assert ours_error <= 2 * torch_error + 1e-6, (name, ours_error, torch_error)
    fp32 = OpenVinoModel(path, threads=2).predict(images, max_det=MAX_DET)
    bf16 = runner.predict(images, max_det=MAX_DET)
    assert [len(r["scores"]) for r in bf16] == [len(r["scores"]) for r in fp32]


def test_fp16_export_finds_the_same_people(crowded, expected, tmp_path):
    """fp16 network weights, float32 interface and decode; people matched by box as in
    test_onnx_runtime's fp16 test (measured there: scores 9e-3, boxes 2.1 px, median keypoint
    error 0.7 px)."""
    import onnx
    from torchvision.ops import box_iou

    model, _, images, _ = crowded
    path = export_onnx(model, tmp_path / "t16.onnx", SIZE, fp16=True, head="raw")
    proto = onnx.load(str(path))
    conv_weights = {node.input[1] for node in proto.graph.node if node.op_type == "Conv"}
    types = {init.data_type for init in proto.graph.initializer if init.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    runner = OnnxRuntimeModel(path, threads=2)
    assert runner.fp16
    for ref, out in zip(expected[0], runner.predict(images, max_det=MAX_DET), strict=True):
        assert len(out["scores"]) == len(ref["scores"]) == MAX_DET
        best, match = box_iou(out["boxes"], ref["boxes"]).max(1)
        assert best.min() > 0.9
        assert (out["scores"] - ref["scores"][match]).abs().max() < 2e-2
        assert (out["boxes"] - ref["boxes"][match]).abs().max() < 3.0
        assert (out["keypoints"] - ref["keypoints"][match]).norm(dim=-1).median() < 1.0


def test_fixed_batch(crowded, tmp_path):
    model, _, _, _ = crowded
    path = export_onnx(model, tmp_path / "b1.onnx", (64, 64), dynamic_batch=False, head="raw")
    images = noise_images(2, (64, 64), seed=3)
    for runner in (OnnxRuntimeModel(path, threads=2), OpenVinoModel(path, threads=2)):
        assert runner.run(images[:1])[3].shape == (1, 20, 192)
        with pytest.raises(Exception, match="1"):  # each runtime words it its own way
            runner.run(images)
    assert OnnxRuntimeModel(path).session.get_inputs()[0].shape == [1, 3, 64, 64]


# ------------------------------------------------------------------------------ Postprocessor


@pytest.fixture(scope="module")
def dense(crowded):
    """The raw graph's outputs for the three images (onnxruntime), as NumPy arrays."""
    _, path, images, _ = crowded
    return OnnxRuntimeModel(path, threads=2).run(images)


@pytest.mark.parametrize(
    ("form", "source"),
    [("numpy", "sidecar"), ("torch", "onnx"), ("mapping", "model"), ("float64", "sidecar")],
)
def test_postprocessor_on_any_output_form(crowded, expected, dense, form, source):
    """Built from the sidecar, from the .onnx beside it or from the torch model, on NumPy or
    torch outputs, a dict by name, float64: the torch predictor's people."""
    model, path, _, truth = crowded
    outputs = {
        "numpy": list(dense),
        "torch": [torch.from_numpy(a) for a in dense],
        "mapping": dict(zip(reversed(RAW_OUTPUT_NAMES), reversed(dense), strict=True)),
        "float64": tuple(a.astype(np.float64) for a in dense),
    }[form]
    post = {
        "sidecar": lambda: Postprocessor.from_sidecar(sidecar_path(path)),
        "onnx": lambda: Postprocessor.from_sidecar(path),
        "model": lambda: Postprocessor.from_model(model, SIZE),
    }[source]()
    assert (post.config.name, post.input_size, post.num_priors) == ("rtmo-t-body7", SIZE, PRIORS)
    assert_same_people(expected[0], post.predict(outputs, max_det=MAX_DET), truth)


def test_postprocessor_from_checkpoint_gives_poses(crowded, dense, tmp_path):
    """An official-layout checkpoint -> Postprocessor; Poses mapped back through each image's
    letterbox equal the torch predictor's on the same images."""
    from checkpoints import write_published_checkpoint

    from rtmo import RTMO
    from rtmo.preprocess import letterbox_batch

    model, path, images, _ = crowded
    checkpoint = write_published_checkpoint(model, tmp_path / "t.pth")
    post = Postprocessor.from_checkpoint(checkpoint, input_size=SIZE, max_det=MAX_DET)
    frames = [
        images[0].permute(1, 2, 0).round().to(torch.uint8).numpy()[20:140],  # 160x120 BGR
        images[1].permute(1, 2, 0).round().to(torch.uint8).numpy()[:, 30:],  # 130x160
    ]
    batch, boxes = letterbox_batch(frames, SIZE)
    assert batch.shape == (2, 3, 160, 160)
    assert batch.dtype == np.float32
    outputs = OnnxRuntimeModel(path, threads=2).run(batch)
    config = dataclasses.replace(from_name("rtmo-t"), input_size=SIZE)
    torch_model = copy.deepcopy(model)
    torch_model.config = config
    expected = RTMO(torch_model, device="cpu", max_det=MAX_DET)(frames)
    for poses, ref, frame in zip(post(outputs, boxes), expected, frames, strict=True):
        assert 0 < len(poses) == len(ref)
        assert poses.image_size == (frame.shape[1], frame.shape[0]) == ref.image_size
        assert poses.keypoint_names == ref.keypoint_names
        np.testing.assert_allclose(poses.scores, ref.scores, rtol=0, atol=SCORE_TOL)
        np.testing.assert_allclose(poses.boxes, ref.boxes, rtol=0, atol=PX_TOL)
        # 5x PX_TOL: the float32 noise of the two networks mapped through the letterbox (as in
        # test_onnx_runtime's predictor test); a mapping error would be pixels.
        np.testing.assert_allclose(poses.keypoints, ref.keypoints, rtol=0, atol=5 * PX_TOL)
    in_input_pixels = post(outputs)[0]
    assert in_input_pixels.image_size == SIZE
    np.testing.assert_allclose(in_input_pixels.boxes, post.predict(outputs)[0]["boxes"].numpy())


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            lambda d: [d[0], d[1], d[2], d[3][..., :128]],
            ValueError,
            r"pose_vecs must have shape \(B, 125, 192\) for rtmo-t-body7 at 160x160.*\(3, 125, 128",
        ),
        (
            lambda d: [d[0][:, :100], *d[1:]],
            ValueError,
            r"scores must have shape \(B, 125\).*P=125 priors.*got \(3, 100\)",
        ),
        (
            lambda d: [d[0], d[1][:2], d[2], d[3]],
            ValueError,
            r"boxes must have shape \(B, 125, 4\).*the same for the four outputs.*\(2, 125, 4",
        ),
        (
            lambda d: [d[0], d[1], d[2][..., :14], d[3]],
            ValueError,
            r"keypoint_scores must have shape \(B, 125, 17\).*K=17.*got \(3, 125, 14\)",
        ),
        (lambda d: [a[:0] for a in d], ValueError, r"B >= 1.*got \(0, 125\)"),
        (lambda d: [d[0].astype(np.int32), *d[1:]], TypeError, "scores must be floating point"),
        (lambda d: [d[0].tolist(), *d[1:]], TypeError, "scores must be a NumPy array or a torch"),
        (
            lambda d: d[:3],
            TypeError,
            "a sequence of those four arrays in order, got tuple of length 3",
        ),
        (
            lambda d: {"scores": d[0], "boxes": d[1]},
            ValueError,
            r"missing \['keypoint_scores', 'pose_vecs'\]",
        ),
    ],
)
def test_outputs_of_the_wrong_shape(crowded, dense, change, error, match):
    _, path, _, _ = crowded
    post = Postprocessor.from_sidecar(path)
    with pytest.raises(error, match=match):
        post.predict(change(dense))


def test_postprocessor_option_errors(crowded, dense):
    _, path, _, _ = crowded
    post = Postprocessor.from_sidecar(path)
    with pytest.raises(ValueError, match=r"score_thr must be in \[0, 1\), got -0.5"):
        post.predict(dense, score_thr=-0.5)
    with pytest.raises(ValueError, match="letterboxes: 2 given for a batch of 3 images"):
        post(dense, [None, None])
    with pytest.raises(TypeError, match=r"letterboxes\[1\] must be an rtmo\.preprocess\.Letterbox"):
        post(dense, [letterbox_params((90, 60), SIZE), (90, 60), None])
    with pytest.raises(
        ValueError, match=r"letterboxes\[0\] places the image in a \(64, 64\) input"
    ):
        post(dense, letterbox_params((90, 60), (64, 64)))
    with pytest.raises(ValueError, match=r"input_size must be \(w, h\), positive multiples of 32"):
        Postprocessor(post.dcc, post.config, (100, 64))
    with pytest.raises(ValueError, match="the DCC decodes 17 keypoints from 192-channel pose"):
        Postprocessor(post.dcc, from_name("rtmo-s-crowd"))


# ------------------------------------------------------------------------------ the sidecar


def copy_export(path, folder):
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    shutil.copy(sidecar_path(path), folder / sidecar_path(path).name)
    return folder / path.name


def test_missing_sidecar(crowded, tmp_path):
    _, path, _, _ = crowded
    copy = copy_export(path, tmp_path / "lonely")
    sidecar_path(copy).unlink()
    for runner in (OnnxRuntimeModel, OpenVinoModel):
        with pytest.raises(
            FileNotFoundError, match=r"t.dcc.npz: the DCC sidecar of t.onnx is missing"
        ):
            runner(copy)


def test_sidecar_of_another_variant(crowded, tmp_path):
    _, path, _, _ = crowded
    crowd = RTMOModel(from_name("rtmo-s-crowd")).eval().reparameterize()
    copy = copy_export(path, tmp_path / "mixed")
    write_sidecar(sidecar_path(copy), crowd.head.dcc, crowd.config, SIZE)
    for runner in (OnnxRuntimeModel, OpenVinoModel):
        with pytest.raises(
            ValueError,
            match=r"t.dcc.npz belongs to rtmo-s-crowdpose, but the ONNX file names rtmo-t-body7",
        ):
            runner(copy)
    with pytest.raises(
        ValueError, match="belongs to rtmo-t-body7, but variant= names rtmo-s-body7"
    ):
        OnnxRuntimeModel(path, variant="rtmo-s")


def test_sidecar_of_another_export(crowded, tmp_path):
    """Same variant, other weights: the checksum recorded in the ONNX file differs."""
    _, path, _, _ = crowded
    torch.manual_seed(5)
    other = RTMOModel(from_name("rtmo-t")).eval()
    copy = copy_export(path, tmp_path / "mixed")
    write_sidecar(sidecar_path(copy), other.head.dcc, other.config, SIZE)
    with pytest.raises(
        ValueError, match=r"is not the sidecar exported with t.onnx \(its SHA-256 differs"
    ):
        OnnxRuntimeModel(copy)


def test_sidecar_of_another_input_size(crowded, tmp_path):
    model, path, _, _ = crowded
    copy = copy_export(path, tmp_path / "mixed")
    write_sidecar(sidecar_path(copy), model.head.dcc, model.config, (128, 128))
    with pytest.raises(ValueError, match=r"is for a 128x128 input, t.onnx for 160x160"):
        OnnxRuntimeModel(copy)


def test_unsafe_or_broken_sidecars_are_refused(tmp_path):
    """A pickled object is never loaded (allow_pickle=False); other files get their own message."""
    pickled = tmp_path / "pickled.dcc.npz"
    np.savez(pickled, format=np.array("rtmo-dcc/1"), variant=np.array([object()], dtype=object))
    with pytest.raises(
        ValueError, match=r"pickled.dcc.npz: not a readable rtmo DCC sidecar.*allow_pickle"
    ):
        Postprocessor.from_sidecar(pickled)
    garbage = tmp_path / "garbage.dcc.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"garbage.dcc.npz: not a readable rtmo DCC sidecar"):
        Postprocessor.from_sidecar(garbage)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"foreign.npz: not an rtmo DCC sidecar \(format 'rtmo-dcc/1' expected, got 'none'\)",
    ):
        Postprocessor.from_sidecar(foreign)
    with pytest.raises(FileNotFoundError, match=r"missing.dcc.npz: no such sidecar file"):
        Postprocessor.from_sidecar(tmp_path / "missing.dcc.npz")


def test_sidecar_with_missing_weights(crowded, tmp_path):
    _, path, _, _ = crowded
    with np.load(sidecar_path(path)) as npz:
        arrays = {key: npz[key] for key in npz.files if key != "dcc.gau.uv.weight"}
    arrays["dcc.pos_enc"] = arrays["dcc.pos_enc"][:, :64]
    broken = tmp_path / "broken.dcc.npz"
    np.savez(broken, **arrays)
    with pytest.raises(
        ValueError, match=r"broken.dcc.npz: DCC weights: missing \['gau.uv.weight'\]"
    ):
        Postprocessor.from_sidecar(broken)


# ------------------------------------------------------------------------------ predictor


def small_predictor(model: RTMOModel, **options):
    """The torch predictor of `model` with a 160x160 input (letterbox and export size)."""
    from rtmo import RTMO

    model = copy.deepcopy(model)
    model.config = dataclasses.replace(model.config, input_size=SIZE)
    return RTMO(model, device="cpu", max_det=MAX_DET, **options)


def test_predictor_export_and_runtimes(crowded, tmp_path):
    """`RTMO(...).export(path, head=...)` and `export_onnx(RTMO(...))`; the raw file through
    RTMO.from_onnx on onnxruntime and OpenVINO, and `RTMO(model, runtime="openvino")`, give the
    torch predictor's Poses."""
    from rtmo import RTMO
    from rtmo import export_onnx as exported

    model, path, images, _ = crowded
    predictor = small_predictor(model, score_thr=0.2, nms_thr=0.6)
    # The predictor's thresholds baked in; its max_det capped at the 20 priors of 64x64.
    full = exported(predictor, tmp_path / "full.onnx", input_size=(64, 64))
    runner = OnnxRuntimeModel(full)
    assert (runner.max_det, runner.score_thr, runner.nms_thr) == (20, 0.2, 0.6)
    with pytest.raises(
        ValueError, match=r"a full-head graph \(NMS and DCC inside\); OpenVINO runs"
    ):
        OpenVinoModel(full)
    raw = predictor.export(tmp_path / "raw.onnx", head="raw", input_size=(64, 64))
    assert OnnxRuntimeModel(raw).head == "raw"
    assert sidecar_path(raw).is_file()
    image = images[2].permute(1, 2, 0).round().to(torch.uint8).numpy()[10:150]
    expected = predictor(image)
    assert 0 < len(expected) <= MAX_DET
    on_openvino = small_predictor(model, score_thr=0.2, nms_thr=0.6, runtime="openvino")
    assert isinstance(on_openvino.model, OpenVinoModel)
    for other in (  # `path`: the raw-head export of the same weights at 160x160
        RTMO.from_onnx(path, score_thr=0.2, nms_thr=0.6, max_det=MAX_DET),
        RTMO.from_onnx(path, runtime="openvino", score_thr=0.2, nms_thr=0.6, max_det=MAX_DET),
        on_openvino,
    ):
        assert other.input_size == SIZE
        poses = other(image)
        assert len(poses) == len(expected)
        np.testing.assert_allclose(poses.scores, expected.scores, rtol=0, atol=SCORE_TOL)
        np.testing.assert_allclose(poses.boxes, expected.boxes, rtol=0, atol=PX_TOL)
        np.testing.assert_allclose(poses.keypoints, expected.keypoints, rtol=0, atol=5 * PX_TOL)
    with pytest.raises(
        TypeError, match=r"runs an exported file \(.*raw.onnx\), not the torch model"
    ):
        RTMO.from_onnx(raw).export(tmp_path / "again.onnx")


def test_predictor_runtime_errors(crowded):
    from rtmo import RTMO

    _, path, _, _ = crowded
    with pytest.raises(
        ValueError, match="dtype for runtime='openvino' must be fp32 or bf16, got 'fp16'"
    ):
        RTMO.from_onnx(path, runtime="openvino", dtype="fp16")
    with pytest.raises(
        ValueError, match="runtime must be 'onnxruntime' or 'openvino', got 'torch'"
    ):
        RTMO.from_onnx(path, runtime="torch")


def test_cli_export_raw(tmp_path, capsys):
    from checkpoints import write_published_checkpoint

    from rtmo.cli import main

    torch.manual_seed(0)
    checkpoint = write_published_checkpoint(RTMOModel(from_name("rtmo-t")), tmp_path / "t.pth")
    out = tmp_path / "t.onnx"
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--input-size", "64"]
    assert main([*argv, "--head", "raw"]) == 0
    assert f"(DCC weights: {tmp_path / 't.dcc.npz'})" in capsys.readouterr().err
    runner = OnnxRuntimeModel(out)
    assert (runner.head, runner.input_size) == ("raw", (64, 64))
    assert main([*argv, "--head", "raw", "--max-det", "5", "--nms-thr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--max-det, --nms-thr: --head raw has no NMS in the graph" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_evaluate_a_raw_head_file(crowded, tmp_path, runtime):
    """`rtmo.evaluate` on a raw-head file: any max_det (None: every NMS survivor), the runtime
    named in the settings; the same AP as the torch predictor of the same weights."""
    from test_eval import annotated_folder

    from rtmo import RTMO, evaluate

    model, path, _, _ = crowded
    data, images = annotated_folder(tmp_path, count=2)
    ours = evaluate(RTMO.from_onnx(path, runtime=runtime), data=data, images=images, max_det=None)
    reference = evaluate(small_predictor(model), data=data, images=images, max_det=None)
    assert ours["settings"]["model"]["runtime"] == runtime
    assert ours["dataset"] == reference["dataset"]
    assert ours["AP"] == pytest.approx(reference["AP"], abs=1e-6)


def test_openvino_runner_from_threads(crowded):
    """Calls from several threads at once give the serial results (they share one request)."""
    from concurrent.futures import ThreadPoolExecutor

    _, path, images, _ = crowded
    runner = OpenVinoModel(path, threads=2)
    serial = [runner.run(images[i : i + 1]) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        parallel = list(pool.map(lambda i: runner.run(images[i : i + 1]), [0, 1, 2] * 3))
    for i, outputs in enumerate(parallel):
        for ours, expected in zip(outputs, serial[i % 3], strict=True):
            np.testing.assert_array_equal(ours, expected)
