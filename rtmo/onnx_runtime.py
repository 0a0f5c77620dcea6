"""Runs an exported RTMO file (`rtmo.export`) in onnxruntime, with `RTMOModel.predict`'s contract.

    runner = OnnxRuntimeModel("rtmo-s.onnx")
    people = runner.predict(images)  # images (B, 3, H, W) float BGR 0..255, letterboxed

A full-head graph holds the whole post-process (NMS and DCC decode), so `predict` only strips the
zero padding rows. Thresholds and the number of slots are baked into the file (read from its
metadata): a stricter `score_thr` or a smaller `max_det` is applied here, anything the graph
cannot give (a lower score threshold, another NMS IoU, more slots) is refused with the value to
export with. Files without our metadata (e.g. mmdeploy's) run too, with their input size read from
the graph.

A raw-head graph (`export_onnx(..., head="raw")`) gives the dense predictions; `predict` runs the
post-process on rtmo's kernels (`rtmo.Postprocessor`, from the sidecar next to the file), with
thresholds and max_det chosen per call.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rtmo.config import RTMOConfig, from_name
from rtmo.export import INPUT_NAME, OUTPUT_NAMES
from rtmo.model import RTMOModel
from rtmo.postprocessor import RAW_OUTPUT_NAMES, Postprocessor

PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
# Tolerance when comparing a requested threshold with the one stored as text in the file.
_THRESHOLD_TOL = 1e-6


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in PROVIDERS if p in available]


class OnnxRuntimeModel:
    """An exported RTMO graph in an onnxruntime session.

    Attributes: path, session, head ("full" or "raw"), config (the variant's RTMOConfig, or None
    when the file does not name one), input_size (w, h), max_det, score_thr, nms_thr (None when
    not recorded, and for a raw head, whose post-process takes them per call), num_keypoints,
    postprocessor (the raw head's `Postprocessor`, else None).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
        variant: str | None = None,
    ) -> None:
        """path: an .onnx file from `rtmo.export.export_onnx` (or mmdeploy's RTMO export).
        providers: onnxruntime execution providers, default CUDA (if present) then CPU.
        threads: intra-op threads (default: onnxruntime's choice).
        variant: the RTMO variant (e.g. "rtmo-s") of a file that does not record it."""
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=providers or default_providers()
        )
        self.head = self._check_interface()
        meta = self.session.get_modelmeta().custom_metadata_map
        self.fp16 = meta.get("fp16") == "True"
        self.postprocessor: Postprocessor | None = None
        if self.head == "raw":
            self._open_raw(meta, variant)
            return
        name = variant or meta.get("rtmo_variant")
        self.config: RTMOConfig | None = from_name(name) if name else None
        dets, keypoints = self.session.get_outputs()
        h, w = self.session.get_inputs()[0].shape[2:]
        self.input_size: tuple[int, int] = _parse_size(meta.get("input_size")) or (w, h)
        if not all(
            isinstance(n, int) for n in (*self.input_size, dets.shape[1], keypoints.shape[2])
        ):
            raise ValueError(
                f"{self.path}: the input size, the detection slots and the keypoint count must be "
                f"fixed in the graph, got input {self.session.get_inputs()[0].shape}, dets "
                f"{dets.shape}, keypoints {keypoints.shape}"
            )
        self.max_det = int(meta.get("max_det", dets.shape[1]))
        self.num_keypoints = keypoints.shape[2]
        self.score_thr = float(meta["score_thr"]) if "score_thr" in meta else None
        self.nms_thr = float(meta["nms_thr"]) if "nms_thr" in meta else None
        if self.config is not None and self.config.num_keypoints != self.num_keypoints:
            raise ValueError(
                f"{self.path}: the graph outputs {self.num_keypoints} keypoints but variant "
                f"{self.config.name} has {self.config.num_keypoints}"
            )

    def _open_raw(self, meta: dict[str, str], variant: str | None) -> None:
        """A raw-head file: its post-process from the sidecar, checked against the graph."""
        self.postprocessor = Postprocessor.for_onnx(self.path, meta, variant)
        self.config = self.postprocessor.config
        self.input_size = self.postprocessor.input_size
        self.num_keypoints = self.config.num_keypoints
        self.max_det = self.score_thr = self.nms_thr = None
        h, w = self.session.get_inputs()[0].shape[2:]
        if (w, h) != self.input_size:
            raise ValueError(
                f"{self.path}: the graph's input is {w}x{h} but its sidecar is for "
                f"{self.input_size[0]}x{self.input_size[1]}"
            )

    @classmethod
    def from_model(
        cls,
        model: RTMOModel,
        path: str | os.PathLike | None = None,
        providers: list[str] | None = None,
        threads: int | None = None,
        **export_options: Any,
    ) -> OnnxRuntimeModel:
        """Exports `model` (`rtmo.export.export_onnx` options: input_size, max_det, fp16,
        score_thr, nms_thr, ...) to `path`, default a file in a temporary folder that lives
        as long as the returned runner, and opens it."""
        from rtmo.export import export_onnx

        if path is not None:
            return cls(export_onnx(model, path, **export_options), providers, threads)
        folder = tempfile.TemporaryDirectory(prefix="rtmo-onnx-")
        path = Path(folder.name) / f"{model.config.name}.onnx"
        runner = cls(export_onnx(model, path, **export_options), providers, threads)
        runner._export_folder = folder  # removed with the runner
        return runner

    def __repr__(self) -> str:
        name = self.config.name if self.config else "RTMO"
        return (
            f"OnnxRuntimeModel({name!r}, path={str(self.path)!r}, input_size={self.input_size}, "
            f"providers={self.session.get_providers()})"
        )

    def run(self, images: Tensor | np.ndarray) -> tuple[np.ndarray, ...]:
        """The graph's outputs. Full head: dets (B, max_det, 5), keypoints (B, max_det, K, 3),
        padded rows 0. Raw head: scores (B, P), boxes (B, P, 4), keypoint_scores (B, P, K),
        pose_vecs (B, P, C).

        images (B, 3, h, w) float BGR 0..255 with (w, h) == input_size.
        """
        batch = check_images(images, self.input_size)
        names = RAW_OUTPUT_NAMES if self.head == "raw" else OUTPUT_NAMES
        return tuple(self.session.run(list(names), {INPUT_NAME: batch}))

    def predict(
        self,
        images: Tensor | np.ndarray,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_det: int | None = None,
        backend: str = "auto",
    ) -> list[dict[str, Tensor]]:
        """Detections per image, as `RTMOModel.predict`: dicts with "boxes" (n, 4) xyxy,
        "scores" (n,), "keypoints" (n, K, 2), "keypoint_scores" (n, K) in model-input pixels,
        by descending score (float32 CPU tensors).

        Full head: score_thr may be at or above the file's (people at or below it are dropped);
        nms_thr must be the file's; max_det at most the file's; `backend` has no meaning (it is
        accepted so the two are interchangeable). Raw head: any thresholds and max_det (default
        0.1, 0.65, 100), post-processed on the kernel `backend`.
        """
        if self.postprocessor is not None:
            options = {"score_thr": score_thr, "nms_thr": nms_thr, "max_det": max_det}
            return self.postprocessor.predict(self.run(images), backend=backend, **options)
        score_thr = self._check_options(score_thr, nms_thr, max_det)
        dets, keypoints = self.run(images)
        limit = self.max_det if max_det is None else max_det
        results = []
        for image_dets, image_keypoints in zip(dets, keypoints, strict=True):
            # Rows are sorted by descending score and padding rows have score 0.
            n = min(int((image_dets[:, 4] > score_thr).sum()), limit)
            results.append(
                {
                    "boxes": torch.from_numpy(image_dets[:n, :4].copy()),
                    "scores": torch.from_numpy(image_dets[:n, 4].copy()),
                    "keypoints": torch.from_numpy(image_keypoints[:n, :, :2].copy()),
                    "keypoint_scores": torch.from_numpy(image_keypoints[:n, :, 2].copy()),
                }
            )
        return results

    def _check_interface(self) -> str:
        """ "full" or "raw", from the graph's input and output names."""
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        return graph_head(self.path, inputs, outputs)

    def _check_options(
        self, score_thr: float | None, nms_thr: float | None, max_det: int | None
    ) -> float:
        """Validates the per-call options against the baked-in ones; the score threshold to use."""
        baked = self.score_thr if self.score_thr is not None else 0.0
        if score_thr is not None and score_thr < baked - _THRESHOLD_TOL:
            raise ValueError(
                f"score_thr={score_thr} is below the {baked} exported into {self.path.name}: "
                "export again with a lower score_thr"
            )
        if (
            nms_thr is not None
            and self.nms_thr is not None
            and abs(nms_thr - self.nms_thr) > _THRESHOLD_TOL
        ):
            raise ValueError(
                f"nms_thr={nms_thr} differs from the {self.nms_thr} exported into "
                f"{self.path.name}: export again with nms_thr={nms_thr}"
            )
        if max_det is not None and not 1 <= max_det <= self.max_det:
            raise ValueError(
                f"max_det={max_det} must be in [1, {self.max_det}] ({self.path.name} has "
                f"{self.max_det} slots per image): export again with a larger max_det"
            )
        return baked if score_thr is None else max(score_thr, baked)


