"""Triton kernels of rtmo::dcc_mle_loss: forward and backward, one launch per axis, one program per
instance (and block of keypoints in the forward).

The bins are walked in tiles of BLOCK_B with the encodings built in registers by angle addition,
as in dcc_decode's kernel (`rtmo_kernels.triton.dcc_encoding`). Both passes walk
the tiles the same way (`_tile_anchor`, `_bin_tile`: the encodings, logits and targets). Per tile:
- forward: logits = two tl.dot of the queries' cos and sin halves with the tile's phi, clamped,
  folded into an online softmax with the target-weighted sum; only (max, sum, P) per keypoint and
  axis, the keypoints and the nll are stored.
- backward: the logits and the derivative logits <q, phi'> (phi' = [-w sin, w cos]) are
  recomputed, turned into d/d logit (alpha), the bins' gradients and the sigma terms
  (csrc/common/dcc_mle_loss.h has the derivation); the query gradient accumulates as
  tl.dot(alpha, phi^T), the box gradient as sums over the tile.
The dots run as "tf32x3" (float32 accuracy on tensor cores), as in dcc_decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from rtmo_kernels._backend import triton_interpreted
from rtmo_kernels.ops.dcc_mle_loss import fake_backward, fake_forward, register_autograd
from rtmo_kernels.triton.dcc_encoding import (
    MAX_DIM,
    MIN_DOT,
    _bin_walk,
    _encoding_dot,
    _frequencies,
    _load_query_halves,
    _rotate,
    _tile_anchor,
    define_op,
    split_float64,
)

# mmpose's constants (csrc/common/dcc_mle_loss.h); constexpr, as @triton.jit code may only read
# constexpr globals.
_LOGIT_CLAMP = tl.constexpr(5e4)
_SOFTMAX_EPS = tl.constexpr(1e-8)
_SIGMA_MIN = tl.constexpr(1e-3)
_LIKELIHOOD_EPS = tl.constexpr(1e-4)


@dataclass(frozen=True)
class TritonConfig:
    """Block sizes and warps of one launch (also compiled ahead of time by the GPU compile test)."""

    block_k: int
    block_f: int
    block_b: int
    num_warps: int
    reanchor_bins: int = 256

    def constexprs(self) -> dict[str, int]:
        """The kernels' constexpr arguments."""
        return {
            "BLOCK_K": self.block_k,
            "BLOCK_F": self.block_f,
            "BLOCK_B": self.block_b,
            "LOG2_BLOCK_B": self.block_b.bit_length() - 1,
            "REANCHOR_BINS": self.reanchor_bins,
        }


