"""Triton kernel of rtmo::dcc_decode: one program per (instance, axis, block of keypoints).

The program walks the bins in tiles of BLOCK_B. The tile's encodings (cos and sin halves, BLOCK_F x
BLOCK_B each) are built in registers by angle addition: a per-program table of the rotations by t
bins (t < BLOCK_B) and an anchor per tile replace a sin/cos per bin and frequency. Two tl.dot of
the queries' halves (BLOCK_K x BLOCK_F, fp32) with them give the logits, folded into an online
softmax. The dots run as "tf32x3" (three tf32 products: float32 accuracy on tensor cores); plain
tf32 would cost 1e-3 relative in the logits, and "ieee" ran out of registers (spills at 255). The
angles reach hundreds of radians, where the approximate fp32 instructions that tl.sin/tl.cos lower
to are wrong: `_cos_sin` reduces them in float64 and evaluates polynomials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from rtmo_kernels._backend import triton_interpreted
from rtmo_kernels.ops.dcc_decode import fake_dcc_decode

# tl.dot needs every dimension >= 16.
_MIN_DOT = 16
FLOAT32_MAX: tl.constexpr = tl.constexpr(3.4028234663852886e38)
# One D block keeps the rotation table in registers for the whole program; 256 covers every RTMO
# variant (D = 128) with room.
MAX_DIM = 256


@dataclass(frozen=True)
class TritonConfig:
    """Block sizes and warps of one launch (also compiled ahead of time by the GPU compile test)."""

    block_k: int
    block_f: int
    block_b: int
    num_warps: int
    reanchor_bins: int = 256

    def constexprs(self, axis: int, argmax: bool) -> dict[str, int | bool]:
        """The kernel's constexpr arguments for one launch."""
        return {
            "AXIS": axis,
            "ARGMAX": argmax,
            "BLOCK_K": self.block_k,
            "BLOCK_F": self.block_f,
            "BLOCK_B": self.block_b,
            "LOG2_BLOCK_B": self.block_b.bit_length() - 1,
            "REANCHOR_BINS": self.reanchor_bins,
        }


