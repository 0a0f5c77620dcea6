"""The runner examples of the README (examples/): the OpenVINO one runs here and gives what
`RTMO.from_onnx(..., runtime="openvino")` gives; both, the TensorRT one included (no TensorRT or
GPU here, so it never runs), pass mypy against rtmo's API."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from rtmo.export import export_onnx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_openvino_example_matches_the_predictor(calibrated_rtmo_t, tmp_path):
    from rtmo import RTMO

    model, images, _ = calibrated_rtmo_t
    path = export_onnx(model, tmp_path / "t.onnx", (160, 160), head="raw")
    frames = [images[i].permute(1, 2, 0).round().to(torch.uint8).numpy()[:, 10:] for i in (0, 1)]
    poses = load_example("openvino_runner").run_openvino(path, frames)
    expected = RTMO.from_onnx(path, runtime="openvino", score_thr=0.3)(frames)
    assert len(poses) == 2
    for ours, theirs in zip(poses, expected, strict=True):
        assert 0 < len(ours) == len(theirs)
        assert ours.image_size == (150, 160)
        np.testing.assert_array_equal(ours.scores, theirs.scores)  # the same engine and kernels
        np.testing.assert_array_equal(ours.keypoints, theirs.keypoints)


def test_runner_examples_type_check(tmp_path):
    """mypy (configured in pyproject.toml) on examples/: calls into rtmo are checked; torch,
    openvino and tensorrt are untyped there."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), str(EXAMPLES)],
        cwd=EXAMPLES.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found in 2 source files" in result.stdout
