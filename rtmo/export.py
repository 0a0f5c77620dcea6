"""ONNX export of RTMO: the whole prediction in one graph (head="full", the default), or the
network up to its dense predictions (head="raw") for any engine, the post-process left to
`rtmo.Postprocessor` on our kernels.

head="full": network, box decode, NMS and DCC decode in one graph. The file has mmdeploy's RTMO
interface (RTMO.md §4.2), so tools written for mmdeploy's files
(rtmlib, rtmo-ort) read ours unchanged:

- input ``input`` (B, 3, H, W) float32 BGR 0..255, letterboxed outside the graph;
- output ``dets`` (B, max_det, 5): x1, y1, x2, y2, score;
- output ``keypoints`` (B, max_det, K, 3): x, y, keypoint score;

both in model-input pixels, sorted by descending score, rows past the last person all zeros (score
0). Only the batch axis is dynamic (``dynamic_batch=True``): the priors and the encoder's
positional encoding are constants for the export input size, as in mmdeploy's files.

Only standard ONNX ops are used (no custom domain). NMS is ONNX ``NonMaxSuppression``, which
onnxruntime runs and TensorRT's parser maps to its built-in NMS layer (TensorRT 8.6 and later
also take opset 17's LayerNormalization), so no plugin library is needed. A static-shape NMS made
of plain ops (IoU matrix + fixed-point suppression) was not chosen: greedy NMS is sequential, so
it is exact only with a Loop or as many unrolled steps as candidates. The NonMaxSuppression
selections are put back into fixed (B, max_det) slots with ScatterND + TopK.
The DCC decode runs in its folded form (x_fc/y_fc folded into the queries, bins an arithmetic
progression) as Sin/Cos/MatMul/Softmax, and ScaleNorm's norm is sqrt(sum(x*x)) instead of
``ReduceL2``/``linalg_norm``.

head="raw": outputs ``scores`` (B, P), ``boxes`` (B, P, 4) xyxy input pixels, ``keypoint_scores``
(B, P, K), ``pose_vecs`` (B, P, C) for all P priors; no NMS, TopK, ScatterND or DCC, so the graph
is made of ops that TensorRT's parser, OpenVINO and RKNN's converter (rknn-toolkit2 2.x, which has
no NonMaxSuppression, TopK, Range or Neg) all accept. The DCC weights go to a sidecar `.npz` next
to the file (`rtmo.postprocessor.sidecar_path`), whose name and SHA-256 the metadata records.
Thresholds and max_det are chosen at call time.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

import rtmo_kernels
from rtmo.model import RTMOModel
from rtmo.model.head import DenseOutputs, grid_priors
from rtmo.model.postprocess import DecodedDense, decode_dense
from rtmo.postprocessor import (
    RAW_OUTPUT_NAMES,
    SIDECAR_META_KEY,
    SIDECAR_SHA_META_KEY,
    file_sha256,
    num_priors,
    sidecar_path,
    write_sidecar,
)
from rtmo.sources import atomic_output
from rtmo_kernels.reference.dcc import dcc_decode

if TYPE_CHECKING:
    from rtmo.predictor import RTMO

INPUT_NAME = "input"
OUTPUT_NAMES = ("dets", "keypoints")
HEADS = ("full", "raw")
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on (TensorRT 8.6+ parses it)
MIN_OPSET = 14  # the encoder's scaled_dot_product_attention exports from opset 14 on


class SqrtScaleNorm(nn.Module):
    """ScaleNorm with its norm as sqrt(sum(x*x)): TensorRT's ONNX parser has no `linalg_norm`
    and older ones reject ReduceL2 over a trailing axis with keepdims; the result is the same."""

    def __init__(self, scale: float, eps: float, g: Tensor) -> None:
        super().__init__()
        self.scale, self.eps = scale, eps
        self.g = nn.Parameter(g.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.sqrt((x * x).sum(dim=-1, keepdim=True)) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class FixedPositionalEncoding(nn.Module):
    """The encoder's 2-D sine encoding precomputed for one grid (a constant in the graph)."""

    def __init__(self, encoding: nn.Module, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w
        self.register_buffer("table", encoding(h, w).detach().clone())

    def forward(self, h: int, w: int) -> Tensor:
        if (h, w) != (self.h, self.w):
            raise ValueError(
                f"the exported graph's positional encoding is fixed to a {self.h}x{self.w} "
                f"stride-32 grid, got {h}x{w}: export again for another input size"
            )
        return self.table


class _NonMaxSuppression(torch.autograd.Function):
    """Greedy class-agnostic NMS per image; exported as the standard ONNX NonMaxSuppression.

    boxes (B, N, 4) xyxy, scores (B, N) -> selected (S, 3) int64 rows (image, 0, box), each
    image's rows by descending score, at most `max_det` per image. Candidates have
    score > score_thr; a box is dropped when its IoU with a kept one is > iou_thr (mmpose's rule,
    and onnxruntime's). The eager forward only serves tracing.
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_det: int, iou_thr: float, score_thr: float):
        keep, _ = rtmo_kernels.nms_padded(boxes, scores, iou_thr, score_thr, max_det)
        image = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)
        valid = keep >= 0
        return torch.stack([image[valid], torch.zeros_like(keep[valid]), keep[valid]], dim=1)

    @staticmethod
    def symbolic(g, boxes, scores, max_det: int, iou_thr: float, score_thr: float):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression",
            boxes,
            g.op("Unsqueeze", scores, const(1, torch.int64)),  # (B, classes=1, N)
            const(max_det, torch.int64),
            const(iou_thr, torch.float32),
            const(score_thr, torch.float32),
            center_point_box_i=0,
        )


def _rows(x: Tensor, index: Tensor) -> Tensor:
    """Rows of x (B, N, ...) at index (B, M) -> (B, M, ...), as one GatherElements-free Gather."""
    flat = index + torch.arange(x.shape[0], device=x.device)[:, None] * x.shape[1]
    return x.flatten(0, 1)[flat]


class ExportableDense(nn.Module):
    """RTMO network up to the dense predictions of every prior, as one traceable module.

    images (B, 3, H, W) float BGR 0..255 of exactly `input_size` -> `DecodedDense` in float32:
    scores (B, P), boxes (B, P, 4) xyxy, keypoint_scores (B, P, K), pose_vecs (B, P, C).
    """

    def __init__(self, model: RTMOModel, input_size: tuple[int, int], fp16: bool = False) -> None:
        super().__init__()
        self.model = model
        self.input_size = input_size
        self.fp16 = fp16
        w, h = input_size
        priors, strides = grid_priors([(h // 16, w // 16), (h // 32, w // 32)], torch.device("cpu"))
        self.register_buffer("priors", priors)
        self.register_buffer("strides", strides)

    def forward(self, images: Tensor) -> DecodedDense:
        net_dtype = torch.float16 if self.fp16 else torch.float32
        dense = self.model(images.to(net_dtype))
        # The decode (and all that follows) runs in fp32 whatever the network's dtype: fp16 has
        # 0.5 px spacing above 512 px. The priors are constants of the export size.
        return decode_dense(
            DenseOutputs(
                dense.cls_logits.float(),
                dense.bbox_preds.float(),
                dense.kpt_vis_logits.float(),
                dense.pose_vecs.float(),
                self.priors,
                self.strides,
            )
        )


class ExportableRTMO(ExportableDense):
    """RTMO network + post-process as one traceable module with mmdeploy's outputs.

    images (B, 3, H, W) float BGR 0..255 of exactly `input_size` -> dets (B, max_det, 5),
    keypoints (B, max_det, K, 3), fp32, padded rows zero.
    """

    def __init__(
        self,
        model: RTMOModel,
        input_size: tuple[int, int],
        max_det: int,
        score_thr: float,
        nms_thr: float,
        fp16: bool = False,
    ) -> None:
        super().__init__(model, input_size, fp16)
        self.max_det, self.score_thr, self.nms_thr = max_det, score_thr, nms_thr

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        scores, boxes, keypoint_scores, pose_vecs = super().forward(images)
        selected = _NonMaxSuppression.apply(
            boxes, scores, self.max_det, self.nms_thr, self.score_thr
        )
        image, index = selected[:, 0], selected[:, 2]
        kept_scores = torch.zeros_like(scores)
        kept_scores[image, index] = scores[image, index]
        # TopK puts each image's survivors into max_det slots by descending score (lower index
        # first on ties, like the NMS); slots past the survivors get score 0.
        top_scores, top = kept_scores.topk(self.max_det, dim=1)
        valid = top_scores > 0
        boxes = _rows(boxes, top).flatten(0, 1)
        dcc = self.model.head.dcc
        feats = dcc.keypoint_features(_rows(pose_vecs, top).flatten(0, 1))
        query_x, query_y = dcc.queries(feats)
        # The readable folded decode is made of Sin/Cos/MatMul/Softmax/ReduceSum only; its unused
        # confidence output is dropped from the graph.
        keypoints, _ = dcc_decode(
            query_x,
            query_y,
            boxes,
            self.priors[top.flatten()],
            dcc.num_bins,
            dcc.padding,
            dcc.temperature,
        )
        b, m = top.shape
        w, h = self.input_size
        limits = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
        boxes = torch.minimum(boxes.clamp(min=0), limits).reshape(b, m, 4)
        kpt_scores = _rows(keypoint_scores, top)
        dets = torch.cat([boxes, top_scores[..., None]], dim=-1)
        keypoints = torch.cat([keypoints.reshape(b, m, -1, 2), kpt_scores[..., None]], dim=-1)
        return (
            torch.where(valid[..., None], dets, 0.0),
            torch.where(valid[..., None, None], keypoints, 0.0),
        )


def prepare_model(model: RTMOModel, input_size: tuple[int, int]) -> RTMOModel:
    """A fused fp32 CPU copy of `model` whose encoder encoding is fixed to `input_size` and whose
    ScaleNorm avoids `linalg_norm`; `model` itself is left untouched."""
    net = copy.deepcopy(model).float().cpu().eval().reparameterize()
    w, h = input_size
    net.neck.sincos_pos_enc = FixedPositionalEncoding(net.neck.sincos_pos_enc, h // 32, w // 32)
    ln = net.head.dcc.gau.ln
    net.head.dcc.gau.ln = SqrtScaleNorm(ln.scale, ln.eps, ln.g)
    return net


def export_onnx(
    model: RTMOModel | RTMO,
    path: str | os.PathLike,
    input_size: tuple[int, int] | None = None,
    max_det: int | None = None,
    dynamic_batch: bool = True,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    score_thr: float | None = None,
    nms_thr: float | None = None,
    head: str = "full",
) -> Path:
    """Writes `model` as an ONNX file and returns the path.

    Args:
        model: an RTMOModel, or an `rtmo.RTMO` predictor on the torch runtime (whose max_det,
            score_thr and nms_thr are then the defaults of a full-head export). Its weights are
            copied; it is not modified.
        path: the .onnx file to write (parent folders are created), under a temporary name
            renamed when complete.
        input_size: (w, h) of the graph input, multiples of 32; default the variant's own
            (416x416 for t, else 640x640). The priors and positional encoding are fixed to it.
        max_det: detection slots per image (default 50, mmdeploy's keep_top_k); full head only.
        dynamic_batch: batch axis dynamic ("batch"); else fixed to 1.
        fp16: the convolutional network's weights and activations in float16 (input and outputs
            stay float32; box decode, NMS and the DCC run in float32).
        opset: ONNX opset, 14 or higher (default 17).
        score_thr, nms_thr: baked into a full-head graph; default the variant's (0.1, 0.65).
        head: "full" (network + NMS + DCC, mmdeploy's outputs) or "raw" (the dense predictions
            of every prior, `RAW_OUTPUT_NAMES`; the DCC weights go to the sidecar
            `sidecar_path(path)`; thresholds and max_det are chosen when post-processing).
    Raises:
        TypeError / ValueError for a bad argument, naming it.
    """
    model, defaults = _torch_model(model)
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    cfg = model.config
    size = tuple(cfg.input_size if input_size is None else input_size)
    _check_size_and_opset(size, opset)
    w, h = size
    k, c = cfg.num_keypoints, cfg.pose_vec_channels
    metadata: dict[str, Any] = {
        "rtmo_variant": cfg.name,
        "rtmo_head": head,
        "input_size": f"{w}x{h}",
    }
    if head == "raw":
        given = [
            n
            for n, v in (("max_det", max_det), ("score_thr", score_thr), ("nms_thr", nms_thr))
            if v is not None
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)}: a raw-head graph has no NMS; choose thresholds and max_det "
                "when post-processing (rtmo.Postprocessor, RTMO.from_onnx)"
            )
        wrapper: ExportableDense = ExportableDense(prepare_model(model, size), size, fp16)
        output_names = RAW_OUTPUT_NAMES
        p = num_priors(size)
        dims = {"scores": (p,), "boxes": (p, 4), "keypoint_scores": (p, k), "pose_vecs": (p, c)}
    else:
        if max_det is None:
            # A predictor's max_det is an upper bound: at most one person per prior.
            max_det = min(defaults.get("max_det", 50), num_priors(size))
        score_thr = defaults.get("score_thr", cfg.score_thr) if score_thr is None else score_thr
        nms_thr = defaults.get("nms_thr", cfg.nms_thr) if nms_thr is None else nms_thr
        _check_post_options(size, max_det, score_thr, nms_thr)
        net = prepare_model(model, size)
        wrapper = ExportableRTMO(net, size, max_det, score_thr, nms_thr, fp16)
        output_names = OUTPUT_NAMES
        dims = {"dets": (max_det, 5), "keypoints": (max_det, k, 3)}
        metadata |= {"max_det": max_det, "score_thr": score_thr, "nms_thr": nms_thr}
    metadata["fp16"] = fp16
    if fp16:
        # The convolutional network only: the DCC runs on max_det instances (negligible cost)
        # and keeps float32 like the decode it feeds.
        for part in (wrapper.model.backbone, wrapper.model.neck, wrapper.model.head.head_module):
            part.half()
    path = Path(path)
    # Both files are written under temporary names and renamed only when the export is complete
    # (the sidecar first, then the graph that names it): a failure leaves no partial file and an
    # earlier export's pair untouched.
    with contextlib.ExitStack() as outputs:
        temporary = outputs.enter_context(atomic_output(path))
        _trace(wrapper, temporary, dynamic_batch, opset, output_names)
        if head == "raw":
            sidecar = sidecar_path(path)
            staged_sidecar = outputs.enter_context(atomic_output(sidecar))
            write_sidecar(staged_sidecar, wrapper.model.head.dcc, cfg, size)
            metadata[SIDECAR_META_KEY] = sidecar.name
            metadata[SIDECAR_SHA_META_KEY] = file_sha256(staged_sidecar)
        _finish(temporary, dims, metadata)
    return path


def _torch_model(model: object) -> tuple[RTMOModel, dict[str, Any]]:
    """The RTMOModel to export, and the full-head defaults a predictor brings (its max_det,
    score_thr, nms_thr)."""
    if isinstance(model, RTMOModel):
        return model, {}
    from rtmo.predictor import RTMO

    if isinstance(model, RTMO):
        if not isinstance(model.model, RTMOModel):
            raise TypeError(
                f"model: this RTMO runs an exported file ({model.model.path}), not the torch "
                "model; export from RTMO.from_checkpoint(...) or RTMO(name)"
            )
        defaults = {"max_det": model.max_det, "score_thr": model.score_thr}
        return model.model, defaults | {"nms_thr": model.nms_thr}
    raise TypeError(f"model must be an RTMOModel or an RTMO predictor, got {type(model).__name__}")


def _trace(
    wrapper: ExportableDense,
    path: Path,
    dynamic_batch: bool,
    opset: int,
    output_names: tuple[str, ...],
) -> None:
    w, h = wrapper.input_size
    # Two images trace the batch axis as a variable (one could fold it into constants).
    example = torch.full((2 if dynamic_batch else 1, 3, h, w), 114.0)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *output_names)} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter's deprecation and tracer warnings say nothing about this graph.
        warnings.simplefilter("ignore")
        # dynamo=False: the dynamo exporter (torch.onnx.export's default since torch 2.9) needs
        # onnxscript, which is not a dependency, and takes torch.export's symbolic-shape path
        # through the NMS's data-dependent output; the TorchScript tracer exports a custom
        # autograd.Function through its `symbolic` and takes 10-15 s for RTMO-t at 416 and
        # RTMO-s at 640 on 2 busy cores.
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _check_size_and_opset(size: tuple, opset: int) -> None:
    if len(size) != 2 or any(not isinstance(s, int) or s <= 0 or s % 32 for s in size):
        raise ValueError(f"input_size must be (w, h), positive multiples of 32, got {size}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")


def _check_post_options(size: tuple, max_det: int, score_thr: float, nms_thr: float) -> None:
    priors = num_priors(size)
    if not isinstance(max_det, int) or not 1 <= max_det <= priors:
        raise ValueError(
            f"max_det must be an int in [1, {priors}] (the priors at {size[0]}x{size[1]}), "
            f"got {max_det!r}"
        )
    if not 0.0 <= score_thr < 1.0:
        raise ValueError(f"score_thr must be in [0, 1), got {score_thr}")
    if not 0.0 < nms_thr <= 1.0:
        raise ValueError(f"nms_thr must be in (0, 1], got {nms_thr}")


def _finish(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, Any]) -> None:
    """Declares the outputs' static dims (the tracer leaves them symbolic past the NMS), adds the
    metadata the runners read, and checks the file with onnx.checker and strict shape inference."""
    import onnx

    proto = onnx.load(str(path))
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(dims[1:], shapes[output.name], strict=True):
            dim.Clear()
            dim.dim_value = size
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
