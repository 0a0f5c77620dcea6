"""`RTMO`: images in, `Poses` out. Loads a model, letterboxes a batch, runs one forward, maps the
people back to each image's pixels."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from rtmo.onnx_runtime import OnnxRuntimeModel
from rtmo.openvino_runtime import OpenVinoModel
from rtmo.options import (
    NMS_THR,
    SCORE_THR,
    check_backend,
    check_device,
    check_interval,
    check_positive_int,
    default_device,
)
from rtmo.postprocessor import to_poses
from rtmo.precision import check_cpu_dtype, to_precision
from rtmo.preprocess import Letterbox, letterbox_image, letterbox_tensor, pil_to_bgr, to_bgr_uint8
from rtmo.results import Poses
from rtmo.sources import read_image

if TYPE_CHECKING:
    from rtmo.stream import FrameInfo, StreamInput
    from rtmo.track import TrackingPipeline

RUNTIMES = ("torch", "onnxruntime", "openvino")
# Runners of exported files: they take host float32 batches and predict like RTMOModel.
EXPORTED = (OnnxRuntimeModel, OpenVinoModel)
# A PIL.Image.Image is accepted too (converted from its mode to BGR); not named here so that PIL
# is not imported.
ImageInput = str | os.PathLike | np.ndarray | torch.Tensor
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


class PreparedBatch(NamedTuple):
    """A letterboxed batch on the model's device and dtype, each image's placement, and the
    seconds that preparing it took."""

    batch: torch.Tensor
    letterboxes: list[Letterbox]
    seconds: float


class RTMO:
    """RTMO multi-person pose estimator.

    RTMO.from_checkpoint("rtmo-s_8xb32-600e_coco-640x640-8db55a59_20231211.pth") loads an official
    mmpose checkpoint; RTMO("rtmo-s") builds the model with random weights (for benchmarking).

    Calling it on one image (a path, an HxWxC uint8/uint16 BGR array, a PIL image or a (3, H, W)
    BGR 0..255 tensor) returns `Poses`; a list of images, or a (B, 3, H, W) tensor, returns a list
    of `Poses` from a single batched forward pass. Arrays and tensors are BGR, as OpenCV reads
    them; a PIL image is converted from its own mode (RGB, L, RGBA, ...).

    Options: score_thr (person score threshold), nms_thr (box IoU above which the lower-scored
    person is dropped), max_det (people per image), dtype ("fp32"; "bf16" on a GPU or on a CPU
    with native bfloat16, see `rtmo.precision`; "fp16" on a GPU), backend (kernel backend:
    "auto", "cpu", "cuda", "triton" or "reference"), use_kernels (False runs the post-process in
    plain PyTorch, as mmpose does, instead of the fused kernels), fuse (fold RepVGG branches
    and BatchNorms for inference; a model passed in is modified in place), trust_checkpoint
    (allow a checkpoint that the safe loader refuses; only for files you trust), runtime
    ("torch"; "onnxruntime": the whole prediction exported to one ONNX graph; "openvino": the
    network exported with head="raw" and run by OpenVINO on the CPU, dtype "fp32" or "bf16",
    the post-process on the kernels). Every option is checked here: a bad value raises
    ValueError/TypeError naming it.

    Threads: one RTMO may be called from several threads at once (inference only reads the
    weights); each call returns its own Poses (tests/test_reliability_concurrency.py).
    """

    def __init__(
        self,
        model: str | torch.nn.Module = "rtmo-s",
        checkpoint: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "fp32",
        backend: str = "auto",
        score_thr: float = 0.1,
        nms_thr: float = 0.65,
        max_det: int = 100,
        trust_checkpoint: bool = False,
        use_kernels: bool = True,
        fuse: bool = True,
        runtime: str = "torch",
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        precision = "fp32"
        if runtime == "openvino":
            # OpenVINO takes float32 input and runs the network at its own precision.
            precision, dtype = _openvino_precision(dtype), "fp32"
        if runtime != "torch":
            device = device or "cpu"  # the runners take host arrays, whatever their provider
        self.device = torch.device(check_device("device", device or default_device()))
        self.dtype = _resolve_dtype(dtype, self.device)
        self.backend = (
            backend
            if runtime == "onnxruntime"
            else check_backend("backend", backend, self.device.type)
        )
        self.checkpoint = None if checkpoint is None else str(checkpoint)  # where weights came from
        self.score_thr = check_interval("score_thr", score_thr, SCORE_THR)
        self.nms_thr = check_interval("nms_thr", nms_thr, NMS_THR)
        self.max_det = check_positive_int("max_det", max_det)
        if isinstance(model, str):
            from rtmo.config import from_name

            from_name(model)  # an unknown name fails here, before any warning or loading
        self._tracking: TrackingPipeline | None = None  # what `track(persist=True)` carries over
        self._tracking_settings: tuple | None = None
        if isinstance(model, (torch.nn.Module, *EXPORTED)):
            if checkpoint is not None:
                raise ValueError("give a model name with `checkpoint`, not a built model")
            net = model
        elif checkpoint is not None:
            from rtmo.checkpoint import load_model

            net = load_model(
                checkpoint,
                model,
                trust_checkpoint=trust_checkpoint,
                use_kernels=use_kernels,
                device=str(self.device),
            )
        else:
            from rtmo.config import from_name
            from rtmo.model import RTMOModel

            warnings.warn(
                f"{model}: no checkpoint given, the model has random weights and its predictions "
                "are meaningless (fine for benchmarking); use RTMO.from_checkpoint(path) to load "
                "official weights",
                UserWarning,
                stacklevel=2,
            )
            net = RTMOModel(from_name(model), use_kernels=use_kernels)
        if runtime == "onnxruntime" and not isinstance(net, OnnxRuntimeModel):
            # The whole prediction exported to a temporary ONNX file, thresholds baked in.
            options = {"max_det": max_det, "score_thr": score_thr, "nms_thr": nms_thr}
            net = OnnxRuntimeModel.from_model(net.eval(), **options)
        if runtime == "openvino" and not isinstance(net, OpenVinoModel):
            net = _openvino_from_model(net.eval(), precision)
        if isinstance(net, EXPORTED):
            self.model, self.config = net, net.config
            return
        net = net.eval()
        if fuse and hasattr(net, "reparameterize"):
            # RepVGG branches and BatchNorms folded into convolutions: same outputs, fewer ops.
            net.reparameterize()
        self.model = to_precision(net, self.device, self.dtype)
        self.config = self.model.config

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, variant: str | None = None, **options: Any
    ) -> RTMO:
        """Loads an official mmpose RTMO checkpoint (.pth); the variant (e.g. "rtmo-s") is found
        from the file when not given. Options as for `RTMO(...)`."""
        if not Path(path).is_file():
            raise FileNotFoundError(_missing_checkpoint_message(path))
        return cls(variant, checkpoint=path, **options)

    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike,
        variant: str | None = None,
        *,
        providers: list[str] | None = None,
        runtime: str = "onnxruntime",
        **options: Any,
    ) -> RTMO:
        """Runs an exported file (`rtmo export`, `rtmo.export.export_onnx`, or mmdeploy's RTMO
        export with `variant` given) through onnxruntime (CUDA provider when present, else CPU)
        or, for a raw-head file, `runtime="openvino"` (CPU; dtype "fp32" or "bf16").

        A full-head file's thresholds and max_det default to those baked into it. A raw-head
        file (`rtmo export --head raw`) runs the dense network in the runtime and the NMS + DCC
        on rtmo's kernels, with the DCC weights of the sidecar next to it; its thresholds and
        max_det are free (defaults 0.1, 0.65, 100). Options as for `RTMO(...)`."""
        if runtime == "openvino":
            precision = _openvino_precision(options.pop("dtype", "fp32"))
            return cls(OpenVinoModel(path, precision, variant=variant), runtime=runtime, **options)
        if runtime != "onnxruntime":
            raise ValueError(f"runtime must be 'onnxruntime' or 'openvino', got {runtime!r}")
        runner = OnnxRuntimeModel(path, providers, variant=variant)
        if runner.config is None:
            raise ValueError(f"{path} does not record its RTMO variant: pass it, e.g. 'rtmo-s'")
        baked = {
            "max_det": runner.max_det,
            "score_thr": runner.score_thr,
            "nms_thr": runner.nms_thr,
        }
        options = {k: v for k, v in baked.items() if v is not None} | options
        return cls(runner, runtime="onnxruntime", **options)

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        if isinstance(self.model, EXPORTED):
            return self.model.input_size
        return tuple(self.config.input_size)

    def export(self, path: str | os.PathLike, head: str = "full", **options: Any) -> Path:
        """Writes this predictor's torch model as ONNX (`rtmo.export.export_onnx`): head "full"
        (NMS + DCC in the graph, this predictor's score_thr, nms_thr and max_det baked in unless
        given) or "raw" (dense predictions, DCC weights in a sidecar .npz). Options: input_size,
        max_det, dynamic_batch, fp16, opset, score_thr, nms_thr. Returns the path."""
        from rtmo.export import export_onnx

        return export_onnx(self, path, head=head, **options)

    def __repr__(self) -> str:
        return f"RTMO({self.config.name!r}, device={self.device}, dtype={self.dtype})"

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_det: int | None = None,
    ) -> Poses | list[Poses]:
        """Poses for one image, or a list of Poses for a list of images or a 4-D tensor.

        score_thr, nms_thr, max_det: this call's values instead of the predictor's."""
        options = {"score_thr": score_thr, "nms_thr": nms_thr, "max_det": max_det}
        if isinstance(images, (list, tuple)):
            return self.predict(list(images), **options)
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            return self.predict(images, **options)
        return self.predict([images], **options)[0]

    def predict(
        self,
        images: Sequence[ImageInput] | torch.Tensor,
        *,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_det: int | None = None,
    ) -> list[Poses]:
        """One batched forward pass over `images` (a list, or a (B, 3, H, W) tensor); one `Poses`
        per image, in order."""
        thresholds = self._thresholds(score_thr, nms_thr, max_det)
        if len(images) == 0:
            return []
        return self._predict_prepared(self._prepare(images), *thresholds)

    def _thresholds(
        self, score_thr: float | None, nms_thr: float | None, max_det: int | None
    ) -> tuple[float, float, int]:
        """A call's (score_thr, nms_thr, max_det): the values given, else the predictor's;
        checked."""
        score_thr = self.score_thr if score_thr is None else score_thr
        nms_thr = self.nms_thr if nms_thr is None else nms_thr
        max_det = self.max_det if max_det is None else max_det
        return (
            check_interval("score_thr", score_thr, SCORE_THR),
            check_interval("nms_thr", nms_thr, NMS_THR),
            check_positive_int("max_det", max_det),
        )

    def _prepare(self, images: Sequence[ImageInput] | torch.Tensor) -> PreparedBatch:
        """The letterboxed batch of `images`, timed: the step that a stream runs on its reading
        thread, ahead of the network."""
        start = time.perf_counter()
        batch, boxes = self._preprocess(images)
        self._sync()
        return PreparedBatch(batch, boxes, time.perf_counter() - start)

    def _predict_prepared(
        self, prepared: PreparedBatch, score_thr: float, nms_thr: float, max_det: int
    ) -> list[Poses]:
        """The network and the post-process on a prepared batch; each Poses gets the speed."""
        start = time.perf_counter()
        with torch.inference_mode():
            outputs = self.model.predict(
                prepared.batch,
                score_thr=score_thr,
                nms_thr=nms_thr,
                max_det=max_det,
                backend=self.backend,
            )
        self._sync()
        inferred = time.perf_counter()
        results = [
            to_poses(out, box, self.config)
            for out, box in zip(outputs, prepared.letterboxes, strict=True)
        ]
        done = time.perf_counter()
        per_image = 1000.0 / len(results)
        speed = {
            "preprocess": prepared.seconds * per_image,
            "inference": (inferred - start) * per_image,
            "postprocess": (done - inferred) * per_image,
        }
        for poses in results:
            poses.speed = dict(speed)
        return results

    def stream(
        self,
        source: StreamInput | Sequence[StreamInput],
        *,
        batch_size: int = 8,
        on_error: str = "warn",
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_det: int | None = None,
    ) -> Iterator[tuple[FrameInfo, Poses | None]]:
        """(frame, Poses) for every frame of `source`, lazily, `batch_size` frames per forward.

        source: what `rtmo predict` takes (an image, a folder of images, a video file, a webcam
        index such as 0, a glob pattern such as "clips/*.mp4") or an image array / (3, H, W)
        tensor, or a list of these. Frames are read, decoded and letterboxed by a background
        thread up to two batches ahead of the network, so the network does not wait for them
        and memory stays flat on a video of any length. `FrameInfo` says where
        each frame comes from (source, frame index, path, the decoded image).

        on_error: an unreadable image or video frame is warned about and skipped ("warn"),
        raised as SourceError ("raise"), or yielded as (frame with `error` set, None) ("yield").
        Sources are checked when this is called: a missing file or a pattern matching nothing
        raises SourceError here, not at the first frame.
        """
        from rtmo.stream import resolve_inputs

        thresholds = self._thresholds(score_thr, nms_thr, max_det)
        return self._frames(resolve_inputs(source), batch_size, on_error, thresholds)

    def _frames(
        self,
        inputs: list,
        batch_size: int,
        on_error: str,
        thresholds: tuple[float, float, int],
    ) -> Iterator[tuple[FrameInfo, Poses | None]]:
        """`rtmo.stream.predict_stream` of `inputs` with this predictor: batches are read and
        letterboxed on the stream's reading thread while the network runs on the previous."""
        from rtmo.stream import predict_stream

        def run(prepared: PreparedBatch) -> list[Poses]:
            return self._predict_prepared(prepared, *thresholds)

        return predict_stream(self._prepare, run, inputs, batch_size, on_error)

    def track(
        self,
        source: StreamInput | Sequence[StreamInput],
        *,
        tracker: str = "bytetrack",
        persist: bool = True,
        track_buffer: int = 30,
        smooth: str | None = None,
        smooth_min_cutoff: float | None = None,
        smooth_beta: float | None = None,
        fps: float | None = None,
        batch_size: int = 8,
        on_error: str = "warn",
        **tracker_options: Any,
    ) -> Poses | Iterator[tuple[FrameInfo, Poses | None]]:
        """People with ids that persist across frames (`Poses.track_ids`).

        One image array or (3, H, W) tensor in -> its tracked `Poses` out: call it frame by frame
        (with persist=True, the default, the tracks carry over from call to call). Any other
        source (as for `stream`) -> a generator of (frame, tracked Poses); each video or webcam
        starts without tracks, images continue them as frames of one sequence.

        tracker: "bytetrack" (IoU + pose OKS association, see `rtmo.track.ByteTracker`, whose
        options, e.g. oks_weight=0.0 for IoU only, can be passed here). track_buffer: frames a
        person may be unseen and keep their id. persist: keep the tracks for the next call (a
        call with other settings starts anew). smooth: None or "one-euro" (keypoint smoothing,
        `rtmo.track.OneEuroSmoother`; smooth_min_cutoff in Hz, smooth_beta). fps: the frame rate
        smoothing assumes for images and arrays (default 30; videos state theirs).
        """
        from rtmo.stream import resolve_inputs

        single = isinstance(source, np.ndarray) or (
            isinstance(source, torch.Tensor) and source.dim() == 3
        )
        inputs = None if single else resolve_inputs(source)  # a missing file fails first
        settings = (tracker, track_buffer, smooth, smooth_min_cutoff, smooth_beta, fps)
        settings += tuple(sorted(tracker_options.items()))
        pipeline = self._tracking if persist and self._tracking_settings == settings else None
        if pipeline is None:
            from rtmo.track import TrackingPipeline

            pipeline = TrackingPipeline.create(
                self._sigmas(), tracker, smooth, smooth_min_cutoff, smooth_beta, fps,
                track_buffer=track_buffer, **tracker_options,
            )  # fmt: skip
        self._tracking, self._tracking_settings = (pipeline, settings) if persist else (None, None)
        if inputs is None:
            return pipeline.update(self.predict([source])[0])
        frames = self._frames(inputs, batch_size, on_error, self._thresholds(None, None, None))
        return pipeline.run(frames)

    def _sigmas(self) -> tuple[float, ...]:
        """The OKS sigmas of the model's keypoints (the tracker compares poses with them)."""
        sigmas = getattr(self.config, "sigmas", None)
        if sigmas is None:
            raise ValueError(f"{self.config.name}: the model's config has no OKS sigmas to track")
        return tuple(sigmas)

    def _preprocess(
        self, images: Sequence[ImageInput] | torch.Tensor
    ) -> tuple[torch.Tensor, list[Letterbox]]:
        """Letterboxed (B, 3, h, w) batch on the model's device and dtype, and each placement."""
        if isinstance(images, torch.Tensor):  # (B, 3, H, W): one warp for the whole batch
            batch, box = letterbox_tensor(images.to(self.device), self.input_size)
            return batch.to(self.dtype), [box] * len(images)
        inputs, boxes = [], []
        for i, image in enumerate(images):
            if isinstance(image, torch.Tensor):
                if image.dim() != 3:
                    raise ValueError(
                        f"images[{i}]: a tensor in a list must be (3, H, W), "
                        f"got shape {tuple(image.shape)}"
                    )
                tensor, box = letterbox_tensor(image.to(self.device), self.input_size)
            else:
                array = _load(image, i)
                warped, box = letterbox_image(array, self.input_size)
                tensor = torch.from_numpy(warped).permute(2, 0, 1).unsqueeze(0)
            inputs.append(tensor.to(self.device, non_blocking=True))
            boxes.append(box)
        batch = torch.cat(inputs).to(self.dtype)
        return batch, boxes

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _load(image: ImageInput, index: int) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        return to_bgr_uint8(image)
    bgr = pil_to_bgr(image)
    if bgr is not None:
        return bgr
    raise TypeError(
        f"images[{index}]: expected a path, a numpy image, a PIL image or a tensor, "
        f"got {type(image).__name__}"
    )


