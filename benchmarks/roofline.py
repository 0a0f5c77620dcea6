"""Roofline: each kernel's achieved GFLOP/s or GB/s next to the machine's own sgemm and memory-copy
rates (`benchmarks.machine`), all measured in the same run.

Work counted (PERFORMANCE.md conventions, fp32):
  dcc_decode   the logits of the folded decode, 2*N*K*D*(Bx+By) FLOP (1.95 MFLOP per RTMO-s person);
               softmax and expectation are O(N*K*(Bx+By)) and not counted. Its floor is that work at
               the sgemm rate. The reference decode (mmpose's: encodings through x_fc/y_fc, then
               logits) is timed on the same inputs; its rate is quoted in the same useful FLOP.
  NMS          bytes of boxes and scores read once; NMS is bound by latency and compares, not by
               bandwidth, so its GB/s says how far it is from streaming its input.
  score+decode sigmoid of the cls logits and the box decode over every prior: bytes read + written.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.harness import bench_kernel
from benchmarks.synthetic import SCORE_THR, build_model, crowd_boxes, crowd_head_maps, level_sizes
from rtmo.config import from_name
from rtmo.model.head import decode_boxes, grid_priors

NMS_THR = 0.65
DCC_PEOPLE = (20, 50)
NMS_CANDIDATES = (500, 2000)


def dcc_logit_flop(n: int, k: int, d: int, bins: tuple[int, int]) -> float:
    """FLOP of the folded decode's logits: 2*N*K*D*(Bx+By)."""
    return 2.0 * n * k * d * sum(bins)


def dcc_unfolded_flop(n: int, k: int, d: int, bins: tuple[int, int]) -> float:
    """FLOP of mmpose's decode: every bin encoding through the D x D Linear, then the logits."""
    return 2.0 * n * sum(bins) * d * d + dcc_logit_flop(n, k, d, bins)


def machine_rates() -> dict[str, Any]:
    """The machine's sgemm GFLOP/s and memcpy GB/s (`benchmarks.machine`, once per process)."""
    from benchmarks.machine import machine_info

    return machine_info()


def _dcc_inputs(variant: str, people: int, device: str, seed: int = 0):
    config = from_name(variant)
    model = build_model(config, seed).reparameterize().to(device)
    dcc = model.head.dcc
    gen = torch.Generator().manual_seed(seed)
    boxes = crowd_boxes(people, config.input_size, seed).to(device)
    priors = ((boxes[:, :2] + boxes[:, 2:]) / 2).round()
    pose_vecs = torch.randn(people, config.pose_vec_channels, generator=gen).to(device)
    with torch.inference_mode():
        feats = dcc.keypoint_features(pose_vecs)
        query_x, query_y = dcc.queries(feats)
    return dcc, feats, query_x, query_y, boxes, priors


def _dcc_point(variant: str, people: int, device: str, rep_ms: float, sgemm: float | None) -> dict:
    import rtmo_kernels
    from rtmo_kernels.reference.dcc import dcc_decode_unfolded

    dcc, feats, qx, qy, boxes, priors = _dcc_inputs(variant, people, device)
    k, d = qx.shape[1], qx.shape[2]
    args = {"num_bins": dcc.num_bins, "padding": dcc.padding, "temperature": dcc.temperature}
    with torch.inference_mode():
        kernel = bench_kernel(
            lambda: rtmo_kernels.dcc_decode(qx, qy, boxes, priors, **args), device, rep_ms=rep_ms
        )
        reference = bench_kernel(
            lambda: dcc_decode_unfolded(feats, dcc.x_fc, dcc.y_fc, boxes, priors, **args),
            device,
            rep_ms=rep_ms,
        )
    flop = dcc_logit_flop(people, k, d, dcc.num_bins)
    executed = dcc_unfolded_flop(people, k, d, dcc.num_bins)
    row = {
        "kernel": "dcc_decode",
        "shape": f"N={people} K={k} D={d} bins={dcc.num_bins[0]}+{dcc.num_bins[1]}",
        "people": people,
        "flop": flop,
        "kernel_ms": kernel.median_ms,
        "reference_ms": reference.median_ms,
        "speedup_vs_reference": reference.median_ms / kernel.median_ms,
        "gflops": flop / kernel.median_ms / 1e6,
        "reference_gflops_useful": flop / reference.median_ms / 1e6,
        "reference_gflops_executed": executed / reference.median_ms / 1e6,
    }
    if sgemm:
        row["floor_ms"] = flop / sgemm / 1e6
        row["x_floor"] = kernel.median_ms / row["floor_ms"]
        row["fraction_of_sgemm"] = row["gflops"] / sgemm
    return row


