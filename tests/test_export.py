"""ONNX export: every variant exports to a checker-clean graph of standard ops that TensorRT's
parser takes, with mmdeploy's input/output names and shapes, a dynamic or fixed batch, and clear
errors for bad arguments; the raw head to a graph of ops that TensorRT, OpenVINO and RKNN's
converter all take, with its sidecar. Numbers (parity with torch) are in test_onnx_runtime.py and
test_raw_head.py.

Exports run at 64x64 (20 priors) to keep the five variants at ~50 s on 2 cores (a raw-head export
takes ~1 s).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from rtmo.config import from_name
from rtmo.export import export_onnx
from rtmo.model import RTMOModel
from rtmo.onnx_runtime import OnnxRuntimeModel

SIZE = (64, 64)
MAX_DET = 10

# Ops of the ONNX standard that TensorRT's ONNX parser (onnx-tensorrt, TensorRT 8.6+) converts
# natively, restricted to those an RTMO graph needs; anything else (custom domains, ReduceL2,
# LpNormalization, Loop, If, NonZero, Einsum...) fails the scan.
TENSORRT_OPS = frozenset(
    [
        "Add",
        "Cast",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "Cos",
        "Div",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "Flatten",
        "Gather",
        "Gemm",
        "Greater",
        "Identity",
        "LayerNormalization",
        "MatMul",
        "MaxPool",
        "Min",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "Pow",
        "Range",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Resize",
        "ScatterND",
        "Shape",
        "Sigmoid",
        "Sin",
        "Slice",
        "Softmax",
        "Split",
        "Sqrt",
        "Sub",
        "TopK",
        "Transpose",
        "Unsqueeze",
        "Where",
    ]
)
# Ops that rknn-toolkit2 (2.1) lists as unsupported among the TensorRT ones above; the raw head must
# avoid them (it has no NMS/TopK, and no Range/Neg from index arithmetic) so the dense network
# converts for RK3588-class NPUs. OpenVINO's ONNX frontend takes every op of TENSORRT_OPS.
RKNN_UNSUPPORTED = frozenset(["NonMaxSuppression", "TopK", "Range", "Neg"])
RAW_HEAD_OPS = TENSORRT_OPS - RKNN_UNSUPPORTED


def random_model(name: str) -> RTMOModel:
    torch.manual_seed(0)
    return RTMOModel(from_name(name)).eval()


def graph_ops(proto: onnx.ModelProto) -> set[tuple[str, str]]:
    return {(node.domain, node.op_type) for node in proto.graph.node}


@pytest.mark.parametrize(
    ("name", "keypoints"),
    [("rtmo-t", 17), ("rtmo-s", 17), ("rtmo-m", 17), ("rtmo-l", 17), ("rtmo-s-crowd", 14)],
)
def test_every_variant_exports(tmp_path, name, keypoints):
    path = export_onnx(random_model(name), tmp_path / f"{name}.onnx", SIZE, MAX_DET)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = graph_ops(proto)
    assert {domain for domain, _ in ops} <= {"", "ai.onnx"}, ops
    assert {op for _, op in ops} <= TENSORRT_OPS, {op for _, op in ops} - TENSORRT_OPS
    assert ("", "NonMaxSuppression") in ops  # the NMS is in the graph, not left to the caller

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (image,) = proto.graph.input
    dets, kpts = proto.graph.output
    assert (image.name, dets.name, kpts.name) == ("input", "dets", "keypoints")
    assert dims(image) == ["batch", 3, 64, 64]
    assert dims(dets) == ["batch", MAX_DET, 5]
    assert dims(kpts) == ["batch", MAX_DET, keypoints, 3]
    for value in (image, dets, kpts):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).uniform(0, 255, (2, 3, 64, 64)).astype(np.float32)
    out_dets, out_kpts = session.run(None, {"input": images})
    assert out_dets.shape == (2, MAX_DET, 5)
    assert out_kpts.shape == (2, MAX_DET, keypoints, 3)
    assert np.isfinite(out_dets).all()
    assert np.isfinite(out_kpts).all()


@pytest.mark.parametrize(
    ("name", "keypoints", "channels"),
    # t and l: the smallest network and the one without CSPRep conv3 (Identity); the other
    # variants' networks are made of the same ops (test_every_variant_exports).
    [("rtmo-t", 17, 192), ("rtmo-l", 17, 512)],
)
def test_raw_head_exports(tmp_path, name, keypoints, channels):
    """The dense predictions of every prior (20 at 64x64), nothing after them in the graph; ops
    of TensorRT's parser minus those RKNN's converter lacks; the sidecar beside the file."""
    from rtmo.postprocessor import file_sha256, read_sidecar

    path = export_onnx(random_model(name), tmp_path / f"{name}.onnx", SIZE, head="raw")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = graph_ops(proto)
    assert {domain for domain, _ in ops} <= {"", "ai.onnx"}, ops
    assert {op for _, op in ops} <= RAW_HEAD_OPS, {op for _, op in ops} - RAW_HEAD_OPS

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    outputs = {o.name: dims(o) for o in proto.graph.output}
    assert outputs == {
        "scores": ["batch", 20],
        "boxes": ["batch", 20, 4],
        "keypoint_scores": ["batch", 20, keypoints],
        "pose_vecs": ["batch", 20, channels],
    }
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    sidecar = tmp_path / f"{name}.dcc.npz"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta == {
        "rtmo_variant": from_name(name).name,
        "rtmo_head": "raw",
        "input_size": "64x64",
        "fp16": "False",
        "rtmo_sidecar": sidecar.name,
        "rtmo_sidecar_sha256": file_sha256(sidecar),
    }
    state = read_sidecar(sidecar)
    assert (state.config.name, state.input_size) == (from_name(name).name, SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, sidecar.name])

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).uniform(0, 255, (2, 3, 64, 64)).astype(np.float32)
    scores, boxes, kpt_scores, pose_vecs = session.run(None, {"input": images})
    assert (scores.shape, boxes.shape) == ((2, 20), (2, 20, 4))
    assert (kpt_scores.shape, pose_vecs.shape) == ((2, 20, keypoints), (2, 20, channels))
    assert ((scores > 0) & (scores < 1)).all()
    assert (boxes[..., 2:] > boxes[..., :2]).all()  # decoded xyxy


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_det": 5}, "max_det: a raw-head graph has no NMS"),
        ({"score_thr": 0.2, "nms_thr": 0.5}, "score_thr, nms_thr: a raw-head graph has no NMS"),
        ({"head": "dense"}, r"head must be one of \('full', 'raw'\), got 'dense'"),
    ],
)
def test_raw_head_refuses_post_options(tmp_path, kwargs, match):
    kwargs = {"head": "raw", **kwargs}
    with pytest.raises(ValueError, match=match):
        export_onnx(random_model("rtmo-t"), tmp_path / "x.onnx", SIZE, **kwargs)
    assert not list(tmp_path.iterdir())


def test_fixed_batch_opset_and_metadata(tmp_path):
    path = export_onnx(
        random_model("rtmo-t"),
        tmp_path / "t.onnx",
        (96, 64),
        5,
        dynamic_batch=False,
        opset=14,
        nms_thr=0.5,
    )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 96]
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {14}
    assert {p.key: p.value for p in proto.metadata_props} == {
        "rtmo_variant": "rtmo-t-body7",
        "rtmo_head": "full",
        "input_size": "96x64",
        "max_det": "5",
        "score_thr": "0.1",
        "nms_thr": "0.5",
        "fp16": "False",
    }
    runner = OnnxRuntimeModel(path)
    assert (runner.input_size, runner.max_det, runner.nms_thr) == ((96, 64), 5, 0.5)
    assert runner.run(torch.zeros(1, 3, 64, 96))[0].shape == (1, 5, 5)
    with pytest.raises(Exception, match="index: 0 Got: 2 Expected: 1"):
        runner.run(torch.zeros(2, 3, 64, 96))


def test_fp16_weights_float32_interface(tmp_path):
    model = random_model("rtmo-t")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = export_onnx(model, tmp_path / "t16.onnx", SIZE, MAX_DET, fp16=True)
    after = model.state_dict()  # the export works on a fused fp16 copy
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    conv_weights = {node.input[1] for node in proto.graph.node if node.op_type == "Conv"}
    types = {init.data_type for init in proto.graph.initializer if init.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dets, _ = OnnxRuntimeModel(path).run(torch.full((1, 3, 64, 64), 114.0))
    assert dets.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_size": (100, 64)}, ValueError, r"multiples of 32, got \(100, 64\)"),
        ({"input_size": (64,)}, ValueError, "input_size must be"),
        ({"max_det": 21}, ValueError, r"max_det must be an int in \[1, 20\]"),
        ({"max_det": 0}, ValueError, "max_det must be"),
        ({"opset": 13}, ValueError, "opset must be an int >= 14"),
        ({"score_thr": 1.0}, ValueError, r"score_thr must be in \[0, 1\)"),
        ({"nms_thr": 0.0}, ValueError, r"nms_thr must be in \(0, 1\]"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    args = {"input_size": SIZE, "max_det": MAX_DET, **kwargs}
    with pytest.raises(error, match=match):
        export_onnx(random_model("rtmo-t"), tmp_path / "x.onnx", **args)
    assert not (tmp_path / "x.onnx").exists()


def test_not_a_model(tmp_path):
    with pytest.raises(
        TypeError, match="model must be an RTMOModel or an RTMO predictor, got Linear"
    ):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")


@pytest.mark.parametrize(("head", "earlier"), [("full", True), ("raw", False), ("raw", True)])
def test_a_failed_export_leaves_the_folder_as_it_was(tmp_path, monkeypatch, head, earlier):
    """The export fails at its last step, after the graph and (raw head) the sidecar are written:
    no partial file is left, and an earlier export's files are untouched; a later export that
    succeeds replaces them."""
    import rtmo.export
    from rtmo.postprocessor import read_sidecar, sidecar_path

    path = tmp_path / "t.onnx"
    if earlier:
        for file in (path, sidecar_path(path)):
            file.write_bytes(b"earlier export")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(*args):
        raise OSError("no space left on device")

    monkeypatch.setattr(rtmo.export, "_finish", disk_full)
    post = {"max_det": MAX_DET} if head == "full" else {}
    with pytest.raises(OSError, match="no space left"):
        export_onnx(random_model("rtmo-t"), path, SIZE, head=head, **post)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    if head == "raw":
        monkeypatch.undo()
        export_onnx(random_model("rtmo-t"), path, SIZE, head="raw")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.dcc.npz", "t.onnx"]
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        assert read_sidecar(sidecar_path(path)).input_size == SIZE


def test_export_command(tmp_path, capsys):
    """`rtmo export`'s arguments and run: a published-layout checkpoint in, an ONNX file out."""
    import argparse

    from checkpoints import write_published_checkpoint

    from rtmo.commands.export import add_arguments, run

    checkpoint = write_published_checkpoint(random_model("rtmo-t"), tmp_path / "t.pth")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out" / "t.onnx"
    args = parser.parse_args(
        [
            *("--checkpoint", str(checkpoint), "--out", str(out), "--input-size", "96x64"),
            *("--max-det", "7", "--no-dynamic-batch"),
        ]
    )
    assert run(args) == 0
    assert f"rtmo-t-body7 exported to {out}" in capsys.readouterr().err
    runner = OnnxRuntimeModel(out)
    assert (runner.input_size, runner.max_det, runner.config.name) == ((96, 64), 7, "rtmo-t-body7")
    inputs = runner.session.get_inputs()
    assert inputs[0].shape == [1, 3, 64, 96]


@pytest.mark.parametrize(
    ("checkpoint_name", "out_name", "head"),
    [("t.pth", "t.pth", "full"), ("t.dcc.npz", "t.onnx", "raw")],
)
def test_export_command_never_overwrites_the_checkpoint(
    tmp_path, capsys, checkpoint_name, out_name, head
):
    from checkpoints import write_published_checkpoint

    from rtmo import cli

    checkpoint = write_published_checkpoint(random_model("rtmo-t"), tmp_path / checkpoint_name)
    before = checkpoint.read_bytes()
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / out_name)]
    assert cli.main([*argv, "--head", head]) == cli.EXIT_USAGE
    assert "would overwrite the checkpoint" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "size"), [("640x480", (640, 480)), ("416", (416, 416)), ("320,256", (320, 256))]
)
def test_input_size_argument(text, size):
    from rtmo.commands.export import parse_input_size

    assert parse_input_size(text) == size


@pytest.mark.parametrize("text", ["", "axb", "1x2x3"])
def test_bad_input_size_argument(text):
    import argparse

    from rtmo.commands.export import parse_input_size

    with pytest.raises(argparse.ArgumentTypeError, match="expected WxH or a single side"):
        parse_input_size(text)