def triton_config(num_keypoints: int, dim: int, backward: bool) -> TritonConfig:
    """The configuration the launcher uses for K keypoints and query dimension D (F = D / 2)."""
    if dim > MAX_DIM:
        raise ValueError(
            f"dcc_mle_loss (triton): the query dimension D must be <= {MAX_DIM}, got {dim}"
        )
    block_f = max(MIN_DOT, triton.next_power_of_2(dim // 2))
    if backward:
        # The backward holds two more K x F operands (the derivative queries) and the query
        # gradients besides the forward's tiles. Measured with ptxas at K = 17, D = 128, 4 warps:
        # 32 keypoints x 32 bins spilled 612 bytes, 8 warps 424, 16 x 32 160, 16 x 16 none (the
        # keypoints then run in blocks of 16: 16 + 1 for K = 17).
        return TritonConfig(block_k=MIN_DOT, block_f=block_f, block_b=16, num_warps=4)
    # The forward as dcc_decode's kernel: 32 bins per tile and 4 warps, K <= 32 in one block.
    block_k = min(max(MIN_DOT, triton.next_power_of_2(num_keypoints)), 32)
    return TritonConfig(block_k=block_k, block_f=block_f, block_b=32, num_warps=4)


@triton.jit
def _axis_setup(
    boxes_ptr,
    priors_ptr,
    targets_ptr,
    sigmas_ptr,
    areas_ptr,
    n,
    offs_k,
    mask_k,
    num_keypoints,
    num_bins,
    stride_bn,
    stride_bc,
    stride_pn,
    stride_pc,
    stride_tn,
    stride_tk,
    stride_tc,
    stride_sn,
    stride_sk,
    stride_an,
    padding,
    AXIS: tl.constexpr,  # noqa: N803
):
    """Geometry (float64) and the keypoints' Laplace target constants (float32) of one axis."""
    lo = tl.load(boxes_ptr + n * stride_bn + AXIS * stride_bc).to(tl.float64)
    hi = tl.load(boxes_ptr + n * stride_bn + (AXIS + 2) * stride_bc).to(tl.float64)
    prior = tl.load(priors_ptr + n * stride_pn + AXIS * stride_pc).to(tl.float64)
    center = 0.5 * (lo + hi)
    size = padding * (hi - lo)
    first = center - 0.5 * size
    rel0 = first - prior
    step = size / (num_bins - 1)
    target = tl.load(
        targets_ptr + n * stride_tn + offs_k * stride_tk + AXIS * stride_tc, mask=mask_k, other=0.0
    ).to(tl.float64)
    sigma = tl.load(sigmas_ptr + n * stride_sn + offs_k * stride_sk, mask=mask_k, other=1.0)
    sigma = tl.maximum(sigma.to(tl.float64), _SIGMA_MIN)
    scale = tl.maximum(tl.sqrt(tl.load(areas_ptr + n * stride_an).to(tl.float64)), 1.0)
    offset0 = (target - first).to(tl.float32)
    rate = (1.0 / (2.0 * sigma * scale)).to(tl.float32)
    inv_sigma = (1.0 / sigma).to(tl.float32)
    return center, size, rel0, step, offset0, rate, inv_sigma


@triton.jit
def _target(offset0, rate, inv_sigma, bin_offset):
    """Signed distance x* - b, distance and Laplace target of (K, B) keypoints x bins."""
    signed = offset0[:, None] - bin_offset[None, :]
    distance = tl.abs(signed)
    return signed, distance, tl.exp(-distance * rate[:, None]) * inv_sigma[:, None]


@triton.jit
def _bin_tile(
    q_cos,
    q_sin,
    anchor_cos,
    anchor_sin,
    table_cos,
    table_sin,
    first_bin,
    offs_t,
    step,
    offset0,
    rate,
    inv_sigma,
):
    """The tile of bins from `first_bin`, the anchor being its first bin's encoding: the bins'
    encodings phi (cos and sin halves, F x B), the logits <q, phi> before the clamp (K, B), the
    bin indices (B,) and the targets of `_target` (K, B)."""
    phi_cos, phi_sin = _rotate(anchor_cos[:, None], anchor_sin[:, None], table_cos, table_sin)
    raw = _encoding_dot(q_cos, q_sin, phi_cos, phi_sin)
    bins = first_bin + offs_t
    bin_offset = (bins.to(tl.float64) * step).to(tl.float32)
    signed, distance, target = _target(offset0, rate, inv_sigma, bin_offset)
    return phi_cos, phi_sin, raw, bins, signed, distance, target


@triton.jit
def _forward_axis(
    query_ptr,
    boxes_ptr,
    priors_ptr,
    targets_ptr,
    sigmas_ptr,
    areas_ptr,
    keypoints_ptr,
    stats_ptr,
    n,
    offs_k,
    mask_k,
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
    stride_tn,
    stride_tk,
    stride_tc,
    stride_sn,
    stride_sk,
    stride_an,
    padding,
    log_temperature,
    AXIS: tl.constexpr,  # noqa: N803
    BLOCK_K: tl.constexpr,  # noqa: N803
    BLOCK_F: tl.constexpr,  # noqa: N803
    BLOCK_B: tl.constexpr,  # noqa: N803
    LOG2_BLOCK_B: tl.constexpr,  # noqa: N803
    REANCHOR_BINS: tl.constexpr,  # noqa: N803
):
    """One axis of the forward; stores stats and keypoints, returns P (BLOCK_K,) float32."""
    offs_f = tl.arange(0, BLOCK_F)
    offs_t = tl.arange(0, BLOCK_B)
    num_freqs = dim // 2
    q_cos, q_sin = _load_query_halves(
        query_ptr, n, offs_k, mask_k, offs_f, num_freqs, stride_qn, stride_qk, stride_qd
    )
    center, size, rel0, step, offset0, rate, inv_sigma = _axis_setup(
        boxes_ptr, priors_ptr, targets_ptr, sigmas_ptr, areas_ptr, n, offs_k, mask_k,
        num_keypoints, num_bins, stride_bn, stride_bc, stride_pn, stride_pc, stride_tn,
        stride_tk, stride_tc, stride_sn, stride_sk, stride_an, padding, AXIS,
    )  # fmt: skip
    w = _frequencies(offs_f, num_freqs, log_temperature)
    table_cos, table_sin, tile_cos, tile_sin = _bin_walk(step, w, offs_t, BLOCK_F, LOG2_BLOCK_B)
    anchor_cos = tl.zeros((BLOCK_F,), tl.float32)
    anchor_sin = tl.zeros((BLOCK_F,), tl.float32)

    run_max = tl.full((BLOCK_K,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_K,), tl.float32)
    run_target = tl.zeros((BLOCK_K,), tl.float32)
    run_index = tl.zeros((BLOCK_K,), tl.float32)
    for first_bin in range(0, num_bins, BLOCK_B):
        anchor_cos, anchor_sin = _tile_anchor(
            anchor_cos, anchor_sin, first_bin, rel0, step, offs_f, num_freqs, log_temperature,
            REANCHOR_BINS,
        )  # fmt: skip
        _, _, raw, bins, _, _, target = _bin_tile(
            q_cos, q_sin, anchor_cos, anchor_sin, table_cos, table_sin, first_bin, offs_t, step,
            offset0, rate, inv_sigma,
        )  # fmt: skip
        logits = tl.minimum(tl.maximum(raw, -_LOGIT_CLAMP), _LOGIT_CLAMP)
        logits = tl.where((bins < num_bins)[None, :], logits, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        scale = tl.exp(run_max - new_max)  # 0 on the first tile (run_max = -inf)
        e = tl.exp(logits - new_max[:, None])
        run_sum = run_sum * scale + tl.sum(e, axis=1)
        run_target = run_target * scale + tl.sum(e * target, axis=1)
        run_index = run_index * scale + tl.sum(e * bins.to(tl.float32)[None, :], axis=1)
        run_max = new_max
        anchor_cos, anchor_sin = _rotate(anchor_cos, anchor_sin, tile_cos, tile_sin)

    norm = run_sum.to(tl.float64) + _SOFTMAX_EPS
    likelihood = (run_target.to(tl.float64) / norm).to(tl.float32)
    index = run_index.to(tl.float64) / run_sum.to(tl.float64)
    coordinate = ((-0.5 + index / (num_bins - 1)) * size + center) * (run_sum.to(tl.float64) / norm)
    row = n * num_keypoints + offs_k
    tl.store(keypoints_ptr + row * 2 + AXIS, coordinate.to(tl.float32), mask=mask_k)
    tl.store(stats_ptr + row * 6 + 3 * AXIS, run_max, mask=mask_k)
    tl.store(stats_ptr + row * 6 + 3 * AXIS + 1, run_sum, mask=mask_k)
    tl.store(stats_ptr + row * 6 + 3 * AXIS + 2, likelihood, mask=mask_k)
    return likelihood


@triton.jit
def dcc_mle_loss_forward_kernel(
    query_ptr,  # (N, K, D) of the axis
    boxes_ptr,  # (N, 4) xyxy
    priors_ptr,  # (N, 2)
    sigmas_ptr,  # (N, K)
    targets_ptr,  # (N, K, 2)
    areas_ptr,  # (N,)
    nll_ptr,  # (N, K) fp32, contiguous
    keypoints_ptr,  # (N, K, 2) fp32, contiguous
    stats_ptr,  # (N, K, 2, 3) fp32, contiguous
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
    stride_sn,
    stride_sk,
    stride_tn,
    stride_tk,
    stride_tc,
    stride_an,
    padding_hi,  # float64 scalars as two float32 parts: Triton passes Python floats as fp32
    padding_lo,
    log_temperature_hi,
    log_temperature_lo,
    AXIS: tl.constexpr,  # noqa: N803 (Triton constexprs are upper case)
    BLOCK_K: tl.constexpr,  # noqa: N803
    BLOCK_F: tl.constexpr,  # noqa: N803
    BLOCK_B: tl.constexpr,  # noqa: N803
    LOG2_BLOCK_B: tl.constexpr,  # noqa: N803
    REANCHOR_BINS: tl.constexpr,  # noqa: N803
):
    """One axis per launch (x, then y): two axes in one program held both in registers and
    spilled. The y launch also writes the nll from the x launch's P."""
    n = tl.program_id(0).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < num_keypoints
    padding = tl.cast(padding_hi, tl.float64) + tl.cast(padding_lo, tl.float64)
    log_temperature = tl.cast(log_temperature_hi, tl.float64) + tl.cast(
        log_temperature_lo, tl.float64
    )
    likelihood = _forward_axis(
        query_ptr, boxes_ptr, priors_ptr, targets_ptr, sigmas_ptr, areas_ptr, keypoints_ptr,
        stats_ptr, n, offs_k, mask_k, num_keypoints, dim, num_bins, stride_qn, stride_qk,
        stride_qd, stride_bn, stride_bc, stride_pn, stride_pc, stride_tn, stride_tk, stride_tc,
        stride_sn, stride_sk, stride_an, padding, log_temperature, AXIS, BLOCK_K, BLOCK_F,
        BLOCK_B, LOG2_BLOCK_B, REANCHOR_BINS,
    )  # fmt: skip
    if AXIS == 1:
        row = n * num_keypoints + offs_k
        likelihood_x = tl.load(stats_ptr + row * 6 + 2, mask=mask_k, other=0.0)
        product = likelihood_x.to(tl.float64) * likelihood.to(tl.float64)
        nll = -tl.log(product + _LIKELIHOOD_EPS)
        tl.store(nll_ptr + row, nll.to(tl.float32), mask=mask_k)


@triton.jit
def _backward_axis(
    query_ptr,
    grad_query_ptr,
    boxes_ptr,
    priors_ptr,
    targets_ptr,
    sigmas_ptr,
    areas_ptr,
    stats_ptr,
    grad_likelihood,
    n,
    offs_k,
    mask_k,
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
    stride_tn,
    stride_tk,
    stride_tc,
    stride_sn,
    stride_sk,
    stride_an,
    padding,
    log_temperature,
    AXIS: tl.constexpr,  # noqa: N803
    BLOCK_K: tl.constexpr,  # noqa: N803
    BLOCK_F: tl.constexpr,  # noqa: N803
    BLOCK_B: tl.constexpr,  # noqa: N803
    LOG2_BLOCK_B: tl.constexpr,  # noqa: N803
    REANCHOR_BINS: tl.constexpr,  # noqa: N803
):
    """One axis of the backward for a block of keypoints: stores their query gradient, returns the
    sigma terms (BLOCK_K,) and the tile sums of d/db and d/db * u."""
    offs_f = tl.arange(0, BLOCK_F)
    offs_t = tl.arange(0, BLOCK_B)
    num_freqs = dim // 2
    q_cos, q_sin = _load_query_halves(
        query_ptr, n, offs_k, mask_k, offs_f, num_freqs, stride_qn, stride_qk, stride_qd
    )
    _center, _size, rel0, step, offset0, rate, inv_sigma = _axis_setup(
        boxes_ptr, priors_ptr, targets_ptr, sigmas_ptr, areas_ptr, n, offs_k, mask_k,
        num_keypoints, num_bins, stride_bn, stride_bc, stride_pn, stride_pc, stride_tn,
        stride_tk, stride_tc, stride_sn, stride_sk, stride_an, padding, AXIS,
    )  # fmt: skip
    w = _frequencies(offs_f, num_freqs, log_temperature)
    w32 = w.to(tl.float32)[None, :]
    # q' = [w q_sin, -w q_cos]: <q', phi(r)> = d/dr <q, phi(r)>.
    slope_cos = q_sin * w32
    slope_sin = -q_cos * w32
    table_cos, table_sin, tile_cos, tile_sin = _bin_walk(step, w, offs_t, BLOCK_F, LOG2_BLOCK_B)
    anchor_cos = tl.zeros((BLOCK_F,), tl.float32)
    anchor_sin = tl.zeros((BLOCK_F,), tl.float32)

    row = n * num_keypoints + offs_k
    row_max = tl.load(stats_ptr + row * 6 + 3 * AXIS, mask=mask_k, other=0.0)
    row_sum = tl.load(stats_ptr + row * 6 + 3 * AXIS + 1, mask=mask_k, other=1.0)
    likelihood = tl.load(stats_ptr + row * 6 + 3 * AXIS + 2, mask=mask_k, other=0.0)
    inv_norm = (1.0 / (row_sum.to(tl.float64) + _SOFTMAX_EPS)).to(tl.float32)

    grad_cos = tl.zeros((BLOCK_K, BLOCK_F), tl.float32)
    grad_sin = tl.zeros((BLOCK_K, BLOCK_F), tl.float32)
    sigma_terms = tl.zeros((BLOCK_K,), tl.float32)
    bin_sum = tl.zeros((BLOCK_B,), tl.float32)
    bin_unit_sum = tl.zeros((BLOCK_B,), tl.float32)
    for first_bin in range(0, num_bins, BLOCK_B):
        anchor_cos, anchor_sin = _tile_anchor(
            anchor_cos, anchor_sin, first_bin, rel0, step, offs_f, num_freqs, log_temperature,
            REANCHOR_BINS,
        )  # fmt: skip
        phi_cos, phi_sin, raw, bins, signed, distance, target = _bin_tile(
            q_cos, q_sin, anchor_cos, anchor_sin, table_cos, table_sin, first_bin, offs_t, step,
            offset0, rate, inv_sigma,
        )  # fmt: skip
        slope = _encoding_dot(slope_cos, slope_sin, phi_cos, phi_sin)
        valid = mask_k[:, None] & (bins < num_bins)[None, :]
        inside = valid & (raw <= _LOGIT_CLAMP) & (raw >= -_LOGIT_CLAMP)
        logits = tl.minimum(tl.maximum(raw, -_LOGIT_CLAMP), _LOGIT_CLAMP)
        prob = tl.exp(logits - row_max[:, None]) * inv_norm[:, None]
        weighted = tl.where(valid, prob * target * grad_likelihood[:, None], 0.0)
        alpha = tl.where(inside, (target - likelihood[:, None]) * prob, 0.0)
        alpha = alpha * grad_likelihood[:, None]
        slope_target = tl.where(
            signed > 0, rate[:, None], tl.where(signed < 0, -rate[:, None], 0.0)
        )
        bin_grads = tl.sum(alpha * slope + weighted * slope_target, axis=0)
        sigma_terms += tl.sum(weighted * (distance * rate[:, None] - 1.0), axis=1)
        grad_cos = tl.dot(alpha, tl.trans(phi_cos), acc=grad_cos, input_precision="tf32x3")
        grad_sin = tl.dot(alpha, tl.trans(phi_sin), acc=grad_sin, input_precision="tf32x3")
        unit = (-0.5 + bins.to(tl.float64) / (num_bins - 1)).to(tl.float32)
        bin_sum += bin_grads
        bin_unit_sum += bin_grads * unit
        anchor_cos, anchor_sin = _rotate(anchor_cos, anchor_sin, tile_cos, tile_sin)

    mask_q = mask_k[:, None] & (offs_f < num_freqs)[None, :]
    out = grad_query_ptr + row[:, None] * dim + offs_f[None, :]
    tl.store(out, grad_cos, mask=mask_q)
    tl.store(out + num_freqs, grad_sin, mask=mask_q)
    return sigma_terms, tl.sum(bin_sum, axis=0), tl.sum(bin_unit_sum, axis=0)


@triton.jit
def dcc_mle_loss_backward_kernel(
    grad_nll_ptr,  # (N, K) fp32, contiguous
    query_ptr,  # (N, K, D) of the axis
    boxes_ptr,  # (N, 4) xyxy
    priors_ptr,  # (N, 2)
    sigmas_ptr,  # (N, K)
    targets_ptr,  # (N, K, 2)
    areas_ptr,  # (N,)
    stats_ptr,  # (N, K, 2, 3) fp32, contiguous
    grad_query_ptr,  # (N, K, D) fp32, contiguous, of the axis
    grad_boxes_ptr,  # (N, 4) fp32, contiguous
    grad_sigmas_ptr,  # (N, K) fp32, contiguous
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
    stride_sn,
    stride_sk,
    stride_tn,
    stride_tk,
    stride_tc,
    stride_an,
    padding_hi,
    padding_lo,
    log_temperature_hi,
    log_temperature_lo,
    AXIS: tl.constexpr,  # noqa: N803
    BLOCK_K: tl.constexpr,  # noqa: N803
    BLOCK_F: tl.constexpr,  # noqa: N803
    BLOCK_B: tl.constexpr,  # noqa: N803
    LOG2_BLOCK_B: tl.constexpr,  # noqa: N803
    REANCHOR_BINS: tl.constexpr,  # noqa: N803
):
    """One axis per launch (x, then y). The box gradient sums over every keypoint: the program
    loops over the keypoint blocks. The sigma gradient sums both axes: the x launch leaves its
    terms in grad_sigmas, the y launch adds its own and scales."""
    n = tl.program_id(0).to(tl.int64)
    padding = tl.cast(padding_hi, tl.float64) + tl.cast(padding_lo, tl.float64)
    log_temperature = tl.cast(log_temperature_hi, tl.float64) + tl.cast(
        log_temperature_lo, tl.float64
    )
    bin_sum = 0.0  # sum over keypoints and bins of d/db_i, and of d/db_i u_i
    bin_unit_sum = 0.0
    for k0 in range(0, num_keypoints, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < num_keypoints
        row = n * num_keypoints + offs_k
        upstream = tl.load(grad_nll_ptr + row, mask=mask_k, other=0.0).to(tl.float64)
        likelihood_x = tl.load(stats_ptr + row * 6 + 2, mask=mask_k, other=0.0).to(tl.float64)
        likelihood_y = tl.load(stats_ptr + row * 6 + 5, mask=mask_k, other=0.0).to(tl.float64)
        other = likelihood_y if AXIS == 0 else likelihood_x
        grad_likelihood = -upstream * other / (likelihood_x * likelihood_y + _LIKELIHOOD_EPS)
        sigma_terms, tile_sum, tile_unit_sum = _backward_axis(
            query_ptr, grad_query_ptr, boxes_ptr, priors_ptr, targets_ptr, sigmas_ptr,
            areas_ptr, stats_ptr, grad_likelihood.to(tl.float32), n, offs_k, mask_k,
            num_keypoints, dim, num_bins, stride_qn, stride_qk, stride_qd, stride_bn, stride_bc,
            stride_pn, stride_pc, stride_tn, stride_tk, stride_tc, stride_sn, stride_sk,
            stride_an, padding, log_temperature, AXIS, BLOCK_K, BLOCK_F, BLOCK_B, LOG2_BLOCK_B,
            REANCHOR_BINS,
        )  # fmt: skip
        bin_sum += tile_sum
        bin_unit_sum += tile_unit_sum
        if AXIS == 0:
            tl.store(grad_sigmas_ptr + row, sigma_terms, mask=mask_k)
        else:
            sigma = tl.load(sigmas_ptr + n * stride_sn + offs_k * stride_sk, mask=mask_k, other=1.0)
            sigma = sigma.to(tl.float64)
            scale = tl.where(sigma >= _SIGMA_MIN, 1.0 / tl.maximum(sigma, _SIGMA_MIN), 0.0)
            terms = tl.load(grad_sigmas_ptr + row, mask=mask_k, other=0.0) + sigma_terms
            tl.store(
                grad_sigmas_ptr + row, (terms.to(tl.float64) * scale).to(tl.float32), mask=mask_k
            )
    # d/dlo = sum d/db (1/2 - padding u), d/dhi = sum d/db (1/2 + padding u).
    padding32 = padding.to(tl.float32)
    tl.store(grad_boxes_ptr + n * 4 + AXIS, 0.5 * bin_sum - padding32 * bin_unit_sum)
    tl.store(grad_boxes_ptr + n * 4 + AXIS + 2, 0.5 * bin_sum + padding32 * bin_unit_sum)


def _launch_args(
    query: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
    num_bins: int,
    padding: float,
    temperature: float,
) -> tuple:
    """The scalar arguments of one axis's launch, after its pointer arguments."""
    return (
        query.shape[1],
        query.shape[2],
        num_bins,
        *query.stride(),
        *boxes.stride(),
        *priors.stride(),
        *sigmas.stride(),
        *target_keypoints.stride(),
        *areas.stride(),
        *split_float64(padding),
        *split_float64(math.log(temperature)),
    )


@define_op("rtmo::dcc_mle_loss_forward_triton", mutates_args=())
def dcc_mle_loss_forward_triton(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
    num_bins_x: int,
    num_bins_y: int,
    padding: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rtmo::dcc_mle_loss_forward on the Triton kernel (inputs already validated, fp32/fp16/bf16).

    Returns nll (Tensor[N, K]), keypoints (Tensor[N, K, 2]) and stats (Tensor[N, K, 2, 3]), fp32.
    """
    n, k, d = query_x.shape
    nll = query_x.new_empty((n, k), dtype=torch.float32)
    keypoints = query_x.new_empty((n, k, 2), dtype=torch.float32)
    stats = query_x.new_empty((n, k, 2, 3), dtype=torch.float32)
    if n == 0 or k == 0:
        return nll, keypoints, stats
    cfg = triton_config(k, d, backward=False)
    rest = (boxes, priors, sigmas, target_keypoints, areas)
    for axis, (query, bins) in enumerate(((query_x, num_bins_x), (query_y, num_bins_y))):
        torch.library.wrap_triton(dcc_mle_loss_forward_kernel)[(n, triton.cdiv(k, cfg.block_k))](
            query,
            *rest,
            nll,
            keypoints,
            stats,
            *_launch_args(query, *rest, bins, padding, temperature),
            AXIS=axis,
            **cfg.constexprs(),
            num_warps=cfg.num_warps,
        )
    return nll, keypoints, stats


@define_op("rtmo::dcc_mle_loss_backward_triton", mutates_args=())
def dcc_mle_loss_backward_triton(
    grad_nll: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    sigmas: torch.Tensor,
    target_keypoints: torch.Tensor,
    areas: torch.Tensor,
    stats: torch.Tensor,
    num_bins_x: int,
    num_bins_y: int,
    padding: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """rtmo::dcc_mle_loss_backward on the Triton kernel: the gradients w.r.t. query_x, query_y,
    boxes and sigmas, each contiguous in its input's dtype."""
    n, k, d = query_x.shape
    grad_qx = query_x.new_zeros((n, k, d), dtype=torch.float32)
    grad_qy = query_x.new_zeros((n, k, d), dtype=torch.float32)
    grad_boxes = query_x.new_zeros((n, 4), dtype=torch.float32)
    grad_sigmas = query_x.new_zeros((n, k), dtype=torch.float32)
    if n > 0 and k > 0:
        cfg = triton_config(k, d, backward=True)
        rest = (boxes, priors, sigmas, target_keypoints, areas)
        grad_nll = grad_nll.float().contiguous()
        stats = stats.contiguous()
        for axis, (query, grad_query, bins) in enumerate(
            ((query_x, grad_qx, num_bins_x), (query_y, grad_qy, num_bins_y))
        ):
            torch.library.wrap_triton(dcc_mle_loss_backward_kernel)[(n,)](
                grad_nll,
                query,
                *rest,
                stats,
                grad_query,
                grad_boxes,
                grad_sigmas,
                *_launch_args(query, *rest, bins, padding, temperature),
                AXIS=axis,
                **cfg.constexprs(),
                num_warps=cfg.num_warps,
            )
    return (
        grad_qx.to(query_x.dtype),
        grad_qy.to(query_y.dtype),
        grad_boxes.to(boxes.dtype),
        grad_sigmas.to(sigmas.dtype),
    )


if triton_interpreted():
    dcc_mle_loss_forward_triton.register_fake(fake_forward)
    dcc_mle_loss_backward_triton.register_fake(fake_backward)
register_autograd("rtmo::dcc_mle_loss_forward_triton", dcc_mle_loss_backward_triton)
