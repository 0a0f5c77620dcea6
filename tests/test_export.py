"""ONNX export: every variant exports to a checker-clean graph of standard ops that TensorRT's
parser takes, with mmdeploy's input/output names and shapes, a dynamic or fixed batch, and clear
errors for bad arguments. Numbers (parity with torch) are in test_onnx_runtime.py.

Exports run at 64x64 (20 priors) to keep the five variants at ~50 s on 2 cores.
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
    with pytest.raises(TypeError, match="model must be an RTMOModel, got Linear"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")


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