def graph_head(path: Path, inputs: list[str], outputs: list[str]) -> str:
    """ "full" (outputs dets, keypoints) or "raw" (the dense predictions) from a graph's input
    and output names; ValueError for any other graph."""
    if inputs == [INPUT_NAME] and outputs == list(OUTPUT_NAMES):
        return "full"
    if inputs == [INPUT_NAME] and outputs == list(RAW_OUTPUT_NAMES):
        return "raw"
    raise ValueError(
        f"{path}: not an RTMO pose-detection graph: expected input {[INPUT_NAME]} and outputs "
        f"{list(OUTPUT_NAMES)} (full head) or {list(RAW_OUTPUT_NAMES)} (raw head), got inputs "
        f"{inputs} and outputs {outputs}"
    )


def check_images(images: Any, input_size: tuple[int, int]) -> np.ndarray:
    """A (B, 3, h, w) float batch as a contiguous float32 array; errors name the problem."""
    if isinstance(images, Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise TypeError(
            f"images must be a torch.Tensor or numpy array, got {type(images).__name__}"
        )
    w, h = input_size
    if images.ndim != 4 or images.shape[1:] != (3, h, w):
        raise ValueError(
            f"images must have shape (B, 3, {h}, {w}) (the graph's fixed input size), "
            f"got {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got a batch of 0")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be float (BGR 0..255), got {images.dtype}")
    return np.ascontiguousarray(images, dtype=np.float32)


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    w, h = text.split("x")
    return int(w), int(h)
