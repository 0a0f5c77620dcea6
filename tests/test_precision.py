"""Precision modes on the CPU: bf16 where the CPU has native bfloat16 (the dense network in bf16,
the post-process in float32), refused where it would be emulated; fp16 refused on the CPU.

The bf16 tests run on CPUs with AVX512-BF16 or AMX-BF16 and are skipped elsewhere. Their model
is the calibrated RTMO-t of conftest.py: random weights amplify rounding (torch's float32 run is
~1e-5 relative from float64, a bf16 run ~0.03 in score, ~2 px in box median), so bf16 is checked
in two parts: the post-process of the bf16 network's outputs is float32-exact, and the network's
own error is that of bfloat16 rounding (no larger than torch autocast's on the same network).
"""

from __future__ import annotations

import copy

import pytest
import torch
from calibrated import MAX_DET, assert_same_people
from test_predictor import ContentModel

from rtmo import precision
from rtmo.model.postprocess import decode_dense, postprocess_padded, split_predictions
from rtmo.predictor import RTMO

NATIVE_BF16 = precision.bf16_support() is not None
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bfloat16")
# Our bf16 network's error against float64 over torch autocast's on the calibrated RTMO-t:
# measured <= 0.97 for the median and <= 1.29 for the largest error of each output (autocast
# keeps a few ops in float32, and it converts the unfused network).
MEDIAN_ERROR_RATIO = 1.25
MAX_ERROR_RATIO = 2.0


def test_fp16_is_refused_on_the_cpu():
    with pytest.raises(ValueError, match="dtype fp16 runs on a CUDA device only"):
        RTMO(ContentModel(), device="cpu", dtype="fp16")


def test_bf16_is_refused_where_it_would_be_emulated(monkeypatch):
    monkeypatch.setattr(precision, "cpu_features", lambda: frozenset({"avx2", "avx512_f"}))
    with pytest.raises(ValueError, match=r"no native bfloat16 .* would be emulated"):
        RTMO(ContentModel(), device="cpu", dtype="bf16")
    assert "  bf16       no (needs AVX512-BF16 or AMX-BF16" in precision.precision_lines()[2]


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({"avx512_bf16"}, "AVX512-BF16"),
        ({"avx512_bf16", "amx_bf16", "amx_tile"}, "AMX-BF16"),
        ({"avx512_f", "avx512_vnni"}, None),
    ],
)
def test_bf16_support_is_named_by_the_best_feature(monkeypatch, features, expected):
    monkeypatch.setattr(precision, "cpu_features", lambda: frozenset(features))
    assert precision.bf16_support() == expected


def test_cpu_features_are_torchs_probe():
    reported = torch.cpu.get_capabilities()
    assert precision.cpu_features() == {k for k, v in reported.items() if v is True}


@pytest.fixture(scope="module")
def bf16_predictor(calibrated_rtmo_t):
    model, _, _ = calibrated_rtmo_t
    return RTMO(copy.deepcopy(model), device="cpu", dtype="bf16", max_det=MAX_DET)


@needs_bf16
def test_bf16_converts_the_network_once_and_keeps_the_dcc_in_float32(bf16_predictor):
    model = bf16_predictor.model
    dense = [p for name, p in model.named_parameters() if not name.startswith("head.dcc.")]
    assert {p.dtype for p in dense} == {torch.bfloat16}
    convolutions = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    assert {p.dtype for p in model.head.dcc.parameters()} == {torch.float32}


@needs_bf16
def test_bf16_predictions_come_out_in_float32(bf16_predictor, calibrated_rtmo_t):
    _, images, _ = calibrated_rtmo_t
    poses = bf16_predictor(images[0])
    assert len(poses) > 0
    arrays = (poses.boxes, poses.scores, poses.keypoints, poses.keypoint_scores)
    assert {a.dtype.name for a in arrays} == {"float32"}


@needs_bf16
def test_bf16_post_process_is_float32_exact(bf16_predictor, calibrated_rtmo_t):
    """The predictor's people equal a float64 post-process of its bf16 network's own outputs:
    the box decode, NMS and DCC take the bf16 outputs and lose nothing more."""
    _, images, _ = calibrated_rtmo_t
    model = bf16_predictor.model
    with torch.no_grad():
        actual = model.predict(images.bfloat16(), max_det=MAX_DET)
        dense = model(images.bfloat16())
        dense64 = dense._replace(**{k: getattr(dense, k).double() for k in dense._fields})
        dcc64 = copy.deepcopy(model.head.dcc).double()
        size = (images.shape[-1], images.shape[-2])
        padded = postprocess_padded(dense64, dcc64, size, 0.1, 0.65, MAX_DET, False, "reference")
    truth = split_predictions(padded)
    assert [len(p["scores"]) for p in actual] == [len(p["scores"]) for p in truth]
    rounded = [{k: v.float() for k, v in people.items()} for people in truth]
    assert_same_people(rounded, actual, truth)


@needs_bf16
def test_bf16_network_error_is_bfloat16_rounding(bf16_predictor, calibrated_rtmo_t):
    model, images, _ = calibrated_rtmo_t
    with torch.no_grad():
        exact = decode_dense(copy.deepcopy(model).double()(images.double()))
        ours = decode_dense(bf16_predictor.model(images.bfloat16()))
        with torch.autocast("cpu", torch.bfloat16):
            autocast = decode_dense(model(images))
    for name, truth in zip(exact._fields, exact, strict=True):
        error = (getattr(ours, name).double() - truth).abs()
        bound = (getattr(autocast, name).double() - truth).abs()
        assert error.median() <= MEDIAN_ERROR_RATIO * bound.median(), name
        assert error.max() <= MAX_ERROR_RATIO * bound.max(), name
