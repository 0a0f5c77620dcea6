"""End-to-end benchmark: camera frames in, poses in frame pixels out, for each way of running the
same weights on the same synthetic crowd.

Rows (each on the same deterministic random weights with the same planted crowd):
  kernels      RTMOModel(use_kernels=True), eager; fused (`reparameterize()`), channels_last.
  reference    RTMOModel(use_kernels=False), eager, same fused channels_last network: the
               post-process runs `rtmo_kernels.reference` (NMS loop, mmpose's unfolded DCC).
  compile      the kernels row with the network under `torch.compile` and the post-process under
               `torch.compile(fullgraph=True)`.
  onnxruntime  `rtmo.export.export_onnx` of the same weights run by `rtmo.onnx_runtime`
               (post-process inside the graph, so its "network" column holds it): what rtmlib
               users run.
  ort-dense    the raw-head export (head="raw": dense predictions only) in onnxruntime, the
               post-process (NMS + DCC) on rtmo's kernels (`rtmo.Postprocessor`).
  openvino     the raw-head export compiled by OpenVINO for the CPU (fp32), post-process on
               rtmo's kernels.
  openvino-bf16  the same in bfloat16 (CPUs with AVX512-BF16/AMX only).
  bf16         the kernels row with the dense network in bfloat16 (`rtmo.precision.to_precision`:
               weights converted once, channels_last, oneDNN; the DCC and the post-process in
               float32): what `RTMO(..., dtype="bf16")` runs. On the CPU only where it has native
               bfloat16 (AVX512-BF16/AMX).
  cuda-graph   (CUDA only) the kernels row's network + post-process replayed from one CUDA graph.

Stages of one pipeline run: preprocess (letterbox of every frame, mmpose's BottomupResize, into a
batch tensor), network (dense forward), postprocess (score filter, box decode, NMS, DCC, split per
image, mapping back to frame pixels). Rows are run in interleaved rounds; medians are reported.

Accuracy: with a `ValidationSet` (an annotated set and a checkpoint), each row also gets its COCO
keypoint AP, measured with the checkpoint's weights run the row's way (benchmarks/accuracy.py);
without one, rows say that AP was not measured.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.accuracy import ValidationSet, rows_ap
from benchmarks.harness import StageClock, Timing, graph_callable
from benchmarks.synthetic import build_model, crowd_frame, plant_crowd
from rtmo.config import from_name
from rtmo.model import RTMOModel
from rtmo.model.postprocess import postprocess_padded, split_predictions
from rtmo.precision import bf16_support, to_precision

ROWS = (
    "kernels",
    "reference",
    "compile",
    "onnxruntime",
    "ort-dense",
    "openvino",
    "openvino-bf16",
    "bf16",
    "cuda-graph",
)
# Rows that run a raw-head export: the dense network in a runtime, the post-process on our kernels.
DENSE_ROWS = ("ort-dense", "openvino", "openvino-bf16")
NO_VALIDATION_SET = (
    "AP: not measured (no annotated set: give --val-data, --val-images and --val-checkpoint)"
)
STAGES = ("preprocess", "network", "postprocess")
# Idle time before each timed run: lets the thread pools of the previous row (onnxruntime's spin
# after a run; measured: eager RTMO-t took 85 ms right after an onnxruntime run, 50 ms otherwise)
# go to sleep, so that no row pays for another's threads on 2 cores.
SETTLE_S = 0.1


@dataclass
class CaseSettings:
    """One end-to-end case: a variant at a batch size on a crowd."""

    variant: str = "rtmo-s"
    batch: int = 1
    people: int = 20
    candidates: int = 400
    input_size: tuple[int, int] | None = None  # default: the variant's own
    rounds: int = 5
    rows: tuple[str, ...] = ROWS
    device: str = "cpu"
    seed: int = 0
    max_det: int = 100  # the predictor's default
    # Inductor freezing for the compile row: measured no faster here (RTMO-s b1, 2 threads: 170 vs
    # 168 ms), so off by default.
    freezing: bool = False
    validation: ValidationSet | None = None  # the AP column's set and weights; None: no AP


@dataclass
class Row:
    """How one row runs: network(batch) -> intermediate, post(intermediate, batch) -> list of
    per-image dicts in model-input pixels."""

    key: str
    settings: str
    network: Callable[[Tensor], Any]
    post: Callable[[Any, Tensor], list[dict[str, Tensor]]]
    notes: list[str] = field(default_factory=list)
    setup_s: float = 0.0


def _fused_model(variant: str, use_kernels: bool, case: CaseSettings) -> RTMOModel:
    model = build_model(variant, case.seed, use_kernels).reparameterize()
    model = model.to(case.device, memory_format=torch.channels_last)
    return plant_crowd(model, case.people, case.candidates, case.input_size, case.seed)


def _eager_post(model: RTMOModel, max_det: int) -> Callable[[Any, Tensor], list]:
    """The eager post-process of `model`'s dense outputs (its kernels or the reference)."""

    def post(dense: Any, batch: Tensor) -> list[dict[str, Tensor]]:
        size = _input_size_of(batch)
        padded = postprocess_padded(
            dense, model.head.dcc, size, 0.1, 0.65, max_det, model.use_kernels, "auto"
        )
        return split_predictions(padded)

    return post


