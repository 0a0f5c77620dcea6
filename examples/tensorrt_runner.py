"""RTMO with the dense network in TensorRT and the post-process on rtmo's CUDA kernels.

UNTESTED: written against the TensorRT 10 Python API (`tensorrt`, strongly typed networks, named
I/O tensors, `execute_async_v3`) and type-checked with mypy (`tensorrt` ships no type stubs, so
only the rtmo and torch calls are checked); it has never run here: this project's CI has no GPU.

    rtmo export --checkpoint rtmo-s.pth --out rtmo-s.onnx --head raw --fp16   # + rtmo-s.dcc.npz
    python examples/tensorrt_runner.py rtmo-s.onnx photo.jpg [more images...]

The raw-head graph has no NMS, so TensorRT's ONNX parser takes it without plugins; the batch axis
is dynamic (an optimization profile from 1 to --max-batch). The engine's outputs stay on the GPU
as torch tensors and go straight to `Postprocessor(device="cuda")`: NMS and DCC on rtmo's
CUDA/Triton kernels, no host copy until the per-image split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorrt as trt
import torch

from rtmo import Poses, Postprocessor
from rtmo.postprocessor import RAW_OUTPUT_NAMES
from rtmo.preprocess import letterbox_batch
from rtmo.sources import read_image


class TensorRTDense:
    """A raw-head export built into a TensorRT engine: (B, 3, h, w) float32 CUDA batch -> the
    four dense outputs as CUDA tensors (scores, boxes, keypoint_scores, pose_vecs)."""

    def __init__(self, onnx_path: Path, input_size: tuple[int, int], max_batch: int = 8) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        # Strongly typed: each layer runs in the precision the ONNX file gives it (export with
        # --fp16 for a float16 network; inputs, outputs and the box decode stay float32).
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        w, h = input_size
        profile.set_shape("input", (1, 3, h, w), (max_batch, 3, h, w), (max_batch, 3, h, w))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"{onnx_path}: TensorRT could not build an engine")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        self.context = self.engine.create_execution_context()
        self.max_batch = max_batch

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if not 1 <= batch.shape[0] <= self.max_batch:
            raise ValueError(f"batch of {batch.shape[0]}: the engine takes 1..{self.max_batch}")
        batch = batch.to("cuda", torch.float32).contiguous()
        self.context.set_input_shape("input", tuple(batch.shape))
        self.context.set_tensor_address("input", batch.data_ptr())
        outputs: dict[str, torch.Tensor] = {}
        for name in RAW_OUTPUT_NAMES:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        # On torch's current stream: the post-process that follows is ordered after it.
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return outputs


def run_tensorrt(onnx_path: Path, images: list[np.ndarray], max_batch: int = 8) -> list[Poses]:
    """BGR images (H, W, 3) uint8 -> one Poses per image, in each image's pixels."""
    post = Postprocessor.from_sidecar(onnx_path, device="cuda")
    engine = TensorRTDense(onnx_path, post.input_size, max_batch)
    batch, letterboxes = letterbox_batch(images, post.input_size)
    dense = engine(torch.from_numpy(batch))
    return post(dense, letterboxes, score_thr=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path, help="a raw-head export (rtmo export --head raw)")
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--max-batch", type=int, default=8)
    args = parser.parse_args()
    images = [read_image(path) for path in args.images]
    for path, poses in zip(
        args.images, run_tensorrt(args.onnx, images, args.max_batch), strict=True
    ):
        print(path, poses.to_json())


if __name__ == "__main__":
    main()