def dcc_rows(variant: str, device: str, rep_ms: float, sgemm_gflops: float | None) -> list[dict]:
    """dcc_decode (fused kernel) and the reference decode at RTMO-s shapes for 20 and 50 people."""
    return [_dcc_point(variant, p, device, rep_ms, sgemm_gflops) for p in DCC_PEOPLE]


def _candidates(variant: str, num: int, device: str):
    """Scores (M,) and boxes (M, 4) of `num` candidates planted around a crowd (num // 20 people,
    at least 3), as the NMS sees them after the score filter."""
    config = from_name(variant)
    priors, strides = grid_priors(level_sizes(config.input_size), torch.device("cpu"))
    people = crowd_boxes(max(3, num // 20), config.input_size)
    logits, raw = crowd_head_maps(priors, strides, people, num)
    boxes = decode_boxes(raw[None], priors, strides)[0]
    chosen = logits.sigmoid() > SCORE_THR
    return logits.sigmoid()[chosen].to(device), boxes[chosen].to(device)


def _nms_point(variant: str, num: int, device: str, rep_ms: float) -> dict:
    import torchvision

    import rtmo_kernels

    scores, boxes = _candidates(variant, num, device)
    idxs = torch.zeros_like(scores, dtype=torch.int64)
    kernel = bench_kernel(
        lambda: rtmo_kernels.batched_nms(boxes, scores, idxs, NMS_THR), device, rep_ms=rep_ms
    )
    tv = bench_kernel(
        lambda: torchvision.ops.batched_nms(boxes, scores, idxs, NMS_THR), device, rep_ms=rep_ms
    )
    nbytes = boxes.numel() * 4 + scores.numel() * 4 + idxs.numel() * 8
    return {
        "kernel": "batched_nms",
        "shape": f"M={scores.numel()} (clustered, {max(3, num // 20)} people)",
        "candidates": scores.numel(),
        "bytes": nbytes,
        "kernel_ms": kernel.median_ms,
        "torchvision_ms": tv.median_ms,
        "speedup_vs_torchvision": tv.median_ms / kernel.median_ms,
        "gbps": nbytes / kernel.median_ms / 1e6,
    }


def nms_rows(variant: str, device: str, rep_ms: float) -> list[dict]:
    """batched_nms (fused kernel) next to torchvision's on clustered candidates."""
    return [_nms_point(variant, num, device, rep_ms) for num in NMS_CANDIDATES]


def decode_row(variant: str, device: str, rep_ms: float) -> dict:
    """Score sigmoid + box decode over every prior of one image (the post-process's dense part)."""
    config = from_name(variant)
    priors, strides = grid_priors(level_sizes(config.input_size), torch.device(device))
    n = priors.shape[0]
    logits = torch.randn(1, n, device=device)
    raw = torch.randn(1, n, 4, device=device) * 0.1

    def run():
        return logits.sigmoid(), decode_boxes(raw, priors, strides)

    timing = bench_kernel(run, device, rep_ms=rep_ms)
    nbytes = n * 4 * (1 + 4 + 2 + 1) + n * 4 * (1 + 4)  # read logits, raw, priors, strides; write
    return {
        "kernel": "score + box decode (torch ops)",
        "shape": f"N={n} priors",
        "bytes": nbytes,
        "kernel_ms": timing.median_ms,
        "gbps": nbytes / timing.median_ms / 1e6,
    }


def run(
    variant: str = "rtmo-s", device: str = "cpu", quick: bool = False, machine=None
) -> dict[str, Any]:
    """Machine rates and every kernel's achieved rate; returns a JSON-ready dict."""
    machine = machine if machine is not None else machine_rates()
    rep_ms = 50.0 if quick else 300.0
    sgemm = machine.get("sgemm_gflops")
    memcpy = machine.get("memcpy_gbps")
    rows = [*dcc_rows(variant, device, rep_ms, sgemm), *nms_rows(variant, device, rep_ms)]
    rows.append(decode_row(variant, device, rep_ms))
    if memcpy:
        for row in rows:
            if "gbps" in row:
                row["fraction_of_memcpy"] = row["gbps"] / memcpy
    return {"variant": from_name(variant).name, "device": device, "machine": machine, "rows": rows}