def _eager_row(key: str, model: RTMOModel, max_det: int) -> Row:
    kernels = "fused kernels" if model.use_kernels else "rtmo_kernels.reference"
    settings = f"eager, fused, channels_last, post-process: {kernels}"
    return Row(key, settings, partial(_forward, model), _eager_post(model, max_det))


def _bf16_row(model: RTMOModel, case: CaseSettings) -> Row:
    net = to_precision(model, torch.device(case.device), torch.bfloat16)
    settings = (
        "eager, fused, bfloat16 dense network (weights converted once, channels_last), DCC and "
        "post-process in float32 with fused kernels"
    )
    return Row("bf16", settings, partial(_forward_bf16, net), _eager_post(net, case.max_det))


def _forward_bf16(model: RTMOModel, batch: Tensor) -> Any:
    return model(batch.to(torch.bfloat16, memory_format=torch.channels_last))


def _bf16_row_unavailable(device: str) -> str | None:
    """Why the bf16 row cannot run here, or None."""
    if torch.device(device).type == "cpu" and bf16_support() is None:
        return "this CPU has no native bfloat16 (AVX512-BF16/AMX)"
    return None


def _input_size_of(batch: Tensor) -> tuple[int, int]:
    return (batch.shape[-1], batch.shape[-2])


def _forward(model: Callable[[Tensor], Any], batch: Tensor) -> Any:
    return model(batch.contiguous(memory_format=torch.channels_last))


def _compile_row(model: RTMOModel, max_det: int, freezing: bool) -> Row:
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)
    post_fn = torch.compile(postprocess_padded, fullgraph=True, dynamic=False)

    def network(batch: Tensor) -> Any:
        # Freezing (inference only) folds the weights into the graph as constants, which lets
        # inductor pre-pack them for oneDNN convolutions on the CPU.
        with inductor_config.patch(freezing=freezing):
            return _forward(compiled, batch)

    def post(dense: Any, batch: Tensor) -> list[dict[str, Tensor]]:
        padded = post_fn(
            dense, model.head.dcc, _input_size_of(batch), 0.1, 0.65, max_det, True, "auto"
        )
        return split_predictions(padded)

    settings = (
        f"torch.compile (inductor{', freezing' if freezing else ''}) network, fused, "
        "channels_last; post-process torch.compile(fullgraph=True) with fused kernels"
    )
    return Row("compile", settings, network, post)


def _onnx_row(model: RTMOModel, case: CaseSettings, workdir: Path) -> Row:
    from rtmo.export import export_onnx
    from rtmo.onnx_runtime import OnnxRuntimeModel

    size = case.input_size or model.config.input_size
    path = export_onnx(model, workdir / f"{model.config.name}.onnx", size, max_det=case.max_det)
    runner = OnnxRuntimeModel(path, providers=_ort_providers(case.device), threads=_threads())

    def network(batch: Tensor) -> list[dict[str, Tensor]]:
        return runner.predict(batch.contiguous())

    settings = (
        f"onnxruntime {_ort_version()} {runner.session.get_providers()[0]}, "
        f"{_threads()} threads, exported by rtmo.export (fused, opset 17); "
        "NMS + DCC inside the graph (network column)"
    )
    return Row("onnxruntime", settings, network, lambda out, batch: out)


