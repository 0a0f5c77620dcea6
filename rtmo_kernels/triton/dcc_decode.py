"""Triton kernel of rtmo::dcc_decode: one program per (instance, axis, block of keypoints).

The program walks the bins in tiles of BLOCK_B. The tile's encodings (BLOCK_D x BLOCK_B) are built
in registers by angle addition: a per-program table of the rotations by t bins (t < BLOCK_B) and an
exact anchor per tile (BLOCK_D sin/cos of float64 angles) replace a sin/cos per bin and frequency.
tl.dot of the queries (BLOCK_K x BLOCK_D, fp32, "ieee" precision: tf32 would cost 1e-3 relative
in the logits) with the tile gives the logits, folded into an online softmax. sin/cos go through
libdevice on float64 angles: the angles reach hundreds of radians, where the approximate fp32
instructions that tl.sin/tl.cos lower to are wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from rtmo_kernels._backend import triton_interpreted
from rtmo_kernels.ops.dcc_decode import fake_dcc_decode

# tl.dot needs every dimension >= 16.
_MIN_DOT = 16
# One D block keeps the rotation table in registers for the whole program; 256 covers every RTMO
# variant (D = 128) with room.
MAX_DIM = 256


@dataclass(frozen=True)
class TritonConfig:
    """Block sizes and warps of one launch (also compiled ahead of time by the GPU compile test)."""

    block_k: int
    block_d: int
    block_b: int
    num_warps: int


def triton_config(num_keypoints: int, dim: int) -> TritonConfig:
    """The configuration the launcher uses for K keypoints and query dimension D."""
    if dim > MAX_DIM:
        raise ValueError(f"dcc_decode (triton): the query dimension D must be <= {MAX_DIM}, got {dim}")
    block_k = min(max(_MIN_DOT, triton.next_power_of_2(num_keypoints)), 32)
    block_d = max(_MIN_DOT, triton.next_power_of_2(dim))
    # 32 bins per tile: the phi tile is block_d x 32 fp32, 32 registers per thread at D = 128 with
    # 4 warps, next to the 32 x 32 logits and the 32 x 128 queries.
    return TritonConfig(block_k=block_k, block_d=block_d, block_b=32, num_warps=4)


@triton.jit
def _cos_sin_f64(angle, LIBDEVICE: tl.constexpr):
    """Accurate (cos, sin) of float64 angles as float32. The interpreter has no libdevice; its
    tl.cos/tl.sin are numpy's float64 functions, equally accurate."""
    if LIBDEVICE:
        return libdevice.cos(angle).to(tl.float32), libdevice.sin(angle).to(tl.float32)
    return tl.cos(angle).to(tl.float32), tl.sin(angle).to(tl.float32)


