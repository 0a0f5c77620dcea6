"""Post-process cost versus the number of people and of candidates, kernels versus reference.

The post-process (score filter + box decode + NMS + DCC, `postprocess_padded`) runs on planted
RTMO-s head outputs (`benchmarks.synthetic.crowd_dense_outputs`), so the number of people and of
candidates (priors above the score threshold) is exact. Two sweeps:
  people 1..100 at a fixed number of candidates, and candidates 100..2000 at a fixed crowd.
For each point: the whole post-process as the model runs it on the device (eager on the CPU: the
DCC on the kept people only), NMS alone (`nms_padded`), the DCC alone on the `max_det` slots (what
the static-shape path of CUDA and compiled graphs decodes, whatever the number of people) and the
DCC on the kept people only, with the fused kernels and with `rtmo_kernels.reference`.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.harness import bench_kernel
from benchmarks.synthetic import SCORE_THR, build_model, crowd_dense_outputs
from rtmo.config import from_name
from rtmo.model.head import decode_boxes
from rtmo.model.postprocess import postprocess_padded

NMS_THR = 0.65
PEOPLE = (1, 5, 10, 20, 50, 100)
CANDIDATES = (100, 250, 500, 1000, 2000)
QUICK_PEOPLE = (1, 20, 100)
QUICK_CANDIDATES = (100, 1000)


def _nms_padded(use_kernels: bool):
    if use_kernels:
        import rtmo_kernels

        return rtmo_kernels.nms_padded
    from rtmo_kernels.reference.nms_padded import nms_padded

    return nms_padded


def measure_point(
    dcc: torch.nn.Module,
    variant: str,
    people: int,
    candidates: int,
    max_det: int,
    device: str,
    rep_ms: float,
) -> dict[str, Any]:
    """Times the post-process and its NMS and DCC parts, kernels and reference, at one point."""
    config = from_name(variant)
    dense = crowd_dense_outputs(config, people, candidates, device=device)
    size = config.input_size
    boxes = decode_boxes(dense.bbox_preds, dense.priors, dense.strides)
    scores = dense.cls_logits.sigmoid()
    slots = torch.arange(max_det, device=device)
    pose_vecs, slot_boxes, priors = dense.pose_vecs[0, slots], boxes[0, slots], dense.priors[slots]
    kept = min(people, max_det)
    point: dict[str, Any] = {"people": people, "candidates": candidates}
    for use_kernels in (True, False):
        impl = "kernels" if use_kernels else "reference"
        nms = _nms_padded(use_kernels)
        calls = {
            "postprocess": lambda k=use_kernels: postprocess_padded(
                dense, dcc, size, SCORE_THR, NMS_THR, max_det, k, "auto"
            ),
            "nms": lambda nms=nms: nms(boxes, scores, NMS_THR, SCORE_THR, max_det),
            "dcc": lambda k=use_kernels: dcc(pose_vecs, slot_boxes, priors, use_kernels=k),
            "dcc_people": lambda k=use_kernels: dcc(
                pose_vecs[:kept], slot_boxes[:kept], priors[:kept], use_kernels=k
            ),
        }
        with torch.inference_mode():
            out = calls["postprocess"]()
            point[f"detections_{impl}"] = int(out.num_detections[0])
            for part, fn in calls.items():
                timing = bench_kernel(fn, device, rep_ms=rep_ms, min_rounds=5)
                point[f"{part}_{impl}_ms"] = timing.median_ms
    return point


def run(
    variant: str = "rtmo-s",
    max_det: int = 100,
    quick: bool = False,
    device: str = "cpu",
    fixed_candidates: int = 1000,
    fixed_people: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Both sweeps; returns a JSON-ready dict."""
    model = build_model(variant, seed).reparameterize().to(device)
    dcc = model.head.dcc
    rep_ms = 40.0 if quick else 150.0
    people = QUICK_PEOPLE if quick else PEOPLE
    candidates = QUICK_CANDIDATES if quick else CANDIDATES
    by_people = [
        measure_point(dcc, variant, p, fixed_candidates, max_det, device, rep_ms) for p in people
    ]
    by_candidates = [
        measure_point(dcc, variant, fixed_people, c, max_det, device, rep_ms) for c in candidates
    ]
    return {
        "variant": model.config.name,
        "max_det": max_det,
        "score_thr": SCORE_THR,
        "nms_thr": NMS_THR,
        "device": device,
        "dtype": "float32",
        "batch": 1,
        "by_people": {"candidates": fixed_candidates, "points": by_people},
        "by_candidates": {"people": fixed_people, "points": by_candidates},
    }
