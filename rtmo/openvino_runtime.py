"""Runs a raw-head RTMO export (`export_onnx(..., head="raw")`) in OpenVINO on the CPU, with the
post-process (NMS + DCC) on rtmo's kernels: `RTMOModel.predict`'s contract.

    runner = OpenVinoModel("rtmo-s.onnx")           # the sidecar rtmo-s.dcc.npz next to it
    people = runner.predict(images, score_thr=0.3)  # images (B, 3, H, W) float BGR, letterboxed

A full-head file is refused: its NMS and DCC belong in onnxruntime (`rtmo.onnx_runtime`).
`precision="bf16"` runs the network in bfloat16 on CPUs with native bf16 (AVX512-BF16, AMX).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from rtmo.export import INPUT_NAME
from rtmo.onnx_runtime import check_images, graph_head
from rtmo.postprocessor import RAW_OUTPUT_NAMES, Postprocessor

PRECISIONS = ("fp32", "bf16")
# OpenVINO's INFERENCE_PRECISION_HINT values.
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 natively here."""
    import openvino

    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in capabilities


class OpenVinoModel:
    """A raw-head RTMO graph compiled by OpenVINO for the CPU, post-processed by `Postprocessor`.

    Attributes: path, head ("raw"), config, input_size (w, h), precision, num_keypoints,
    postprocessor, compiled (the openvino CompiledModel); max_det, score_thr and nms_thr are None
    (chosen per call). Calls from several threads take turns on the one infer request (OpenVINO
    spreads each over the CPU's cores already).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        precision: str = "fp32",
        threads: int | None = None,
        variant: str | None = None,
    ) -> None:
        """path: a raw-head .onnx file with its sidecar beside it. precision: "fp32", or "bf16"
        where the CPU has it. threads: inference threads (default: OpenVINO's choice).
        variant: checked against the file's (a ValueError if they differ)."""
        import openvino

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "bf16" and not cpu_has_bf16():
            raise ValueError("precision='bf16': this CPU has no native bfloat16 (AVX512-BF16/AMX)")
        core = openvino.Core()
        model = core.read_model(str(self.path))
        inputs = [i.get_any_name() for i in model.inputs]
        outputs = [o.get_any_name() for o in model.outputs]
        self.head = graph_head(self.path, inputs, outputs)
        if self.head != "raw":
            raise ValueError(
                f"{self.path}: a full-head graph (NMS and DCC inside); OpenVINO runs raw-head "
                "files: export with head='raw' (`rtmo export --head raw`), or run this one with "
                "runtime='onnxruntime'"
            )
        meta = _framework_metadata(model)
        self.postprocessor = Postprocessor.for_onnx(self.path, meta, variant)
        self.config = self.postprocessor.config
        self.input_size = self.postprocessor.input_size
        self.num_keypoints = self.config.num_keypoints
        self.max_det = self.score_thr = self.nms_thr = None
        self.precision = precision
        self.fp16 = meta.get("fp16") == "True"
        options: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision]}
        if threads is not None:
            options["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", options)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"OpenVinoModel({self.config.name!r}, path={str(self.path)!r}, "
            f"input_size={self.input_size}, precision={self.precision!r})"
        )

    def run(self, images: Tensor | np.ndarray) -> tuple[np.ndarray, ...]:
        """The dense outputs: scores (B, P), boxes (B, P, 4), keypoint_scores (B, P, K),
        pose_vecs (B, P, C), float32. images (B, 3, h, w) float BGR 0..255, letterboxed."""
        batch = check_images(images, self.input_size)
        with self._lock:
            results = self._request.infer({INPUT_NAME: batch})
            # Copies: the request's output buffers are reused by the next call.
            return tuple(np.array(results[name], dtype=np.float32) for name in RAW_OUTPUT_NAMES)

    def predict(
        self,
        images: Tensor | np.ndarray,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_det: int | None = None,
        backend: str = "auto",
    ) -> list[dict[str, Tensor]]:
        """Detections per image, as `RTMOModel.predict` (model-input pixels, float32 CPU
        tensors, by descending score); thresholds and max_det default to 0.1, 0.65, 100."""
        options = {"score_thr": score_thr, "nms_thr": nms_thr, "max_det": max_det}
        return self.postprocessor.predict(self.run(images), backend=backend, **options)


def _framework_metadata(model: Any) -> dict[str, str]:
    """The ONNX file's metadata_props, which OpenVINO keeps in the model's rt_info."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    framework = info["framework"]
    return {key: framework[key].astype(str) for key in framework}
