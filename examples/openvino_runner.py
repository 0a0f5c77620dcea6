"""RTMO with the dense network in OpenVINO (CPU) and the post-process on rtmo's kernels.

    rtmo export --checkpoint rtmo-s.pth --out rtmo-s.onnx --head raw   # + rtmo-s.dcc.npz
    python examples/openvino_runner.py rtmo-s.onnx photo.jpg [more images...]

This is what `RTMO.from_onnx("rtmo-s.onnx", runtime="openvino")` does, spelled out with the
OpenVINO API, for pipelines that run the engine themselves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import openvino

from rtmo import Poses, Postprocessor
from rtmo.postprocessor import RAW_OUTPUT_NAMES
from rtmo.preprocess import letterbox_batch
from rtmo.sources import read_image


def run_openvino(onnx_path: Path, images: list[np.ndarray], precision: str = "f32") -> list[Poses]:
    """BGR images (H, W, 3) uint8 -> one Poses per image, in each image's pixels."""
    post = Postprocessor.from_sidecar(onnx_path)  # the .dcc.npz next to the file, checked
    core = openvino.Core()
    compiled = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    batch, letterboxes = letterbox_batch(images, post.input_size)  # (B, 3, h, w) float32
    result = compiled({"input": batch})
    dense = {name: np.asarray(result[name]) for name in RAW_OUTPUT_NAMES}
    return post(dense, letterboxes, score_thr=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path, help="a raw-head export (rtmo export --head raw)")
    parser.add_argument("images", type=Path, nargs="+")
    args = parser.parse_args()
    images = [read_image(path) for path in args.images]
    for path, poses in zip(args.images, run_openvino(args.onnx, images), strict=True):
        print(path, poses.to_json())


if __name__ == "__main__":
    main()
