"""What the Triton kernels of rtmo::dcc_decode and rtmo::dcc_mle_loss share: the walk over the
bins with their sinusoidal encodings built in registers by angle addition.

Per program, a table of the rotations by t bins (t < BLOCK_B, one exact rotation per bit of t) and
an anchor per tile (the encoding of the tile's first bin, advanced by a tile's rotation and
recomputed exactly every REANCHOR_BINS bins) replace a sin/cos per bin and frequency. The angles
reach hundreds of radians, where the approximate fp32 instructions that tl.sin/tl.cos lower to are
wrong: `_cos_sin` reduces them in float64 and evaluates polynomials. The dots run as "tf32x3"
(three tf32 products: float32 accuracy on tensor cores); plain tf32 would cost 1e-3 relative in
the logits, and "ieee" ran out of registers (spills at 255).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from rtmo_kernels._backend import triton_interpreted

# tl.dot needs every dimension >= 16.
MIN_DOT = 16
# One D block keeps the rotation table in registers for the whole program; 256 covers every RTMO
# variant (D = 128) with room.
MAX_DIM = 256

# On a GPU the ops are triton_ops, so torch.compile sees the kernels inside. The interpreter runs a
# kernel on whatever tensors it is given, also the fake/functional ones of AOT tracing, so there the
# ops are opaque custom ops with fake kernels.
define_op = torch.library.custom_op if triton_interpreted() else torch.library.triton_op


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
def _rotate(cos, sin, by_cos, by_sin):
    """Angle addition: (cos, sin) of the angle turned by the rotation (by_cos, by_sin)."""
    return cos * by_cos - sin * by_sin, sin * by_cos + cos * by_sin


@triton.jit
def _rotation_tables(step, w, offs_t, BLOCK_F: tl.constexpr, LOG2_BLOCK_B: tl.constexpr):  # noqa: N803
    """Rotation by t bins (t < BLOCK_B) per frequency, one exact rotation per bit of t."""
    table_cos = tl.full((BLOCK_F, 1 << LOG2_BLOCK_B), 1.0, tl.float32)
    table_sin = tl.zeros((BLOCK_F, 1 << LOG2_BLOCK_B), tl.float32)
    for b in tl.static_range(LOG2_BLOCK_B):
        rot_cos, rot_sin = _cos_sin(((1 << b) * step) * w)
        bit_set = ((offs_t >> b) & 1)[None, :] != 0
        rc = tl.where(bit_set, rot_cos[:, None], 1.0)
        rs = tl.where(bit_set, rot_sin[:, None], 0.0)
        table_cos, table_sin = _rotate(table_cos, table_sin, rc, rs)
    return table_cos, table_sin


@triton.jit
def _bin_walk(step, w, offs_t, BLOCK_F: tl.constexpr, LOG2_BLOCK_B: tl.constexpr):  # noqa: N803
    """What the walk over the bins rotates by: the tables within a tile (`_rotation_tables`) and
    the rotation by a whole tile, which advances the anchor from one tile to the next."""
    table_cos, table_sin = _rotation_tables(step, w, offs_t, BLOCK_F, LOG2_BLOCK_B)
    tile_cos, tile_sin = _cos_sin(((1 << LOG2_BLOCK_B) * step) * w)
    return table_cos, table_sin, tile_cos, tile_sin


@triton.jit
def _tile_anchor(
    anchor_cos,
    anchor_sin,
    first_bin,
    rel0,
    step,
    offs_f,
    num_freqs,
    log_temperature,
    REANCHOR_BINS: tl.constexpr,  # noqa: N803
):
    """The encoding (per frequency) of the tile's first bin: the previous tile's anchor advanced by
    a tile, computed exactly again every REANCHOR_BINS bins (and on the first tile) so the float32
    rotations do not drift."""
    if first_bin % REANCHOR_BINS == 0:
        w_anchor = _frequencies(offs_f, num_freqs, log_temperature)
        anchor_cos, anchor_sin = _cos_sin((rel0 + first_bin * step) * w_anchor)
    return anchor_cos, anchor_sin


@triton.jit
def _encoding_dot(a_cos, a_sin, phi_cos, phi_sin):
    """<a, phi> (K, B) of the keypoints' (K, F) halves with the bins' encodings (F, B)."""
    dot = tl.dot(a_cos, phi_cos, input_precision="tf32x3")
    return tl.dot(a_sin, phi_sin, acc=dot, input_precision="tf32x3")


@triton.jit
def _load_query_halves(
    query_ptr, n, offs_k, mask_k, offs_f, num_freqs, stride_qn, stride_qk, stride_qd
):
    mask_q = mask_k[:, None] & (offs_f < num_freqs)[None, :]
    rows = query_ptr + n * stride_qn + offs_k[:, None] * stride_qk
    q_cos = tl.load(rows + offs_f[None, :] * stride_qd, mask=mask_q, other=0.0).to(tl.float32)
    q_sin = tl.load(rows + (num_freqs + offs_f[None, :]) * stride_qd, mask=mask_q, other=0.0)
    return q_cos, q_sin.to(tl.float32)


def split_float64(value: float) -> tuple[float, float]:
    """value = hi + lo with hi and lo float32: the kernel rebuilds value to ~1e-15 relative."""
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))