def _missing_checkpoint_message(path: str | os.PathLike) -> str:
    """Why `path` cannot be loaded as a checkpoint; a model name is told how to get its file."""
    from rtmo.config import from_name

    try:
        config = from_name(str(path))
    except ValueError:
        return f"{path}: no such checkpoint file"
    return (
        f"{str(path)!r} is a model name, not a checkpoint file: RTMO.from_checkpoint needs the "
        f".pth file. Get it with rtmo.config.download_checkpoint({str(path)!r}) (it downloads "
        f"{config.checkpoint_url}), or use RTMO({str(path)!r}) for random weights"
    )


def _openvino_precision(dtype: str | torch.dtype) -> str:
    """The OpenVINO precision ("fp32" or "bf16") of a predictor dtype."""
    resolved = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if resolved == torch.float32:
        return "fp32"
    if resolved == torch.bfloat16:
        return "bf16"
    raise ValueError(f"dtype for runtime='openvino' must be fp32 or bf16, got {dtype!r}")


def _openvino_from_model(model: torch.nn.Module, precision: str) -> OpenVinoModel:
    """`model` exported with head="raw" to a temporary folder that lives as long as the
    runner, opened in OpenVINO."""
    import tempfile

    from rtmo.export import export_onnx

    folder = tempfile.TemporaryDirectory(prefix="rtmo-openvino-")
    path = export_onnx(model, Path(folder.name) / f"{model.config.name}.onnx", head="raw")
    runner = OpenVinoModel(path, precision)
    runner._export_folder = folder  # removed with the runner
    return runner


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if device.type == "cpu":
        check_cpu_dtype("dtype", dtype)
    return dtype