@triton.jit
def dcc_decode_kernel(
    query_ptr,  # (N, K, D) of one axis
    boxes_ptr,  # (N, 4) xyxy
    priors_ptr,  # (N, 2)
    keypoints_ptr,  # (N, K, 2) fp32, contiguous
    confidence_ptr,  # (N, K, 2) fp32, contiguous
    num_keypoints,
    dim,
    num_bins,
    stride_qn,
    stride_qk,
    stride_qd,
    stride_bn,
    stride_bc,
    stride_pn,
    stride_pc,
    padding,
    log_temperature,
    AXIS: tl.constexpr,
    ARGMAX: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_B: tl.constexpr,
    LIBDEVICE: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BLOCK_B)
    mask_k = offs_k < num_keypoints
    mask_d = offs_d < dim

    q = tl.load(
        query_ptr + n * stride_qn + offs_k[:, None] * stride_qk + offs_d[None, :] * stride_qd,
        mask=mask_k[:, None] & mask_d[None, :],
        other=0.0,
    ).to(tl.float32)

    # Geometry in float64 (see csrc/common/dcc_decode.h: AxisGeometry).
    lo = tl.load(boxes_ptr + n * stride_bn + AXIS * stride_bc).to(tl.float64)
    hi = tl.load(boxes_ptr + n * stride_bn + (AXIS + 2) * stride_bc).to(tl.float64)
    prior = tl.load(priors_ptr + n * stride_pn + AXIS * stride_pc).to(tl.float64)
    center = 0.5 * (lo + hi)
    size = padding * (hi - lo)
    rel0 = center - 0.5 * size - prior
    step = size / (num_bins - 1)

    # Row d of phi: cos(r w_d) for d < F, sin(r w_{d-F}) after; padded rows meet zero queries.
    num_freqs = dim // 2
    is_sin = offs_d >= num_freqs
    j = tl.where(is_sin, offs_d - num_freqs, offs_d).to(tl.float64)
    w = tl.exp(-log_temperature * j / num_freqs.to(tl.float64))
    table_angle = (offs_t.to(tl.float64)[None, :] * step) * w[:, None]
    table_cos, table_sin = _cos_sin_f64(table_angle, LIBDEVICE)

    run_max = tl.full((BLOCK_K,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_K,), tl.float32)
    run_index = tl.zeros((BLOCK_K,), tl.float32)
    run_arg = tl.zeros((BLOCK_K,), tl.int32)
    for first_bin in range(0, num_bins, BLOCK_B):
        anchor = (rel0 + first_bin * step) * w
        anchor_cos, anchor_sin = _cos_sin_f64(anchor, LIBDEVICE)
        anchor_cos = anchor_cos[:, None]
        anchor_sin = anchor_sin[:, None]
        phi = tl.where(
            is_sin[:, None],
            anchor_sin * table_cos + anchor_cos * table_sin,
            anchor_cos * table_cos - anchor_sin * table_sin,
        )
        logits = tl.dot(q, phi, input_precision="ieee")
        bins = first_bin + offs_t
        logits = tl.where((bins < num_bins)[None, :], logits, float("-inf"))
        tile_max = tl.max(logits, axis=1)
        # First index of the tile maximum: the smallest bin among those equal to it.
        tile_arg = tl.min(tl.where(logits == tile_max[:, None], bins[None, :], num_bins), axis=1)
        new_max = tl.maximum(run_max, tile_max)
        scale = tl.exp(run_max - new_max)  # 0 on the first tile (run_max = -inf)
        e = tl.exp(logits - new_max[:, None])
        run_sum = run_sum * scale + tl.sum(e, axis=1)
        run_index = run_index * scale + tl.sum(e * bins.to(tl.float32)[None, :], axis=1)
        run_arg = tl.where(tile_max > run_max, tile_arg, run_arg)  # strict: first tile wins ties
        run_max = new_max

    if ARGMAX:
        index = run_arg.to(tl.float64)
    else:
        index = run_index.to(tl.float64) / run_sum.to(tl.float64)
    coordinate = (-0.5 + index / (num_bins - 1)) * size + center
    out = n * num_keypoints * 2 + offs_k * 2 + AXIS
    tl.store(keypoints_ptr + out, coordinate.to(tl.float32), mask=mask_k)
    tl.store(confidence_ptr + out, 1.0 / run_sum, mask=mask_k)


# On a GPU a triton_op, so torch.compile sees the kernel inside. The interpreter runs the kernel on
# whatever tensors it is given, also the fake/functional ones of AOT tracing, so there the op is an
# opaque custom op with a fake kernel.
_define_op = torch.library.custom_op if triton_interpreted() else torch.library.triton_op


@_define_op("rtmo::dcc_decode_triton", mutates_args=())
def dcc_decode_triton(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    num_bins_x: int,
    num_bins_y: int,
    padding: float,
    temperature: float,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rtmo::dcc_decode on the Triton kernel (arguments as the op; inputs already validated).

    Returns keypoints (Tensor[N, K, 2]) and confidence (Tensor[N, K, 2]), float32.
    """
    n, k, d = query_x.shape
    keypoints = query_x.new_empty((n, k, 2), dtype=torch.float32)
    confidence = query_x.new_empty((n, k, 2), dtype=torch.float32)
    if n == 0 or k == 0:
        return keypoints, confidence
    cfg = triton_config(k, d)
    grid = (n, triton.cdiv(k, cfg.block_k))
    for axis, (query, bins) in enumerate(((query_x, num_bins_x), (query_y, num_bins_y))):
        torch.library.wrap_triton(dcc_decode_kernel)[grid](
            query,
            boxes,
            priors,
            keypoints,
            confidence,
            k,
            d,
            bins,
            *query.stride(),
            *boxes.stride(),
            *priors.stride(),
            padding,
            math.log(temperature),
            AXIS=axis,
            ARGMAX=mode == "argmax",
            BLOCK_K=cfg.block_k,
            BLOCK_D=cfg.block_d,
            BLOCK_B=cfg.block_b,
            LIBDEVICE=not triton_interpreted(),
            num_warps=cfg.num_warps,
        )
    return keypoints, confidence


if triton_interpreted():
    dcc_decode_triton.register_fake(fake_dcc_decode)