def _dense_row(key: str, model: RTMOModel, case: CaseSettings, workdir: Path) -> Row:
    """A raw-head export run by onnxruntime or OpenVINO; the post-process on the kernels."""
    from rtmo.export import export_onnx

    size = case.input_size or model.config.input_size
    path = workdir / f"{model.config.name}-raw.onnx"
    if not path.exists():  # one export serves the three dense rows
        export_onnx(model, path, size, head="raw")
    if key == "ort-dense":
        from rtmo.onnx_runtime import OnnxRuntimeModel

        runner: Any = OnnxRuntimeModel(
            path, providers=_ort_providers(case.device), threads=_threads()
        )
        engine = f"onnxruntime {_ort_version()} {runner.session.get_providers()[0]}"
    else:
        import openvino

        from rtmo.openvino_runtime import OpenVinoModel

        precision = "bf16" if key == "openvino-bf16" else "fp32"
        runner = OpenVinoModel(path, precision, threads=_threads())
        engine = f"OpenVINO {openvino.__version__} CPU {precision}"
    post = runner.postprocessor

    def postprocess(dense: Any, batch: Tensor) -> list[dict[str, Tensor]]:
        return post.predict(dense, score_thr=0.1, nms_thr=0.65, max_det=case.max_det)

    settings = (
        f"{engine}, {_threads()} threads, raw-head export (dense predictions, opset 17); "
        f"post-process: rtmo.Postprocessor, fused kernels on {post.device}"
    )
    return Row(key, settings, runner.run, postprocess)


def _graph_row(model: RTMOModel, example: Tensor, max_det: int) -> Row:
    def predict(batch: Tensor) -> Any:
        return model.predict_padded(batch, 0.1, 0.65, max_det)

    replay = graph_callable(predict, example.contiguous(memory_format=torch.channels_last))
    settings = "network + post-process replayed from one CUDA graph (kernels, fused, channels_last)"
    return Row(
        "cuda-graph",
        settings,
        lambda batch: replay(batch.contiguous(memory_format=torch.channels_last)),
        lambda padded, batch: split_predictions(padded),
    )


def _threads() -> int:
    return torch.get_num_threads()


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _ort_providers(device: str) -> list[str]:
    if torch.device(device).type == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def preprocess(frames: list[np.ndarray], input_size: tuple[int, int], device: str):
    """BGR frames -> (B, 3, h, w) float32 batch on `device` and each frame's Letterbox."""
    from rtmo.preprocess import letterbox_image

    inputs, boxes = [], []
    for frame in frames:
        warped, box = letterbox_image(frame, input_size)
        inputs.append(torch.from_numpy(warped).permute(2, 0, 1))
        boxes.append(box)
    return torch.stack(inputs).to(device, torch.float32, non_blocking=True), boxes


def to_frame_pixels(outputs: list[dict[str, Tensor]], boxes: list) -> list[dict[str, np.ndarray]]:
    """Per-image predictions in model-input pixels -> numpy arrays in frame pixels."""
    mapped = []
    for out, box in zip(outputs, boxes, strict=True):
        keypoints = out["keypoints"].cpu().numpy()
        mapped.append(
            {
                "boxes": box.boxes_to_original(out["boxes"].cpu().numpy()),
                "scores": out["scores"].cpu().numpy(),
                "keypoints": box.to_original(keypoints) if keypoints.size else keypoints,
                "keypoint_scores": out["keypoint_scores"].cpu().numpy(),
            }
        )
    return mapped


def run_pipeline(
    row: Row, frames: list[np.ndarray], input_size: tuple[int, int], clock: StageClock
) -> list[dict[str, np.ndarray]]:
    """One timed pass: frames -> poses in frame pixels; the laps land in `clock.laps`."""
    clock.start()
    batch, boxes = preprocess(frames, input_size, str(clock.device))
    clock.lap("preprocess")
    with torch.inference_mode():
        intermediate = row.network(batch)
        clock.lap("network")
        per_image = row.post(intermediate, batch)
    result = to_frame_pixels(per_image, boxes)
    clock.lap("postprocess")
    return result


def build_rows(
    case: CaseSettings,
    workdir: Path,
    model_for: Callable[[bool], RTMOModel] | None = None,
) -> tuple[list[Row], dict[str, str]]:
    """The rows this machine can run for `case`, and a note for each requested row left out.

    model_for(use_kernels) gives each row its network (fused, channels_last, on the case's
    device); default: the planted random-weight model of the case."""
    model_for = model_for or (lambda use_kernels: _fused_model(case.variant, use_kernels, case))
    rows, skipped = [], {}
    is_cuda = torch.device(case.device).type == "cuda"
    for key in case.rows:
        start = time.perf_counter()
        if key == "kernels":
            row = _eager_row(key, model_for(True), case.max_det)
        elif key == "reference":
            row = _eager_row(key, model_for(False), case.max_det)
        elif key == "compile":
            row = _compile_row(model_for(True), case.max_det, case.freezing)
        elif key == "onnxruntime":
            try:
                row = _onnx_row(model_for(True), case, workdir)
            except ImportError as err:
                skipped[key] = f"onnxruntime or rtmo.export unavailable: {err}"
                continue
        elif key in DENSE_ROWS:
            reason = _dense_row_unavailable(key, case.device)
            if reason:
                skipped[key] = reason
                continue
            row = _dense_row(key, model_for(True), case, workdir)
        elif key == "bf16":
            reason = _bf16_row_unavailable(case.device)
            if reason:
                skipped[key] = reason
                continue
            row = _bf16_row(model_for(True), case)
        elif key == "cuda-graph":
            if not is_cuda:
                skipped[key] = "CUDA only"
                continue
            size = case.input_size or from_name(case.variant).input_size
            example = torch.full((case.batch, 3, size[1], size[0]), 114.0, device=case.device)
            row = _graph_row(model_for(True), example, case.max_det)
        else:
            raise ValueError(f"unknown end-to-end row {key!r}; expected one of {ROWS}")
        row.setup_s = time.perf_counter() - start
        rows.append(row)
    return rows, skipped