def triton_config(num_keypoints: int, dim: int) -> TritonConfig:
    """The configuration the launcher uses for K keypoints and query dimension D (F = D / 2)."""
    if dim > MAX_DIM:
        raise ValueError(
            f"dcc_decode (triton): the query dimension D must be <= {MAX_DIM}, got {dim}"
        )
    block_k = min(max(_MIN_DOT, triton.next_power_of_2(num_keypoints)), 32)
    block_f = max(_MIN_DOT, triton.next_power_of_2(dim // 2))
    # 32 bins per tile and 4 warps: per thread 16 registers each for the cos/sin tables, the two
    # phi halves and the queries' halves at F = 64, K <= 32.
    return TritonConfig(block_k=block_k, block_f=block_f, block_b=32, num_warps=4)


@triton.jit
def _cos_sin(angle):
    """(cos, sin) as float32 of float64 angles of any size up to ~1e9 rad, in plain arithmetic.

    The angle is reduced by k quarter turns in float64 (pi / 2 split into a float32-exact head and
    a tail, so k * head is exact: Triton's float literals are float32), then sin and cos of the
    remainder |x| <= pi / 4 come from Taylor polynomials (truncation (pi/4)^11 / 11! = 2.5e-11)
    and the quadrant k mod 4 picks signs and order. No libdevice (whose slow-path range reduction
    cost registers and spills) and no approximate sin.approx/cos.approx, which tl.sin/tl.cos become.
    """
    k = tl.floor(angle * 0.6366197723675814 + 0.5)
    x = ((angle - k * 1.5707963705062866) - k * -4.371139000186243e-08).to(tl.float32)
    # Far past ~1e15 rad (coordinates of 1e15 px and more) the reduction leaves |x| >> pi / 4 and
    # the polynomials overflow; such angles carry no phase information in float64 anyway: any
    # point of the circle keeps the outputs finite. (NaN, from a non-finite angle, stays NaN.)
    x = tl.where(tl.abs(x) > 1.0, 0.0, x)
    x2 = x * x
    sin_x = x * (1.0 + x2 * (-1 / 6 + x2 * (1 / 120 + x2 * (-1 / 5040 + x2 * (1 / 362880)))))
    cos_x = 1.0 + x2 * (-0.5 + x2 * (1 / 24 + x2 * (-1 / 720 + x2 * (1 / 40320 - x2 / 3628800))))
    quadrant = k.to(tl.int64) & 3
    swap = (quadrant & 1) != 0
    cos_out = tl.where(swap, sin_x, cos_x)
    sin_out = tl.where(swap, cos_x, sin_x)
    cos_out = tl.where((quadrant == 1) | (quadrant == 2), -cos_out, cos_out)
    sin_out = tl.where(quadrant >= 2, -sin_out, sin_out)
    return cos_out, sin_out


@triton.jit
def _frequencies(offs_f, num_freqs, log_temperature):
    """w_j = temperature^(-j / F) in float64."""
    return tl.exp(-log_temperature * offs_f.to(tl.float64) / num_freqs.to(tl.float64))


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
    padding_hi,  # float64 scalars as two float32 parts: Triton passes Python floats as fp32
    padding_lo,
    log_temperature_hi,
    log_temperature_lo,
    AXIS: tl.constexpr,  # noqa: N803 (Triton constexprs are upper case)
    ARGMAX: tl.constexpr,  # noqa: N803
    BLOCK_K: tl.constexpr,  # noqa: N803
    BLOCK_F: tl.constexpr,  # noqa: N803
    BLOCK_B: tl.constexpr,  # noqa: N803
    LOG2_BLOCK_B: tl.constexpr,  # noqa: N803
    REANCHOR_BINS: tl.constexpr,  # noqa: N803
):
    n = tl.program_id(0).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_f = tl.arange(0, BLOCK_F)
    offs_t = tl.arange(0, BLOCK_B)
    num_freqs = dim // 2
    mask_k = offs_k < num_keypoints
    mask_q = mask_k[:, None] & (offs_f < num_freqs)[None, :]

    # The cos half and the sin half of the queries: two dots instead of one over a phi whose rows
    # would each need both the cos and the sin expression (and twice the table).
    q_rows = query_ptr + n * stride_qn + offs_k[:, None] * stride_qk
    q_cos = tl.load(q_rows + offs_f[None, :] * stride_qd, mask=mask_q, other=0.0).to(tl.float32)
    q_sin = tl.load(q_rows + (num_freqs + offs_f[None, :]) * stride_qd, mask=mask_q, other=0.0)
    q_sin = q_sin.to(tl.float32)

    # Geometry in float64 (see csrc/common/dcc_decode.h: AxisGeometry).
    lo = tl.load(boxes_ptr + n * stride_bn + AXIS * stride_bc).to(tl.float64)
    hi = tl.load(boxes_ptr + n * stride_bn + (AXIS + 2) * stride_bc).to(tl.float64)
    prior = tl.load(priors_ptr + n * stride_pn + AXIS * stride_pc).to(tl.float64)
    padding = tl.cast(padding_hi, tl.float64) + tl.cast(padding_lo, tl.float64)
    log_temperature = tl.cast(log_temperature_hi, tl.float64) + tl.cast(
        log_temperature_lo, tl.float64
    )
    center = 0.5 * (lo + hi)
    size = padding * (hi - lo)
    rel0 = center - 0.5 * size - prior
    step = size / (num_bins - 1)
    w = _frequencies(offs_f, num_freqs, log_temperature)

    # Rotation by t bins, t < BLOCK_B, for every frequency: t written in binary, one exact rotation
    # by 2^b bins per bit (float32 products, ~5 roundings: 3e-7), no sin/cos per element.
    table_cos = tl.full((BLOCK_F, BLOCK_B), 1.0, tl.float32)
    table_sin = tl.zeros((BLOCK_F, BLOCK_B), tl.float32)
    for b in tl.static_range(LOG2_BLOCK_B):
        rot_cos, rot_sin = _cos_sin(((1 << b) * step) * w)
        bit_set = ((offs_t >> b) & 1)[None, :] != 0
        rc = tl.where(bit_set, rot_cos[:, None], 1.0)
        rs = tl.where(bit_set, rot_sin[:, None], 0.0)
        next_cos = table_cos * rc - table_sin * rs
        table_sin = table_sin * rc + table_cos * rs
        table_cos = next_cos

    # The anchor (angle of the tile's first bin) advances a tile by one rotation and is recomputed
    # exactly every REANCHOR_BINS bins (float32 drift <= 8 roundings, ~1e-6).
    tile_cos, tile_sin = _cos_sin((BLOCK_B * step) * w)
    anchor_cos = tl.zeros((BLOCK_F,), tl.float32)
    anchor_sin = tl.zeros((BLOCK_F,), tl.float32)

    run_max = tl.full((BLOCK_K,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_K,), tl.float32)
    run_index = tl.zeros((BLOCK_K,), tl.float32)
    run_arg = tl.zeros((BLOCK_K,), tl.int32)
    for first_bin in range(0, num_bins, BLOCK_B):
        if first_bin % REANCHOR_BINS == 0:
            # w recomputed here rather than kept live: 64 float64 values cost 128 registers.
            w_anchor = _frequencies(offs_f, num_freqs, log_temperature)
            anchor_cos, anchor_sin = _cos_sin((rel0 + first_bin * step) * w_anchor)
        ac = anchor_cos[:, None]
        as_ = anchor_sin[:, None]
        phi_cos = ac * table_cos - as_ * table_sin
        phi_sin = as_ * table_cos + ac * table_sin
        logits = tl.dot(q_cos, phi_cos, input_precision="tf32x3")
        logits = tl.dot(q_sin, phi_sin, acc=logits, input_precision="tf32x3")
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
        rotated_cos = anchor_cos * tile_cos - anchor_sin * tile_sin
        anchor_sin = anchor_sin * tile_cos + anchor_cos * tile_sin
        anchor_cos = rotated_cos

    index = run_index.to(tl.float64) / run_sum.to(tl.float64)
    if ARGMAX:
        index = run_arg.to(tl.float64)
    coordinate = ((-0.5 + index / (num_bins - 1)) * size + center).to(tl.float32)
    confidence = 1.0 / run_sum
    # NaN policy (rtmo_kernels.ops.dcc_decode): a NaN or +inf logit, or only -inf ones, leave a
    # non-finite sum; that, or a coordinate beyond the float32 range, makes both outputs NaN.
    undefined = (run_sum != run_sum) | (run_sum > FLOAT32_MAX) | (run_max > FLOAT32_MAX)
    undefined |= (coordinate != coordinate) | (tl.abs(coordinate) > FLOAT32_MAX)
    coordinate = tl.where(undefined, float("nan"), coordinate)
    confidence = tl.where(undefined, float("nan"), confidence)
    out = n * num_keypoints * 2 + offs_k * 2 + AXIS
    tl.store(keypoints_ptr + out, coordinate, mask=mask_k)
    tl.store(confidence_ptr + out, confidence, mask=mask_k)


def _split_float64(value: float) -> tuple[float, float]:
    """value = hi + lo with hi and lo float32: the kernel rebuilds value to ~1e-15 relative."""
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))


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
            *_split_float64(padding),
            *_split_float64(math.log(temperature)),
            **cfg.constexprs(axis, mode == "argmax"),
            num_warps=cfg.num_warps,
        )
    return keypoints, confidence


if triton_interpreted():
    dcc_decode_triton.register_fake(fake_dcc_decode)