def _dense_row_unavailable(key: str, device: str) -> str | None:
    """Why a dense row cannot run here, or None."""
    import importlib.util

    module = "onnxruntime" if key == "ort-dense" else "openvino"
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    if key == "ort-dense":
        return None
    if torch.device(device).type != "cpu":
        return "OpenVINO rows run on the CPU only"
    from rtmo.openvino_runtime import cpu_has_bf16

    if key == "openvino-bf16" and not cpu_has_bf16():
        return "this CPU has no native bfloat16 (AVX512-BF16/AMX)"
    return None


def _summary(outputs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    return {"detections": [len(o["scores"]) for o in outputs]}


def _max_diff(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> float | None:
    """Largest keypoint difference in frame pixels between two rows' outputs (None when the
    numbers of detections differ)."""
    diffs = []
    for x, y in zip(a, b, strict=True):
        if x["keypoints"].shape != y["keypoints"].shape:
            return None
        if x["keypoints"].size:
            diffs.append(float(np.abs(x["keypoints"] - y["keypoints"]).max()))
    return max(diffs, default=0.0)


def run_case(case: CaseSettings) -> dict[str, Any]:
    """Times every row of `case` in interleaved rounds; returns a JSON-ready dict."""
    config = from_name(case.variant)
    size = tuple(case.input_size or config.input_size)
    frames = [crowd_frame(case.people, seed=case.seed + i) for i in range(case.batch)]
    clock = StageClock(case.device)
    with tempfile.TemporaryDirectory() as tmp:
        rows, skipped = build_rows(case, Path(tmp))
        first = {}
        for row in rows:  # warm-up; compiles here
            start = time.perf_counter()
            first[row.key] = run_pipeline(row, frames, size, clock)
            row.setup_s += time.perf_counter() - start
        laps = {row.key: {s: Timing() for s in (*STAGES, "total")} for row in rows}
        order = random.Random(case.seed)
        for _ in range(case.rounds):
            # A random order each round: with a fixed cyclic order the same row always ran right
            # after onnxruntime, whose worker threads keep spinning for a while after a run.
            for row in order.sample(rows, len(rows)):
                time.sleep(SETTLE_S)
                run_pipeline(row, frames, size, clock)
                for stage, ms in clock.laps.items():
                    laps[row.key][stage].samples_ms.append(ms)
                laps[row.key]["total"].samples_ms.append(clock.total_ms)
        accuracy, accuracy_note = {}, NO_VALIDATION_SET
        if case.validation is not None:
            workdir = Path(tmp) / "accuracy"  # its own exports beside the timed rows' files
            workdir.mkdir()
            accuracy, accuracy_note = rows_ap(case, case.validation, workdir)
    base = rows[0].key if rows else None
    result_rows = []
    for row in rows:
        total = laps[row.key]["total"]
        result_rows.append(
            {
                "key": row.key,
                "settings": row.settings,
                "setup_s": row.setup_s,
                "stages": {s: laps[row.key][s].to_dict() for s in STAGES},
                "total": total.to_dict(),
                "images_per_s": case.batch * 1e3 / total.median_ms,
                **_summary(first[row.key]),
                "max_keypoint_diff_px": _max_diff(first[base], first[row.key]),
                "compared_with": base,
                "accuracy": accuracy.get(row.key),
            }
        )
    return {
        "variant": config.name,
        "batch": case.batch,
        "input_size": list(size),
        "frame_size": list(frames[0].shape[1::-1]),
        "people": case.people,
        "candidates": case.candidates,
        "max_det": case.max_det,
        "dtype": "float32",
        "device": case.device,
        "threads": _threads(),
        "rounds": case.rounds,
        "rows": result_rows,
        "skipped": skipped,
        "validation": None if case.validation is None else case.validation.describe(),
        "accuracy_note": accuracy_note,
    }
